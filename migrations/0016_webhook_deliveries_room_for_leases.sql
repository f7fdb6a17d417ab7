-- Issue 13: a delivery row is updated twice: when an attempt is leased (leased_until, leased_at,
-- attempt_count, none of them indexed) and when its outcome is recorded (status, which the partial
-- indexes test, so never HOT). The lease update can be HOT, writing no index entry, only if the new row
-- version fits on the row's page, and at the default fillfactor (100) rows are inserted back to back, so
-- it rarely fit: measured, 19 % of updates were HOT and every other lease wrote an entry into each of the
-- table's 7 indexes that cover a pending row. Half of each page is left free at insert time instead.
-- It applies to pages filled from now on; an existing table gets it as its pages are reused.
ALTER TABLE webhook_deliveries SET (fillfactor = 50);
