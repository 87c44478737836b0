-- Registry snapshot chunks of format 2 (docs/architecture.md, "Registry snapshots").
--
-- 0050 stored each chunk as a JSON array of state rows. From format 2 on, a
-- chunk body is one MessagePack array laid out by column
-- (service/store/snapshot_chunks.py): about a third of the bytes, decoded by
-- msgspec straight into index entries. The tables do not change: a snapshot
-- of format 1 has another `format` and is refused by a replica of format 2,
-- which folds the log instead; the writer then makes a format-2 snapshot and
-- the old ones are pruned as usual. Storage stays EXTERNAL: the bodies are
-- mostly ids and raw hashes, which pglz does not shrink.

COMMENT ON COLUMN registry_snapshot_chunks.body IS
    'format 2: a MessagePack array of columns (service/store/snapshot_chunks.py)';
COMMENT ON COLUMN registry_snapshots.format IS
    'v<version>-<fingerprint of the state fields, the fold and the chunk encoding>';
