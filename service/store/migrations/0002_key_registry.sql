-- The write side's index of keys, kept in the same transaction as each append.
--
-- It answers the two questions a command cannot answer from one key's stream:
-- how many keys of an org and environment are active (the active-key limit),
-- and which key a presented service-key secret belongs to (caller auth).

CREATE TABLE key_registry (
    key_id                text        PRIMARY KEY,
    org_id                text        NOT NULL,
    environment           text        NOT NULL,
    status                text        NOT NULL,
    expires_at            timestamptz,
    secret_hash           char(64)    UNIQUE,
    previous_secret_hash  char(64),
    previous_valid_until  timestamptz,
    version               integer     NOT NULL,
    position              bigint      NOT NULL
);

CREATE INDEX key_registry_active ON key_registry (org_id, environment) WHERE status = 'active';
CREATE INDEX key_registry_previous_secret ON key_registry (previous_secret_hash)
    WHERE previous_secret_hash IS NOT NULL;
