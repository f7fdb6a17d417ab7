-- Issue 13: the statement that records a walk was the database's largest cost per delivery. Measured on a
-- batch of 64 walked successes (pgbench, one statement per batch, over what building the rows costs):
-- about 30 µs a delivery, of which the attempt row (with its own foreign-key check) was about 10 µs and the
-- delivery row's foreign-key check on its subscription about 9 µs, each one row-level trigger running a
-- query. Both are gone from that path:
--
-- - A walked delivery that succeeded at its first attempt writes no attempt row. Its row says it all: the
--   attempt started at created_at, finished at completed_at, and was answered last_status_code. Readers show
--   that attempt from the row (a succeeded delivery with attempt_count 1 and no attempt row); a retry or a
--   replay writes it down before it starts the delivery over.
-- - The foreign key of a delivery on its subscription is dropped. Deleting a subscription deletes its
--   deliveries in the same transaction, after the subscription row; every statement that adds deliveries
--   takes FOR KEY SHARE on their subscription rows first, once per statement instead of once per row, so
--   that a deletion waits for it and then sees its rows, or it sees the deletion and adds none.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_subscription_id_fkey;

-- A walk leases at most as many cursors as the worker's bound on walked deliveries held allows (before, it
-- took every subscription behind at once, twice WEBHOOK_CONCURRENCY events each, so memory grew with the
-- number of subscriptions), those walked least recently first, so each subscription behind gets its turn.
ALTER TABLE webhook_cursors ADD COLUMN last_walked_at timestamptz;

-- One unique index serves both the pair's uniqueness and the lookups by event alone (retention, and the
-- walk's check for a delivery a replay queued): (event_id, subscription_id) replaces (subscription_id,
-- event_id) and the index on event_id, one index entry fewer per delivery. ON CONFLICT (subscription_id,
-- event_id) infers it as before: the order of the columns does not matter there.
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_subscription_key UNIQUE (event_id, subscription_id);
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_subscription_id_event_id_key;
DROP INDEX webhook_deliveries_event_idx;
