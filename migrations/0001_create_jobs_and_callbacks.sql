-- Every callback body CI sent us, verbatim, one row per distinct body (SHA-256).
-- Re-deliveries of the same bytes bump delivery_count instead of adding a row.
CREATE TABLE ci_callbacks (
    callback_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body_sha256      bytea       NOT NULL,
    body             bytea       NOT NULL,
    body_size        integer     NOT NULL,           -- size as received; body may be capped for rejected callbacks
    body_truncated   boolean     NOT NULL DEFAULT false,
    format           text,                           -- 'XML' | 'JSON' | NULL when neither
    content_type     text,
    remote_address   text,
    event_name       text,
    outcome          text        NOT NULL CHECK (outcome IN ('accepted', 'no_jobs', 'rejected')),
    rejection_reason text,
    source           text        NOT NULL DEFAULT 'callback' CHECK (source IN ('callback', 'submit', 'reconcile')),
    job_count        integer     NOT NULL,
    received_at      timestamptz NOT NULL,
    last_received_at timestamptz NOT NULL,
    delivery_count   integer     NOT NULL DEFAULT 1,
    CONSTRAINT ci_callbacks_body_sha256_key UNIQUE (body_sha256)
);
CREATE INDEX ci_callbacks_outcome_idx ON ci_callbacks (outcome, callback_id DESC);

-- The current, normalised view of each job. State follows precedence rules: a final state
-- (Success, Failed, Cancel) is never replaced by a non-final one that arrives later.
CREATE TABLE ci_jobs (
    job_id             text        PRIMARY KEY,
    state              text        NOT NULL,
    state_rank         smallint    NOT NULL,
    is_final           boolean     NOT NULL,
    code               text,
    message            text,
    tag                text,
    sub_tag            text,
    queue_id           text,
    queue_type         text,
    progress           integer,
    creation_time      timestamptz,
    start_time         timestamptz,
    end_time           timestamptz,
    input_bucket       text,
    input_object       text,
    input_region       text,
    user_data          text,
    job_level          integer,
    has_watermark      boolean     NOT NULL,
    watermark_type     text,
    watermark_version  text,
    watermark_message  text,
    workflow_id        text,
    workflow_run_id    text,
    detail             jsonb       NOT NULL,
    state_callback_id  bigint      NOT NULL REFERENCES ci_callbacks (callback_id),
    state_source       text        NOT NULL,
    first_received_at  timestamptz NOT NULL,
    last_received_at   timestamptz NOT NULL,
    state_changed_at   timestamptz NOT NULL,
    callback_count     integer     NOT NULL DEFAULT 1
);
-- Listing is newest first by first receipt (immutable, so keyset pages are stable); one index per filter.
CREATE INDEX ci_jobs_received_idx ON ci_jobs (first_received_at DESC, job_id DESC);
CREATE INDEX ci_jobs_state_idx    ON ci_jobs (state, first_received_at DESC, job_id DESC);
CREATE INDEX ci_jobs_tag_idx      ON ci_jobs (tag, first_received_at DESC, job_id DESC);
CREATE INDEX ci_jobs_queue_idx    ON ci_jobs (queue_id, first_received_at DESC, job_id DESC);
CREATE INDEX ci_jobs_open_idx     ON ci_jobs (last_received_at) WHERE NOT is_final;

-- Which callback said what about which job: the job's full history, including states that
-- precedence kept from becoming current (applied = false).
CREATE TABLE ci_job_events (
    job_id      text        NOT NULL,
    callback_id bigint      NOT NULL REFERENCES ci_callbacks (callback_id) ON DELETE CASCADE,
    state       text        NOT NULL,
    applied     boolean     NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (job_id, callback_id)
);
CREATE INDEX ci_job_events_callback_idx ON ci_job_events (callback_id);
