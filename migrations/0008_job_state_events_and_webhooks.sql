-- Issue 13: an outbox of job state changes, read in commit order by GET /v1/events and pushed to
-- subscriptions with Standard Webhooks signatures.

-- The transactional outbox. A row is written by a trigger on ci_jobs, in the statement (so the transaction)
-- that changes a job's state: a rolled-back callback writes none, a committed one cannot lose its event.
-- A row carries the job exactly as GET /v1/jobs/{JobId} read it at that state (the columns of a lookup), so
-- an event's data is that body, rendered by the same code.
--
-- event_id comes from a sequence at INSERT, but transactions commit in another order: a reader paging by
-- event_id would skip a row whose transaction took a smaller id and committed later. So the feed pages by
-- feed_position instead, which one sequencer (a transaction holding an advisory lock, in any replica) assigns
-- after commit to every committed row that has none, in event_id order, above every position already given.
-- A row is in the feed only once it has a position, and positions only ever grow in the order in which they
-- become visible, so following the cursor sees every event once, in commit order (to the sequencer's round).
-- Events of one job never reorder: the job's row lock orders its changes, and a later change of the same job
-- takes its event_id after the earlier change committed.
CREATE TABLE ci_job_state_events (
    event_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    feed_position     bigint      UNIQUE,
    job_id            text        NOT NULL,
    state             text        NOT NULL,
    tag               text,
    detail            jsonb       NOT NULL,
    has_watermark     boolean     NOT NULL,
    watermark_type    text,
    watermark_version text,
    watermark_message text,
    first_received_at timestamptz NOT NULL,
    last_received_at  timestamptz NOT NULL,
    state_changed_at  timestamptz NOT NULL,
    callback_count    integer     NOT NULL,
    state_source      text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
-- The sequencer's queue: rows without a position, tiny in steady state.
CREATE INDEX ci_job_state_events_unsequenced_idx ON ci_job_state_events (event_id) WHERE feed_position IS NULL;
-- Replay walks a time window.
CREATE INDEX ci_job_state_events_changed_idx ON ci_job_state_events (state_changed_at);

-- One row per applied change of state: a job's first state, or a state that precedence applied and that
-- differs from the stored one. A stale state (precedence kept the stored one), a re-reported state and a
-- duplicate body write nothing. The WHEN clause is evaluated without calling the function, so an update
-- that changes no state costs nothing here. NOTIFY ci_job_events_new wakes the sequencer after commit.
CREATE FUNCTION ci_jobs_state_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ci_job_state_events (job_id, state, tag, detail, has_watermark, watermark_type, watermark_version,
                                     watermark_message, first_received_at, last_received_at, state_changed_at,
                                     callback_count, state_source)
    VALUES (NEW.job_id, NEW.state, NEW.tag, NEW.detail, NEW.has_watermark, NEW.watermark_type, NEW.watermark_version,
            NEW.watermark_message, NEW.first_received_at, NEW.last_received_at, NEW.state_changed_at,
            NEW.callback_count, NEW.state_source);
    PERFORM pg_notify('ci_job_events_new', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER ci_jobs_state_event_on_insert
    AFTER INSERT ON ci_jobs
    FOR EACH ROW EXECUTE FUNCTION ci_jobs_state_event();
CREATE TRIGGER ci_jobs_state_event_on_update
    AFTER UPDATE OF state ON ci_jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION ci_jobs_state_event();

-- Push subscriptions. The secret is kept as issued (whsec_ + base64): signing needs it.
CREATE TABLE webhook_subscriptions (
    subscription_id      text        PRIMARY KEY,
    url                  text        NOT NULL,
    tags                 text[],
    states               text[],
    description          text,
    secret               text        NOT NULL,
    created_at           timestamptz NOT NULL,
    disabled_at          timestamptz,
    disabled_reason      text,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    failing_since        timestamptz
);

-- One delivery per subscription and event, created by the sequencer when it positions the event (or by a
-- replay). Replicas lease pending deliveries with FOR UPDATE SKIP LOCKED and a lease time, so one attempt is
-- sent by one replica; a replica killed mid-attempt leaves a lease that runs out, and the attempt is sent
-- again (same webhook-id).
CREATE TABLE webhook_deliveries (
    delivery_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id  text        NOT NULL REFERENCES webhook_subscriptions (subscription_id) ON DELETE CASCADE,
    event_id         bigint      NOT NULL,
    job_id           text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempt_count    integer     NOT NULL DEFAULT 0,
    -- attempt_count when the current schedule began: a manual retry or a replay starts the schedule over.
    schedule_start   integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    leased_until     timestamptz,
    created_at       timestamptz NOT NULL,
    completed_at     timestamptz,
    last_status_code integer,
    last_error       text,
    UNIQUE (subscription_id, event_id)
);
-- The workers' queue, and the per-job order check (an older pending delivery of the same job goes first).
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_job_order_idx ON webhook_deliveries (subscription_id, job_id, event_id) WHERE status = 'pending';
-- The history listing: a subscription's deliveries, newest first, by status.
CREATE INDEX webhook_deliveries_history_idx ON webhook_deliveries (subscription_id, status, delivery_id DESC);

-- Every attempt: written when it is leased (so an attempt cut short by a crash stays visible) and completed
-- with its outcome.
CREATE TABLE webhook_attempts (
    delivery_id  bigint      NOT NULL REFERENCES webhook_deliveries (delivery_id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    status_code  integer,
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);
