-- Bulk revocation (docs/api.md#bulk-revocation) selects an org's keys not revoked yet,
-- in key id order, under the log's append lock: this index finds them without reading
-- the org's revoked keys or any other org's rows.

CREATE INDEX key_registry_org_unrevoked ON key_registry (org_id, key_id)
    WHERE status <> 'revoked';
