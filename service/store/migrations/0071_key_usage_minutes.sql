-- Verifications per key, minute and verdict code (docs/api.md#usage): analytics kept
-- outside the event log, flushed in batches by each replica (counts add up), and pruned
-- after KEYLEDGER_USAGE_RETENTION_DAYS.

CREATE TABLE key_usage_minutes (
    key_id  text        NOT NULL,
    minute  timestamptz NOT NULL,
    code    text        NOT NULL,
    count   bigint      NOT NULL CHECK (count > 0),
    PRIMARY KEY (key_id, minute, code)
);

CREATE INDEX key_usage_minutes_by_minute ON key_usage_minutes (minute);
