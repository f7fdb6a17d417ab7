import Dispatch
import Foundation
import Logging
import PostgresLibPQ
import TimeUnits

/// What one retention run did (or, dry, would do).
public struct RetentionReport: Sendable, Hashable, CustomStringConvertible {
    /// Partitions made ahead.
    public var created: [String] = []
    /// Partitions detached and dropped because all their rows had expired.
    public var dropped: [String] = []
    /// Digests of dropped bodies deleted (the deduplication window moving on).
    public var digestsDeleted = 0
    /// Jobs past `JOB_RETENTION` deleted.
    public var jobsDeleted = 0
    /// Webhook deliveries (with their attempts) past `CALLBACK_RETENTION` deleted.
    public var deliveriesDeleted = 0
    /// State events (the outbox, the feed) past `CALLBACK_RETENTION` deleted.
    public var eventsDeleted = 0

    public init() {}

    public var description: String {
        "created \(created.isEmpty ? "none" : created.joined(separator: ", ")); dropped \(dropped.isEmpty ? "none" : dropped.joined(separator: ", "));"
            + " \(digestsDeleted) digests, \(jobsDeleted) jobs, \(deliveriesDeleted) webhook deliveries and \(eventsDeleted) events deleted"
    }
}

/// Makes partitions ahead and drops expired ones (``RetentionPlan``), then deletes the digests of dropped
/// bodies and the jobs past `JOB_RETENTION`, on a connection of its own.
///
/// Callers make sure one replica runs it at a time (``SweepLock``); it is idempotent, so a run cut short
/// (a lock timeout, a lost connection, SIGTERM) is finished by the next one. Partitions are made as plain
/// tables and then attached, and dropped after `DETACH PARTITION … CONCURRENTLY`: both take only a SHARE
/// UPDATE EXCLUSIVE lock on the partitioned table, so ingest and lookups go on meanwhile. Deletes go in
/// batches of ``RetentionPolicy/deleteBatch`` rows, each its own transaction.
public struct RetentionRunner: Sendable {
    public var conninfo: String
    /// The run's connection: no statement timeout (a detach waits for older queries), a long I/O deadline.
    public var settings: PostgresConnectionSettings
    public var policy: RetentionPolicy
    public var logger: Logger

    public init(conninfo: String, settings: PostgresConnectionSettings, policy: RetentionPolicy, logger: Logger) {
        self.conninfo = conninfo
        self.settings = settings.forMigrations()
        self.policy = policy
        self.logger = logger
    }

    /// The tables this service partitions and the retention of each.
    var tables: [(table: PartitionedTable, retention: Duration?, ahead: Int)] {
        [
            (.callbacks, policy.callbackRetention, policy.daysAhead),
            (.events, policy.jobRetention, 1),
        ]
    }

    /// One run at `now`. With `dryRun` nothing changes; the report says what would.
    public func run(now: Date = Date(), dryRun: Bool = false) async throws -> RetentionReport {
        try await StoreUnavailableError.translatingErrors {
            try await withCheckedThrowingContinuation { continuation in
                // libpq blocks: the run gets a thread of Dispatch's, never one of Swift's cooperative pool.
                DispatchQueue.global().async {
                    continuation.resume(with: Result { try self.runBlocking(now: now, dryRun: dryRun) })
                }
            }
        }
    }

