-- Registering and removing a webhook endpoint are events in the log
-- (WebhookRegistered, WebhookRemoved; docs/events.md), appended like every
-- command's, under the append lock and in the hash chain.
--
-- What the log must never hold, the sealed signing secret, moves to a table of
-- its own, written in the same transaction as the endpoint's WebhookRegistered.
-- webhook_endpoints becomes the endpoints' projection of those events, also
-- written in that transaction (service.webhooks.endpoints): a registered
-- endpoint is listed, and served by the dispatcher, as soon as the POST answers.

CREATE TABLE webhook_secrets (
    webhook_id     text  PRIMARY KEY REFERENCES webhook_endpoints (webhook_id),
    sealed_secret  bytea NOT NULL
);

INSERT INTO webhook_secrets (webhook_id, sealed_secret)
SELECT webhook_id, sealed_secret FROM webhook_endpoints;

ALTER TABLE webhook_endpoints DROP COLUMN sealed_secret;

-- The log position of the endpoint's WebhookRegistered: only the org's events after
-- it are delivered. NULL for an endpoint registered before endpoints had events: its
-- stream starts with its removal, and its deliveries at created_at, as before.
ALTER TABLE webhook_endpoints ADD COLUMN position bigint;
