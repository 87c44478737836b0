-- Responses remembered for Idempotency-Key retries (docs/api.md#idempotency-key), per caller.
-- A replayed response never contains a secret: none is stored here.

CREATE TABLE idempotency_keys (
    caller_key_id   text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    char(64)    NOT NULL,
    status          integer     NOT NULL,
    response        jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller_key_id, idempotency_key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
