-- One checkpoint per projection: the position of the last event it applied.
--
-- The projection runner updates a projection's row in the same transaction as
-- the projection's own changes, so an event is applied exactly once, and it
-- locks the row (FOR UPDATE) while it applies, so replicas and a rebuild's
-- final swap take turns instead of applying the same events twice.

CREATE TABLE projection_checkpoints (
    name        text        PRIMARY KEY,
    position    bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