    func runBlocking(now: Date, dryRun: Bool) throws -> RetentionReport {
        let connection = try PostgresConnection.connect(conninfo, settings: settings)
        defer { connection.close() }
        try connection.execute(simpleSQL: "SET lock_timeout = '\(policy.lockTimeout.inMilliseconds)ms'")
        var report = RetentionReport()
        var remainingBodies: [PartitionInfo] = []
        for (table, retention, ahead) in tables {
            let existing = try Self.partitions(of: table, on: connection)
            let actions = RetentionPlan.actions(for: table, existing: existing, now: now, retention: retention, ahead: ahead)
            var dropped = Set<String>()
            for action in actions {
                switch action {
                case .create(let name, let from, let to):
                    if !dryRun { try Self.create(name, of: table, from: from, to: to, on: connection) }
                    report.created.append(name)
                case .drop(let name, let detachPending):
                    if !dryRun { try Self.drop(name, of: table, detachPending: detachPending, on: connection) }
                    report.dropped.append(name)
                    dropped.insert(name)
                }
                logger.info("retention", metadata: ["action": "\(action)", "table": "\(table.name)", "dry_run": "\(dryRun)"])
            }
            if table == .callbacks {
                remainingBodies = existing.filter { !dropped.contains($0.name) }
            }
        }
        if let cutoff = RetentionPlan.digestCutoff(remaining: remainingBodies) {
            report.digestsDeleted = try deleteInBatches(
                dryRun: dryRun, on: connection,
                count: "SELECT count(*)::int8 AS n FROM ci_callback_digests WHERE received_at < '\(Self.literal(cutoff))'::timestamptz",
                batch: """
                    WITH gone AS (
                        SELECT body_sha256 FROM ci_callback_digests WHERE received_at < '\(Self.literal(cutoff))'::timestamptz LIMIT \(policy.deleteBatch)
                    ), deleted AS (
                        DELETE FROM ci_callback_digests d USING gone WHERE d.body_sha256 = gone.body_sha256 RETURNING 1
                    )
                    SELECT count(*)::int8 AS n FROM deleted
                    """)
        }
        if let retention = policy.jobRetention {
            // A job goes when its last callback is that old; first ≤ last, so the received index finds them.
            let cutoff = Self.literal(now.addingTimeInterval(-retention.inSeconds))
            report.jobsDeleted = try deleteInBatches(
                dryRun: dryRun, on: connection,
                count: "SELECT count(*)::int8 AS n FROM ci_jobs WHERE first_received_at < '\(cutoff)'::timestamptz AND last_received_at < '\(cutoff)'::timestamptz",
                batch: """
                    WITH gone AS (
                        SELECT job_id FROM ci_jobs
                        WHERE first_received_at < '\(cutoff)'::timestamptz AND last_received_at < '\(cutoff)'::timestamptz
                        ORDER BY first_received_at LIMIT \(policy.deleteBatch)
                    ), deleted AS (
                        DELETE FROM ci_jobs j USING gone WHERE j.job_id = gone.job_id RETURNING 1
                    )
                    SELECT count(*)::int8 AS n FROM deleted
                    """)
        }
        if let retention = policy.callbackRetention {
            let cutoff = Self.literal(now.addingTimeInterval(-retention.inSeconds))
            report.deliveriesDeleted = try deleteInBatches(
                dryRun: dryRun, on: connection, count: RetentionSQL.countDeliveries(before: cutoff),
                batch: RetentionSQL.deleteDeliveries(before: cutoff, limit: policy.deleteBatch))
            report.eventsDeleted = try deleteInBatches(
                dryRun: dryRun, on: connection, count: RetentionSQL.countEvents(before: cutoff),
                batch: RetentionSQL.deleteEvents(before: cutoff, limit: policy.deleteBatch), lock: RetentionSQL.eventsLock)
        }
        return report
    }

    /// Runs `batch` until it deletes nothing, returning the rows deleted; dry, only `count`s them.
    /// With `lock`, each batch is a transaction that runs `lock` first (a statement of its own, so the
    /// batch's snapshot is taken after the lock is granted).
    private func deleteInBatches(dryRun: Bool, on connection: PostgresConnection, count: String, batch: String, lock: String? = nil) throws -> Int {
        if dryRun {
            return Int(try StrictRow(connection.query(SQLQuery(unsafeSQL: count))[0], read: "retention count").int64("n"))
        }
        var total = 0
        while true {
            let rows: PostgresRows
            if let lock {
                rows = try connection.transaction { connection in
                    try connection.query(SQLQuery(unsafeSQL: lock))
                    return try connection.query(SQLQuery(unsafeSQL: batch))
                }
            } else {
                rows = try connection.query(SQLQuery(unsafeSQL: batch))
            }
            let row = StrictRow(rows[0], read: "retention delete")
            let deleted = Int(try row.int64("n"))
            total += deleted
            // A batch that counts rows of several each (walk rows) says whether it took all it could.
            let more = rows[0].contains("more") ? try row.bool("more") : false
            if deleted < policy.deleteBatch, !more { return total }
        }
    }

