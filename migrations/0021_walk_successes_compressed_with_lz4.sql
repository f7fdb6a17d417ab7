-- Issue 13: a walk row's arrays (0020) are larger than a page's share, so they are compressed when stored,
-- by default with pglz, which took about 9 % of the database's CPU while delivering (perf, Benchmarks/
-- webhooks.py --only drain). With lz4 the same rows cost about a tenth as much to compress (370 rows of 256
-- deliveries: 235 ms with pglz, 30 ms with lz4), and are about 30 % larger (3.8 KB a row against 5.0 KB).
-- Only the method of rows written from now on changes: existing ones stay as they are, readable either way,
-- and no row is rewritten. A server built without lz4 keeps pglz.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE webhook_walk_successes
            ALTER COLUMN delivery_ids SET COMPRESSION lz4,
            ALTER COLUMN event_ids SET COMPRESSION lz4,
            ALTER COLUMN job_ids SET COMPRESSION lz4,
            ALTER COLUMN status_codes SET COMPRESSION lz4,
            ALTER COLUMN started_at SET COMPRESSION lz4,
            ALTER COLUMN finished_at SET COMPRESSION lz4;
    END IF;
END
$$;
