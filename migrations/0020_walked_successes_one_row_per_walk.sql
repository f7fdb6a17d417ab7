-- Issue 13: a walked delivery that succeeded at its first attempt was still one row of webhook_deliveries,
-- with five index entries (primary key, event and subscription, history, job, completed_at) on a page left
-- half empty for lease updates it never has. Recording a walk was the database's largest cost per delivery.
--
-- Now a walk's successes to one subscription are one row here, the attempts side by side in arrays (same
-- order, one element per delivery), with four index entries for the whole walk. Every other outcome of a
-- walk (a failure, a delivery waiting behind an older one of its job) is still a webhook_deliveries row, as
-- are retried and replayed deliveries.
--
-- - The delivery ids are the ones the walk gave (walk_deliveries of the cursor); one subscription is walked
--   by one replica at a time, so its walks' id ranges [first_delivery_id, last_delivery_id] and feed ranges
--   (after_position, through_position] do not overlap and grow walk by walk.
-- - A retry or a replay of one of these deliveries moves it out first: its element leaves the arrays and it
--   becomes a succeeded webhook_deliveries row with the same id, its attempt the row's implicit one (0019).
--   So a delivery is in exactly one place, and an empty walk row is deleted.
-- - Readers: the history (by subscription and delivery id), the job page (job_ids, GIN), replay (by
--   subscription and feed position), retention (recorded_at; an event is kept while a walk row covers its
--   position), and deleting a subscription.
CREATE TABLE webhook_walk_successes (
    subscription_id   text          NOT NULL,
    first_delivery_id bigint        NOT NULL,
    last_delivery_id  bigint        NOT NULL,
    -- The cursor's position before the walk, and the one it moved to.
    after_position    bigint        NOT NULL,
    through_position  bigint        NOT NULL,
    delivery_ids      bigint[]      NOT NULL,
    event_ids         bigint[]      NOT NULL,
    job_ids           text[]        NOT NULL,
    status_codes      integer[]     NOT NULL,
    started_at        timestamptz[] NOT NULL,
    finished_at       timestamptz[] NOT NULL,
    recorded_at       timestamptz   NOT NULL,
    PRIMARY KEY (subscription_id, last_delivery_id)
);
CREATE INDEX webhook_walk_successes_position_idx ON webhook_walk_successes (subscription_id, through_position);
CREATE INDEX webhook_walk_successes_job_idx ON webhook_walk_successes USING gin (job_ids);
-- Retention deletes the oldest first; rows are written in time order, so a BRIN range is enough.
CREATE INDEX webhook_walk_successes_recorded_brin ON webhook_walk_successes USING brin (recorded_at);
