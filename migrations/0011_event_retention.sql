-- Issue 13: the outbox (ci_job_state_events), deliveries and attempts follow CALLBACK_RETENTION instead of
-- growing forever. Plain index builds, in the migration's transaction: these tables ship in the same release
-- (0008), so they are empty or nearly so when this runs, and a concurrent build would wait for every older
-- transaction in the database (as 0009 explains).

-- The feed's retention horizon: the highest feed position retention has deleted. A cursor below it has
-- missed events and is answered 410 CursorExpired; the feed itself starts above it. One row.
CREATE TABLE IF NOT EXISTS ci_event_feed_horizon (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint  NOT NULL DEFAULT 0
);
INSERT INTO ci_event_feed_horizon (singleton, pruned_through) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- Retention walks events by age, oldest first.
CREATE INDEX IF NOT EXISTS ci_job_state_events_created_idx ON ci_job_state_events (created_at);
-- An event is kept while any delivery refers to it; retention asks that per event.
CREATE INDEX IF NOT EXISTS webhook_deliveries_event_idx ON webhook_deliveries (event_id);
-- Retention walks finished deliveries by when they finished.
CREATE INDEX IF NOT EXISTS webhook_deliveries_completed_idx ON webhook_deliveries (completed_at) WHERE status <> 'pending';
