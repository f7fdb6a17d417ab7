-- Job lists at millions of jobs (issue 11). Every filter of GET /v1/jobs seeks an index that leads with its
-- column and continues in list order (first_received_at DESC, job_id DESC), so one page reads about `limit`
-- rows however large ci_jobs grows: no filter uses ci_jobs_received_idx, state ci_jobs_state_idx, queueId
-- ci_jobs_queue_idx (all from 0001), and tag the index below. 0004 dropped tag's index because nearly every
-- job carries the one common tag, but a rare or mistyped tag then walked the whole of ci_jobs to fill a page.
-- Plain CREATE INDEX: it blocks writes to ci_jobs while it builds (seconds per million jobs). Not CONCURRENTLY:
-- a concurrent build waits for every older transaction in the whole database, so on a fresh schema in a busy
-- database (every test schema, a second tenant's schema) it runs into lock_timeout; see README, Migrations.
CREATE INDEX ci_jobs_tag_idx ON ci_jobs (tag, first_received_at DESC, job_id DESC);

-- A listing with several filters walks the index of one of them and checks the others row by row; which
-- one is cheapest depends on how often the values occur together. Statistics on the combinations (kept by
-- ANALYZE, nothing per write) let the planner see that, where per-column statistics assume independence.
CREATE STATISTICS ci_jobs_list_filters (mcv, dependencies) ON state, tag, queue_id FROM ci_jobs;
