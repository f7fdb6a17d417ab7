-- Issue 13: the sequencer could not get through a large backlog. A round cut short by its limit kept the
-- last complete round's snapshot, so the next round looked at the same candidates again, and asked of each,
-- in event_id order, whether it already had a position before it reached unpositioned ones: with a backlog
-- of 5 million events (a bulk load) every round read millions of rows, hit statement_timeout, positioned
-- nothing, and the feed stayed empty.
--
-- Now every round that saw an event remembers its snapshot and how far it walked in event_id order
-- (walked_through). Every event at or below walked_through has a position, or was invisible to that
-- snapshot: its writer was running then (the snapshot's list) or began later (at or above its xmax). The
-- next round positions those stragglers, and walks on above walked_through for at most its limit: its work
-- is bounded by the limit and by the writers of one interval, never by the backlog.
ALTER TABLE ci_event_sequencer ADD COLUMN walked_through bigint NOT NULL DEFAULT 0;
-- A complete round (last_round) positioned every event visible to it, and the rounds since positioned in
-- event_id order: every unpositioned event below the highest positioned one was invisible to last_round.
-- Without a complete round, the walk starts from the first event (positioned ones are skipped).
UPDATE ci_event_sequencer SET walked_through = coalesce((SELECT max(event_id) FROM ci_event_feed), 0)
WHERE last_round IS NOT NULL;
