-- The key_views projection: every key as callers see it (docs/api.md#keys).
--
-- One row per key, folded from its events by the same `evolve` as the write
-- side. `status` is the recorded status; a key past `expires_at` is shown as
-- expired at read time, before `KeyExpired` is written. `last_used_at` is not
-- derived from events: verification records it in batches, and a rebuild
-- carries it over. No secret and no secret hash is stored here.
--
-- Index names follow PostgreSQL's automatic naming so that a rebuild, which
-- creates `key_views_rebuild (LIKE key_views INCLUDING ALL)` and renames it,
-- ends with the same names.

CREATE TABLE key_views (
    key_id                text        PRIMARY KEY,
    org_id                text        NOT NULL,
    name                  text        NOT NULL,
    type                  text        NOT NULL,
    environment           text        NOT NULL,
    status                text        NOT NULL,
    scopes                text[]      NOT NULL,
    allowed_origins       text[]      NOT NULL,
    resource              text,
    algorithm             text,
    public_key            text,
    hint                  text,
    -- json, not jsonb: metadata is returned with its keys in the order given.
    metadata              json        NOT NULL,
    rate_limit            json,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    expires_at            timestamptz,
    disabled_at           timestamptz,
    revoked_at            timestamptz,
    previous_valid_until  timestamptz,
    last_used_at          timestamptz,
    version               integer     NOT NULL,
    position              bigint      NOT NULL
);

-- Listing: an org's keys newest first (key ids are ULIDs, so id order is time order).
CREATE INDEX key_views_org_id_key_id_idx ON key_views (org_id, key_id);
