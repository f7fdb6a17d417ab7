-- Retention by partition (issue 11 §2). Raw bodies (ci_callbacks) and the job history (ci_job_events) become
-- range-partitioned by receive time, so retention drops whole partitions instead of DELETEing rows (which
-- bloats the table and returns no disk). The service creates partitions ahead of time and drops expired
-- ones (RetentionPlan, RetentionRunner); there is no DEFAULT partition, which would block
-- DETACH PARTITION … CONCURRENTLY.
--
-- Deduplication. A unique constraint on a partitioned table must include the partition key, so
-- UNIQUE (body_sha256) cannot stay on ci_callbacks: the same body received on two days would be two rows.
-- The digest moves to ci_callback_digests, an unpartitioned table keyed by the body's SHA-256 that also
-- owns the callback id and the delivery counter. Ingest inserts the digest first (ON CONFLICT counts a
-- delivery, race-free as before) and writes the body only for a fresh digest. A digest row lives exactly
-- as long as its body: retention deletes the digests of a dropped partition's range right after the drop.
--
-- The history and the job view no longer reference ci_callbacks by foreign key: a reference to a
-- partitioned table needs the partition key, and bodies expire (CALLBACK_RETENTION) before the jobs and
-- their history (JOB_RETENTION); a lookup whose body is gone says BodyPruned.
--
-- Upgrade without a rewrite: the existing tables are renamed *_legacy and attached as the first partition
-- (MINVALUE up to the migration's instant), after a CHECK constraint that proves the range; rows are not
-- copied. What costs time on a large table: copying the digests, building
-- the new primary keys of the two legacy partitions, and the range checks (scans). Retention drops a legacy
-- partition as a whole once its newest possible row has expired.

CREATE SEQUENCE ci_callback_id_seq AS bigint;
SELECT setval('ci_callback_id_seq', (SELECT coalesce(max(callback_id), 0) + 1 FROM ci_callbacks), false);

CREATE TABLE ci_callback_digests (
    body_sha256      bytea       PRIMARY KEY,
    callback_id      bigint      NOT NULL DEFAULT nextval('ci_callback_id_seq'),
    received_at      timestamptz NOT NULL,  -- the body row's receive time: its partition
    last_received_at timestamptz NOT NULL,
    delivery_count   integer     NOT NULL DEFAULT 1
);
ALTER SEQUENCE ci_callback_id_seq OWNED BY ci_callback_digests.callback_id;
INSERT INTO ci_callback_digests (body_sha256, callback_id, received_at, last_received_at, delivery_count)
SELECT body_sha256, callback_id, received_at, last_received_at, delivery_count FROM ci_callbacks;
-- Retention deletes the digests of a dropped range through this index.
CREATE INDEX ci_callback_digests_received_idx ON ci_callback_digests (received_at);

ALTER TABLE ci_jobs DROP CONSTRAINT ci_jobs_state_callback_id_fkey;
ALTER TABLE ci_job_events DROP CONSTRAINT ci_job_events_callback_id_fkey;

-- Raw bodies.
ALTER TABLE ci_callbacks RENAME TO ci_callbacks_legacy;
ALTER TABLE ci_callbacks_legacy ALTER COLUMN callback_id DROP IDENTITY IF EXISTS;
ALTER TABLE ci_callbacks_legacy
    DROP CONSTRAINT ci_callbacks_pkey,
    DROP CONSTRAINT ci_callbacks_body_sha256_key,
    DROP COLUMN delivery_count,
    DROP COLUMN last_received_at;
ALTER INDEX ci_callbacks_not_accepted_idx RENAME TO ci_callbacks_legacy_not_accepted_idx;
CREATE TABLE ci_callbacks (LIKE ci_callbacks_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (received_at);
ALTER TABLE ci_callbacks ALTER COLUMN callback_id SET DEFAULT nextval('ci_callback_id_seq');
ALTER TABLE ci_callbacks ADD CONSTRAINT ci_callbacks_pkey PRIMARY KEY (callback_id, received_at);
CREATE INDEX ci_callbacks_not_accepted_idx ON ci_callbacks (outcome, callback_id DESC) WHERE outcome <> 'accepted';

-- History.
ALTER TABLE ci_job_events RENAME TO ci_job_events_legacy;
ALTER TABLE ci_job_events_legacy DROP CONSTRAINT ci_job_events_pkey;
ALTER INDEX ci_job_events_callback_idx RENAME TO ci_job_events_legacy_callback_idx;
ALTER INDEX ci_job_events_pending_idx RENAME TO ci_job_events_legacy_pending_idx;
CREATE TABLE ci_job_events (LIKE ci_job_events_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (received_at);
ALTER TABLE ci_job_events ADD CONSTRAINT ci_job_events_pkey PRIMARY KEY (job_id, callback_id, received_at);
CREATE INDEX ci_job_events_callback_idx ON ci_job_events (callback_id);
CREATE INDEX ci_job_events_pending_idx ON ci_job_events (received_at) WHERE verification = 'pending';

-- Attach the legacy tables as partitions (the CHECK makes ATTACH skip its own scan) reaching up to this
-- instant, and create the partitions after them up to the end of today and this month, and a week of days
-- ahead, so the service takes callbacks before its first retention run. Bodies are partitioned by UTC day
-- and the history by UTC month, each partition named for its first day or month.
DO $$
DECLARE
    -- UTC calendar arithmetic on timestamps without a zone: the session's TimeZone plays no part.
    cutover     timestamp := now() AT TIME ZONE 'UTC';
    day_start   timestamp := date_trunc('day', now() AT TIME ZONE 'UTC');
    month_start timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
    lower       timestamp;
BEGIN
    EXECUTE format('ALTER TABLE ci_callbacks_legacy ADD CONSTRAINT ci_callbacks_legacy_range CHECK (received_at < %L)', cutover AT TIME ZONE 'UTC');
    EXECUTE format('ALTER TABLE ci_callbacks ATTACH PARTITION ci_callbacks_legacy FOR VALUES FROM (MINVALUE) TO (%L)', cutover AT TIME ZONE 'UTC');
    EXECUTE format('ALTER TABLE ci_job_events_legacy ADD CONSTRAINT ci_job_events_legacy_range CHECK (received_at < %L)', cutover AT TIME ZONE 'UTC');
    EXECUTE format('ALTER TABLE ci_job_events ATTACH PARTITION ci_job_events_legacy FOR VALUES FROM (MINVALUE) TO (%L)', cutover AT TIME ZONE 'UTC');
    FOR i IN 0..7 LOOP
        lower := greatest(cutover, day_start + i * interval '1 day');
        EXECUTE format('CREATE TABLE %I PARTITION OF ci_callbacks FOR VALUES FROM (%L) TO (%L)', 'ci_callbacks_p' || to_char(lower, 'YYYYMMDD'),
                       lower AT TIME ZONE 'UTC', (day_start + (i + 1) * interval '1 day') AT TIME ZONE 'UTC');
    END LOOP;
    FOR i IN 0..1 LOOP
        lower := greatest(cutover, month_start + i * interval '1 month');
        EXECUTE format('CREATE TABLE %I PARTITION OF ci_job_events FOR VALUES FROM (%L) TO (%L)', 'ci_job_events_p' || to_char(lower, 'YYYYMM'),
                       lower AT TIME ZONE 'UTC', (month_start + (i + 1) * interval '1 month') AT TIME ZONE 'UTC');
    END LOOP;
END
$$;
