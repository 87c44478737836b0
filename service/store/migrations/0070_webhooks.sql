-- Webhook endpoints and their delivery attempts (docs/api.md#webhooks).
--
-- An endpoint keeps who registered and who removed it (the actor, as events
-- carry it), and its signing secret sealed with a key derived from the pepper:
-- the service must sign with it, so it cannot be a one-way hash
-- (docs/security.md, "Webhook signing secrets").

CREATE TABLE webhook_endpoints (
    webhook_id     text        PRIMARY KEY,
    org_id         text        NOT NULL,
    url            text        NOT NULL,
    -- Empty: every event type.
    event_types    text[]      NOT NULL DEFAULT '{}',
    sealed_secret  bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    created_by     jsonb       NOT NULL,
    removed_at     timestamptz,
    removed_by     jsonb
);

CREATE INDEX webhook_endpoints_by_org ON webhook_endpoints (org_id, created_at DESC);

-- One row per attempt: what the receiver answered, or why nothing was sent.
CREATE TABLE webhook_deliveries (
    attempt_id    bigserial   PRIMARY KEY,
    webhook_id    text        NOT NULL REFERENCES webhook_endpoints (webhook_id),
    event_id      uuid        NOT NULL,
    event_type    text        NOT NULL,
    key_id        text        NOT NULL,
    position      bigint      NOT NULL,
    attempt       integer     NOT NULL CHECK (attempt >= 1),
    attempted_at  timestamptz NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('delivered', 'failed', 'dead_lettered')),
    status_code   integer,
    error         text
);

CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (webhook_id, event_id);
