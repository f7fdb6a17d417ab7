-- Issue 13: delivery throughput. An attempt used to be written twice: inserted when its delivery was leased
-- (so that one cut short by a crash stayed visible) and updated with its outcome, each in a transaction of
-- its own. Now the lease records only when it was taken (leased_at, on the delivery row, which the lease
-- updates anyway), and the attempt row is written once, with its outcome, by the statement that records a
-- batch of finished attempts. An attempt still in flight, or one whose replica died before recording it,
-- is shown from the delivery row (attempt_count, leased_at) until the next lease writes it down as
-- abandoned.
ALTER TABLE webhook_deliveries ADD COLUMN leased_at timestamptz;

-- The lease walks the due deliveries in the order it takes them, (next_attempt_at, delivery_id), and
-- stops at its limit: with next_attempt_at alone, every due row had to be read and sorted first.
DROP INDEX webhook_deliveries_due_idx;
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at, delivery_id) WHERE status = 'pending';