    // MARK: Catalog and DDL

    /// The table's partitions with their bounds, read from the catalog (`pg_get_expr` of the bound, whose
    /// quoted timestamps carry their offset).
    static func partitions(of table: PartitionedTable, on connection: PostgresConnection) throws -> [PartitionInfo] {
        let bound = { (keyword: String) in
            "(extract(epoch FROM (regexp_match(pg_get_expr(c.relpartbound, c.oid), '\(keyword) \\(''([^'']+)''\\)'))[1]::timestamptz) * 1000000)::int8"
        }
        let rows = try connection.query(
            """
            SELECT c.relname::text AS name, \(unsafeRaw: bound("FROM")) AS lower_micros, \(unsafeRaw: bound("TO")) AS upper_micros,
                   i.inhdetachpending AS detach_pending
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass(\(table.name))
            ORDER BY c.relname
            """)
        return try rows.map { row in
            let row = StrictRow(row, read: "partitions")
            let instant = { (micros: Int64?) in micros.map(Date.init(microsecondsSince1970:)) }
            return PartitionInfo(
                name: try row.string("name"), lower: instant(try row.optionalInt("lower_micros").map(Int64.init)),
                upper: instant(try row.optionalInt("upper_micros").map(Int64.init)), detachPending: try row.bool("detach_pending"))
        }
    }

    /// A plain table shaped like the parent, then attached: `CREATE TABLE … PARTITION OF` would lock the
    /// parent against every insert; `ATTACH` of an empty table takes a lock ingest does not conflict with.
    static func create(_ name: String, of table: PartitionedTable, from: Date, to: Date, on connection: PostgresConnection) throws {
        let partition = try identifier(name)
        try connection.execute(
            simpleSQL: "CREATE TABLE IF NOT EXISTS \(partition) (LIKE \(try identifier(table.name)) INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        try connection.execute(
            simpleSQL: "ALTER TABLE \(try identifier(table.name)) ATTACH PARTITION \(partition) FOR VALUES FROM ('\(literal(from))') TO ('\(literal(to))')")
    }

    /// `DETACH … CONCURRENTLY` (or `FINALIZE`, when an earlier one was interrupted), then `DROP TABLE`.
    static func drop(_ name: String, of table: PartitionedTable, detachPending: Bool, on connection: PostgresConnection) throws {
        let partition = try identifier(name)
        try connection.execute(
            simpleSQL: "ALTER TABLE \(try identifier(table.name)) DETACH PARTITION \(partition) \(detachPending ? "FINALIZE" : "CONCURRENTLY")")
        try connection.execute(simpleSQL: "DROP TABLE IF EXISTS \(partition)")
    }

    /// DDL takes no bind parameters; names here are made by this code or read from the catalog, and are
    /// refused unless they are plain lower-case identifiers.
    static func identifier(_ name: String) throws -> String {
        guard !name.isEmpty, name.utf8.count < 64, name.utf8.allSatisfy({ (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F })
        else {
            throw JobStoreError("retention refuses the table name \"\(name)\": not a plain identifier")
        }
        return "\"\(name)\""
    }

    /// `2026-12-05 00:00:00.000000+00`: an instant PostgreSQL reads the same in any session time zone.
    static func literal(_ date: Date) -> String {
        let micros = date.microsecondsSince1970
        let seconds = micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000
        let parts = PartitionedTable.utc.dateComponents(
            [.year, .month, .day, .hour, .minute, .second], from: Date(timeIntervalSince1970: TimeInterval(seconds)))
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d.%06d+00", parts.year!, parts.month!, parts.day!, parts.hour!, parts.minute!, parts.second!,
            Int(micros - seconds * 1_000_000))
    }
}

