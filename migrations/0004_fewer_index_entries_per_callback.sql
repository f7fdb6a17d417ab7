-- Fewer index entries written per stored callback: every index is one more B-tree insert, and its WAL,
-- for each of thousands of callbacks a second (issue 4 measures PostgreSQL CPU per ingest).

-- Operators look rows up by outcome to find what was refused ('rejected', 'no_jobs'); accepted callbacks,
-- nearly all rows, are reached through their jobs. So the outcome index keeps only the others.
DROP INDEX ci_callbacks_outcome_idx;
CREATE INDEX ci_callbacks_not_accepted_idx ON ci_callbacks (outcome, callback_id DESC) WHERE outcome <> 'accepted';

-- Nearly every job this service stores carries the one Tag its teams submit (ExtractDigitalWatermark), so
-- an index on tag selects next to nothing: `GET /v1/jobs?tag=` walks ci_jobs_received_idx newest first and
-- filters, which costs the same for the common tag and more only for a rare one.
DROP INDEX ci_jobs_tag_idx;
