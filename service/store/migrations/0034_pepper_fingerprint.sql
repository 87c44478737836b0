-- The fingerprint of the pepper this database's secret hashes were made with
-- (docs/security.md §7): HMAC-SHA256(pepper, a fixed label), never the pepper itself.
-- Recorded on the first start; every later start with another pepper is
-- refused, because with the wrong pepper every key would fail to verify while
-- the service looked healthy.

CREATE TABLE pepper_fingerprint (
    singleton    boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    fingerprint  char(64)    NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
