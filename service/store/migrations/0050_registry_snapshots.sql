-- Snapshots of the key registry for cold start (docs/architecture.md#start-and-stop).
--
-- A snapshot is every key's folded state (and the keys set aside) as of one log
-- position, written now and then by one replica. A starting replica loads the
-- newest snapshot that checks out and folds only the log after it, instead of
-- the whole log; a `key_views` rebuild starts from one too.
--
-- Nothing here is a source of truth: the log is. A snapshot is used only when
-- `log_hash` is the log's hash at `position` (it was made from this very log),
-- its `format` is the reader's (same state fields, same fold), it was made with
-- this pepper, its `seal` (an HMAC keyed from the pepper over the header and
-- every chunk's digest) holds, and every chunk matches its digest. Anything
-- else is ignored with a warning and the log is folded instead. Unlike the
-- events table, rows here are deleted (old snapshots are pruned).

CREATE TABLE registry_snapshots (
    id                  bigserial   PRIMARY KEY,
    position            bigint      NOT NULL CHECK (position > 0),
    log_hash            char(64)    NOT NULL,
    format              text        NOT NULL,
    pepper_fingerprint  char(64)    NOT NULL,
    keys                integer     NOT NULL,
    -- [[key_id, org_id, position, event_type, reason], …]: the keys set aside.
    quarantined         text        NOT NULL,
    chunk_digests       text[]      NOT NULL,
    seal                char(64)    NOT NULL,
    written_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX registry_snapshots_position ON registry_snapshots (position DESC, id DESC);

-- The keys, a few thousand per chunk, as JSON arrays of state fields.
CREATE TABLE registry_snapshot_chunks (
    snapshot_id  bigint   NOT NULL REFERENCES registry_snapshots (id) ON DELETE CASCADE,
    chunk        integer  NOT NULL,
    body         bytea    NOT NULL,
    PRIMARY KEY (snapshot_id, chunk)
);

-- Stored as written: JSON is compressed poorly by pglz, and slowly; reading
-- it back fast is the point.
ALTER TABLE registry_snapshot_chunks ALTER COLUMN body SET STORAGE EXTERNAL;