/// Retention of the webhook tables (migrations 0008, 0011, 0018, 0019). Events follow
/// `CALLBACK_RETENTION`: an event older than it goes once no delivery refers to it and every enabled
/// subscription it matches has walked past it, and a delivery (with its attempts) goes once it finished,
/// succeeded or failed, that long ago. So a pending delivery keeps its event however old (it can still be
/// sent), every listed delivery can be retried, and the history shows deliveries for the retention after
/// they finished.
/// Pending deliveries of a subscription disabled by 410 Gone are never sent: they go once that old too.
///
/// `cutoff` is a ``RetentionRunner/literal(_:)`` made by the runner from a clock, never input.
enum RetentionSQL {
    /// A delivery retention deletes: finished before the cutoff, or pending since then for a disabled subscription.
    static func deliveryExpired(_ d: String, before cutoff: String) -> String {
        """
        ((\(d).status <> 'pending' AND \(d).completed_at < '\(cutoff)'::timestamptz)
         OR (\(d).status = 'pending' AND \(d).created_at < '\(cutoff)'::timestamptz
             AND EXISTS (SELECT 1 FROM webhook_subscriptions s WHERE s.subscription_id = \(d).subscription_id AND s.disabled_at IS NOT NULL)))
        """
    }

    static func countDeliveries(before cutoff: String) -> String {
        """
        SELECT (SELECT count(*) FROM webhook_deliveries d WHERE \(deliveryExpired("d", before: cutoff)))
               + (SELECT coalesce(sum(cardinality(delivery_ids)), 0) FROM webhook_walk_successes WHERE recorded_at < '\(cutoff)'::timestamptz)
               AS n
        """
    }

    /// The walk rows (migration 0020) one batch deletes, a walk's successes each: a batch of deliveries.
    static func walkRowsPerBatch(_ limit: Int) -> Int { max(1, limit / 64) }

    /// The highest feed position no walk row kept by retention covers: the lowest `after_position` of the
    /// oldest kept walk row of each subscription (their feed ranges grow walk by walk). An event at or
    /// below it is in no kept walk row, so no delivery still listed refers to it.
    static func walkRowsFloor(before cutoff: String) -> String {
        """
        (SELECT coalesce(min(r.after_position), 9223372036854775807)
         FROM webhook_subscriptions s
         CROSS JOIN LATERAL (SELECT w.after_position FROM webhook_walk_successes w
                             WHERE w.subscription_id = s.subscription_id AND w.recorded_at >= '\(cutoff)'::timestamptz
                             ORDER BY w.through_position LIMIT 1) r)
        """
    }

    /// Finished deliveries first (by the index on `completed_at`), then the never-to-be-sent ones. The
    /// DELETE checks the status again: a manual retry that made a delivery pending meanwhile wins.
    static func deleteDeliveries(before cutoff: String, limit: Int) -> String {
        """
        WITH finished AS (
            SELECT delivery_id FROM webhook_deliveries
            WHERE status <> 'pending' AND completed_at < '\(cutoff)'::timestamptz
            ORDER BY completed_at LIMIT \(limit)
        ), abandoned AS (
            SELECT d.delivery_id FROM webhook_deliveries d
            JOIN webhook_subscriptions s ON s.subscription_id = d.subscription_id AND s.disabled_at IS NOT NULL
            WHERE d.status = 'pending' AND d.created_at < '\(cutoff)'::timestamptz
            LIMIT \(limit)
        ), deleted AS (
            DELETE FROM webhook_deliveries d
            WHERE d.delivery_id IN (SELECT delivery_id FROM finished UNION ALL SELECT delivery_id FROM abandoned)
              AND (d.status <> 'pending' OR d.delivery_id IN (SELECT delivery_id FROM abandoned))
            RETURNING 1
        ), walks AS (
            -- Walks' successes (migration 0020), finished when their row was recorded.
            DELETE FROM webhook_walk_successes w
            WHERE w.ctid = ANY (ARRAY(SELECT ctid FROM webhook_walk_successes WHERE recorded_at < '\(cutoff)'::timestamptz
                                      LIMIT \(walkRowsPerBatch(limit))))
            RETURNING cardinality(w.delivery_ids) AS n
        )
        SELECT (SELECT count(*) FROM deleted) + (SELECT coalesce(sum(n), 0) FROM walks) AS n,
               (SELECT count(*) FROM walks) = \(walkRowsPerBatch(limit)) AS more
        """
    }

