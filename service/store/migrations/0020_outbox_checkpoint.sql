-- The outbox relay's progress: the last position JetStream has acknowledged,
-- per stream. Advanced only after a PubAck, never moved back (what that
-- guarantees: docs/events.md#ordering-and-delivery-guarantees).

CREATE TABLE outbox_checkpoint (
    stream      text        PRIMARY KEY,
    position    bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
