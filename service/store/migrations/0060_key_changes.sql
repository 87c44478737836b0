-- Changes after issue: the key_views projection keeps a key's usage limits,
-- IP allowlist and identity (docs/api.md#patch-v1orgsorgkeysid).
--
-- `rate_limits` is the list of named limits; rows written before it existed
-- keep `[]` and are read with their single `rate_limit` as the limit named
-- `default`. `credits` is the balance as last set by a command or a refill
-- (spending is counted in key_credits, not here).

ALTER TABLE key_views
    ADD COLUMN rate_limits   json   NOT NULL DEFAULT '[]',
    ADD COLUMN credits       json,
    ADD COLUMN allowed_cidrs text[] NOT NULL DEFAULT '{}',
    ADD COLUMN identity_id   text;

-- Listing one identity's keys (`?identity=`), newest first.
CREATE INDEX key_views_org_id_identity_id_key_id_idx ON key_views (org_id, identity_id, key_id);