    /// An event above the cursor of an enabled subscription it matches (migration 0018) is still to be
    /// walked and sent, however old; one no subscription matches waits for no cursor.
    static func notAboveACursor(_ f: String, event e: String) -> String {
        """
        NOT EXISTS (SELECT 1 FROM webhook_cursors c JOIN webhook_subscriptions s ON s.subscription_id = c.subscription_id
                    WHERE s.disabled_at IS NULL AND c.position < \(f).feed_position
                      AND (s.tags IS NULL OR \(e).tag = ANY (s.tags)) AND (s.states IS NULL OR \(e).state = ANY (s.states)))
        """
    }

    /// Counts, for a dry run, the events a run would delete: those of its deleted deliveries too.
    static func countEvents(before cutoff: String) -> String {
        """
        SELECT count(*)::int8 AS n FROM ci_job_state_events e
        WHERE e.created_at < '\(cutoff)'::timestamptz
          AND EXISTS (SELECT 1 FROM ci_event_feed f WHERE f.event_id = e.event_id AND \(notAboveACursor("f", event: "e"))
                        AND f.feed_position <= \(walkRowsFloor(before: cutoff)))
          AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.event_id AND NOT \(deliveryExpired("d", before: cutoff)))
        """
    }

    /// Deletes old events no delivery refers to, and moves the feed's horizon up to the highest position
    /// deleted, in one statement: a reader sees both or neither. Unsequenced events are never deleted (the
    /// sequencer still has to position them and queue their deliveries).
    static func deleteEvents(before cutoff: String, limit: Int) -> String {
        """
        WITH gone AS (
            SELECT e.event_id FROM ci_job_state_events e
            WHERE e.created_at < '\(cutoff)'::timestamptz
              AND EXISTS (SELECT 1 FROM ci_event_feed f WHERE f.event_id = e.event_id AND \(notAboveACursor("f", event: "e"))
                            AND f.feed_position <= \(walkRowsFloor(before: cutoff)))
              AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.event_id)
            ORDER BY e.created_at LIMIT \(limit)
        ), deleted AS (
            DELETE FROM ci_job_state_events e USING gone WHERE e.event_id = gone.event_id RETURNING e.event_id
        ), unfed AS (
            DELETE FROM ci_event_feed f USING deleted WHERE f.event_id = deleted.event_id RETURNING f.feed_position
        ), top AS (
            SELECT max(feed_position) AS position, count(*)::int8 AS n FROM unfed
        ), moved AS (
            UPDATE ci_event_feed_horizon h SET pruned_through = top.position FROM top WHERE top.position > h.pruned_through
        )
        SELECT n FROM top
        """
    }

    /// Taken (exclusively) by each event batch and (shared) by a replay, which queues deliveries of old
    /// events: without it a batch could delete an event whose replayed delivery commits a moment later.
    static let eventsLock = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.ci_job_state_events.retention'))"
    /// The replay's side of ``eventsLock``.
    static let eventsLockShared = "SELECT pg_advisory_xact_lock_shared(hashtext(current_schema() || '.ci_job_state_events.retention'))"
}
