-- Issue 13: a delivery cost three row versions (queued by the sequencer, leased, completed) and about 17
-- index entries before anything went wrong, which made the database the ceiling of the delivery rate.
--
-- Now each subscription has a cursor over the event feed. The delivery worker leases the cursor, reads the
-- next matching events above it (a walk), sends them, and writes one row per delivery, already finished,
-- while it moves the cursor on: one row version per delivery on the happy path. Only deliveries that
-- failed, wait for an older delivery of their job, or are retried or replayed stay `pending` rows, leased
-- one by one as before.
--
-- The cursor row holds the walk in flight (its events and the delivery ids given to them), so the history
-- shows those attempts while they are sent, and a replica that finds a walk whose lease ran out records its
-- attempts as cut short and queues them again, as a lapsed delivery lease does.
CREATE TABLE webhook_cursors (
    subscription_id text        PRIMARY KEY REFERENCES webhook_subscriptions (subscription_id) ON DELETE CASCADE,
    -- Every feed position at or below it has its delivery row, or did not match the subscription.
    position        bigint      NOT NULL,
    -- The walk in flight, leased by one replica until leased_until: events above position, through
    -- walked_through, and the delivery ids the walk gave them (same order).
    leased_until    timestamptz,
    leased_at       timestamptz,
    walk_token      bigint,
    walk_events     bigint[],
    walk_deliveries bigint[],
    walked_through  bigint
) WITH (fillfactor = 50);
-- Room on the page for each walk's new row version: every update is HOT (no indexed column changes).

-- Existing subscriptions start at the newest positioned event: the sequencer queued a pending delivery row
-- for every event up to it, which the worker still leases.
INSERT INTO webhook_cursors (subscription_id, position)
SELECT subscription_id, greatest(coalesce((SELECT max(feed_position) FROM ci_event_feed), 0),
                                 (SELECT pruned_through FROM ci_event_feed_horizon))
FROM webhook_subscriptions;
