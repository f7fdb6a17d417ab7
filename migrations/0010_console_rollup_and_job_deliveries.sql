-- The console's overview charts callbacks per minute by outcome over the last hour and day. Counting a
-- day of ci_callbacks on every page load cost 1.8 s at 100k jobs, so the counts are rolled up per minute
-- (CallbackRateRollup, a background worker, every CONSOLE_ROLLUP_INTERVAL) and the page reads the rollup
-- plus the few callbacks received since the rollup's watermark. Ingest does no extra work: the rollup
-- reads the received_at range through the BRIN index (0009) after the fact.
CREATE TABLE ci_callback_minutes (
    minute    timestamptz NOT NULL,  -- start of the UTC minute
    outcome   text        NOT NULL,
    callbacks integer     NOT NULL,
    PRIMARY KEY (minute, outcome)
);

-- One row: ci_callback_minutes is complete for minutes before counted_before. It starts a day back, so
-- the first rollup run fills the day chart; older minutes are never shown.
CREATE TABLE ci_callback_rollup (
    id             boolean     PRIMARY KEY DEFAULT true CHECK (id),
    counted_before timestamptz NOT NULL
);
INSERT INTO ci_callback_rollup (counted_before) VALUES (date_trunc('minute', now()) - interval '1 day');

-- A job's console page lists its webhook deliveries (every subscription's), newest first. One index entry
-- per delivery, on the webhook path, not on callback ingest.
CREATE INDEX webhook_deliveries_job_idx ON webhook_deliveries (job_id, delivery_id DESC);
