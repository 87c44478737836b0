-- Keys a consumer of the log has set aside (docs/security.md §5).
--
-- A projection, the outbox relay or a replica's verification index that meets
-- an event it cannot apply (it does not decode, the database refuses its row,
-- NATS refuses its subject…) records the key here and goes on with every other
-- key; later events of that key are skipped by that consumer. The row
-- survives restarts, so a restarted consumer neither halts on the same event
-- nor applies later events on top of a state it never had. A projection
-- rebuild starts over with an empty set for that projection.
--
-- `consumer` is e.g. `key_views`, `outbox_relay:KEYLEDGER`,
-- `verification_index`. `position` and `event_type` are those of the first
-- event that could not be applied; `reason` never holds event data.
-- Uniqueness is on md5(key_id): a key id is whatever the log holds, and a
-- btree entry of its full text could outgrow a page.

CREATE TABLE quarantined_keys (
    consumer        text        NOT NULL,
    key_id          text        NOT NULL,
    org_id          text        NOT NULL,
    position        bigint      NOT NULL,
    event_type      text        NOT NULL,
    reason          text        NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX quarantined_keys_consumer_key ON quarantined_keys (consumer, md5(key_id));
CREATE INDEX quarantined_keys_key ON quarantined_keys USING hash (key_id);
