-- When each key was last verified successfully, to the minute.
--
-- Written by verification in batches off the hot path (service/key_usage.py),
-- never derived from events: a use is not a change to the key. The key_views
-- projection also receives the value; this table is the durable record that
-- survives a rebuild of the views.

CREATE TABLE key_usage (
    key_id        text        PRIMARY KEY,
    last_used_at  timestamptz NOT NULL
);
