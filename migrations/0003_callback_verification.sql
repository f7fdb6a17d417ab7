-- VERIFY_CALLBACKS: CI signs nothing, so a callback reporting a final state can be held until
-- DescribeMediaJob confirms it. Such a callback's event row is written with verification = 'pending'
-- (and applied = false) instead of touching ci_jobs; the verifier then marks it 'confirmed' (and applies
-- it) or 'contradicted' (with a note saying what CI answered). NULL: the event was never subject to
-- verification (verification off, a non-final state, or a submit/reconcile answer, which come from CI).
ALTER TABLE ci_job_events
    ADD COLUMN verification      text        NULL CHECK (verification IN ('pending', 'confirmed', 'contradicted')),
    ADD COLUMN verification_note text        NULL,
    ADD COLUMN verified_at       timestamptz NULL;

-- The verifier's queue: pending events, oldest first. Tiny in steady state (events leave it within
-- seconds), so a partial index keeps the scan independent of the history's size.
CREATE INDEX ci_job_events_pending_idx ON ci_job_events (received_at) WHERE verification = 'pending';
