-- The event log: the source of truth and the outbox (docs/architecture.md#the-data-flow).
--
-- Positions are assigned 1, 2, 3… by appends serialized under one advisory
-- lock, so they have no gaps and a transaction commits before the next one
-- can take a position: a reader in position order never skips a late commit.

CREATE TABLE events (
    position        bigint      PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    org_id          text        NOT NULL,
    key_id          text        NOT NULL,
    stream_version  integer     NOT NULL,
    occurred_at     timestamptz NOT NULL,
    -- json, not jsonb: the text is kept exactly as hashed.
    actor           json        NOT NULL,
    data            json        NOT NULL,
    hash            char(64)    NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_stream_version_unique UNIQUE (key_id, stream_version),
    CONSTRAINT events_position_positive CHECK (position > 0),
    CONSTRAINT events_stream_version_positive CHECK (stream_version > 0)
);

CREATE INDEX events_org_position ON events (org_id, position);
CREATE INDEX events_type_position ON events (event_type, position);
CREATE INDEX events_actor_position ON events (((actor ->> 'id')), position);
CREATE INDEX events_occurred_at ON events (occurred_at);

-- Append-only, enforced by the database itself.
CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
