-- Issue 13: the outbox (0008) cost every state change about 50 % more PostgreSQL CPU than the change itself.
-- Measured against the same binary without the outbox triggers: the trigger's NOTIFY, five index entries
-- for the event row, and the sequencer's UPDATE that gave each row its feed position (a second copy of the
-- whole row, the job's detail included, and four more index entries). Here an event row is written once and
-- never changed, with two btree entries (its id and its writer's transaction id) and two BRIN summaries;
-- positions go to a narrow table of their own; and the sequencer is woken by the process that committed
-- the change, not by a NOTIFY (a notifying transaction holds a database-wide lock through its commit, so
-- NOTIFY from every state change serialises the ingest committers).

-- Feed positions, written by the sequencer only: one narrow row per event, in the order events became
-- visible. The feed reads it by position; the sequencer and retention find an event's row by event_id.
CREATE TABLE ci_event_feed (
    feed_position bigint PRIMARY KEY,
    event_id      bigint NOT NULL UNIQUE
);

-- The top-level transaction that wrote the event (pg_current_xact_id()). A sequencer round remembers its
-- snapshot; every transaction that had finished by then (id below the snapshot's xmax and not in its list
-- of running ones) was seen by that round, so the next round need look only at events whose writer was
-- still running then or started after: a short index range plus a few probes, however many events exist
-- and however long another, unrelated transaction stays open.
-- ADD COLUMN takes ACCESS EXCLUSIVE, so no writer of an event is in flight from here to COMMIT: every row
-- below is committed. Adding the default separately keeps existing rows NULL without rewriting the table.
ALTER TABLE ci_job_state_events ADD COLUMN writer_xid xid8;
ALTER TABLE ci_job_state_events ALTER COLUMN writer_xid SET DEFAULT pg_current_xact_id();

INSERT INTO ci_event_feed (feed_position, event_id)
SELECT feed_position, event_id FROM ci_job_state_events WHERE feed_position IS NOT NULL;
-- Events the old sequencer had not positioned yet: the new one takes them in its first round, which has no
-- earlier snapshot and so looks at every event with a writer id. Positioned events keep NULL: they are done.
UPDATE ci_job_state_events SET writer_xid = pg_current_xact_id() WHERE feed_position IS NULL;

-- Drops the column's unique index and the partial index of unpositioned rows with it.
ALTER TABLE ci_job_state_events DROP COLUMN feed_position;
CREATE INDEX ci_job_state_events_writer_idx ON ci_job_state_events (writer_xid);

-- Replay (by state_changed_at) and retention (by created_at) read time ranges of a table that is appended
-- in time order: BRIN summaries cost ingest next to nothing, where a btree added an entry per event.
DROP INDEX ci_job_state_events_changed_idx;
CREATE INDEX ci_job_state_events_changed_brin ON ci_job_state_events USING brin (state_changed_at);
DROP INDEX ci_job_state_events_created_idx;
CREATE INDEX ci_job_state_events_created_brin ON ci_job_state_events USING brin (created_at);

-- The snapshot of the sequencer's last complete round (NULL before the first). One row.
CREATE TABLE ci_event_sequencer (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_round pg_snapshot
);
INSERT INTO ci_event_sequencer (singleton, last_round) VALUES (true, NULL);

-- The trigger of 0008 without its NOTIFY.
CREATE OR REPLACE FUNCTION ci_jobs_state_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ci_job_state_events (job_id, state, tag, detail, has_watermark, watermark_type, watermark_version,
                                     watermark_message, first_received_at, last_received_at, state_changed_at,
                                     callback_count, state_source)
    VALUES (NEW.job_id, NEW.state, NEW.tag, NEW.detail, NEW.has_watermark, NEW.watermark_type, NEW.watermark_version,
            NEW.watermark_message, NEW.first_received_at, NEW.last_received_at, NEW.state_changed_at,
            NEW.callback_count, NEW.state_source);
    RETURN NULL;
END
$$;
