-- Issue 13: a circuit breaker per subscription, shared by every replica. Closed, the lease takes the
-- subscription's deliveries as they come due; open (after WEBHOOK_BREAKER_AFTER consecutive failed
-- attempts), it takes none until breaker_next_probe_at, then one probe (half_open while it is in flight).
-- breaker_openings counts the openings since the breaker last closed: the cool-down doubles with each.
ALTER TABLE webhook_subscriptions
    ADD COLUMN breaker_state text NOT NULL DEFAULT 'closed' CHECK (breaker_state IN ('closed', 'open', 'half_open')),
    ADD COLUMN breaker_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN breaker_openings integer NOT NULL DEFAULT 0,
    ADD COLUMN breaker_since timestamptz,
    ADD COLUMN breaker_next_probe_at timestamptz;

-- The lease reads each admitted subscription's due deliveries in lease order, so that the backlog of a
-- subscription whose breaker is open (hundreds of thousands of rows, all due) is never walked past: with
-- one index over every subscription, each lease stepped over all of them to reach the others'.
DROP INDEX webhook_deliveries_due_idx;
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (subscription_id, next_attempt_at, delivery_id) WHERE status = 'pending';
