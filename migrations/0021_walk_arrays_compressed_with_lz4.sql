-- Issue 13: a walk's arrays are larger than a page's share, so they are compressed when stored, by default
-- with pglz, which took about a tenth of the database's CPU while delivering (perf, Benchmarks/webhooks.py
-- --only drain): a walk row's attempts (0020), written once per walk, and the walk in flight on its cursor
-- (0018: walk_events, walk_deliveries), written when the walk leases it. With lz4 the same walk rows cost
-- about a tenth as much to compress (370 rows of 256 deliveries: 235 ms with pglz, 30 ms with lz4), and are
-- about 30 % larger (3.8 KB a row against 5.0 KB); a cursor keeps its arrays only while its walk is in flight.
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
        ALTER TABLE webhook_cursors
            ALTER COLUMN walk_events SET COMPRESSION lz4,
            ALTER COLUMN walk_deliveries SET COMPRESSION lz4;
    END IF;
END
$$;
