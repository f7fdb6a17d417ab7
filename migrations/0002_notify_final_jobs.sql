-- Wakes `?wait=` lookups on every replica: a NOTIFY on channel ci_job_final, payload the JobId,
-- whenever a job's current JobsDetail becomes a final one (first final state, or a newer final callback).
-- NOTIFY is transactional: listeners hear it only after the COMMIT that stored the state.
CREATE FUNCTION ci_jobs_notify_final() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_final AND (TG_OP = 'INSERT' OR NOT OLD.is_final OR OLD.state_callback_id IS DISTINCT FROM NEW.state_callback_id) THEN
        PERFORM pg_notify('ci_job_final', NEW.job_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ci_jobs_notify_final
    AFTER INSERT OR UPDATE OF state, state_callback_id ON ci_jobs
    FOR EACH ROW EXECUTE FUNCTION ci_jobs_notify_final();
