-- Credit balances: what is left of each key's credits, spent without an event per request
-- (docs/api.md#credits).
--
-- A row is written in the same transaction as the event that sets the balance
-- (KeyGenerated with credits, KeyCreditsChanged, KeyCreditsRefilled), tagged with that
-- event's stream version (`epoch`): a newer setting replaces the balance, an older one
-- never does. Replicas take blocks of credits from `remaining` with one atomic UPDATE
-- and spend them in memory; `remaining` never goes below 0, so never more requests are
-- accepted than there were credits. `next_refill_at` is when the sweeper refills it.

CREATE TABLE key_credits (
    key_id          text        PRIMARY KEY,
    org_id          text        NOT NULL,
    remaining       bigint      NOT NULL CHECK (remaining >= 0),
    epoch           integer     NOT NULL,
    next_refill_at  timestamptz
);

CREATE INDEX key_credits_next_refill_at_idx ON key_credits (next_refill_at)
    WHERE next_refill_at IS NOT NULL;
