-- The console's overview counts callbacks per minute over the last hour and day. A BRIN index on
-- received_at (rows arrive in time order, so each block range covers a narrow span) lets that read only
-- the period's blocks, at a cost per insert far below a B-tree's. A plain CREATE INDEX, not CONCURRENTLY
-- (as 0005): a concurrent build waits for every older transaction in the database; a BRIN build is one
-- sequential read of the table, during which inserts wait.
CREATE INDEX IF NOT EXISTS ci_callbacks_received_brin ON ci_callbacks USING brin (received_at) WITH (pages_per_range = 32);
