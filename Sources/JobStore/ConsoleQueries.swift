import CIModel
import Foundation
import PostgresLibPQ
import TimeUnits

/// One stored callback as the console shows it: any outcome, rejected ones included.
public struct StoredCallbackRecord: Sendable, Hashable {
    public var callbackID: Int64
    public var receivedAt: String
    public var deliveryCount: Int
    public var outcome: StoredOutcome
    public var rejectionReason: String?
    public var source: CallbackSource
    /// Nil for a rejected body that is neither XML nor JSON.
    public var format: CallbackFormat?
    public var contentType: String?
    public var remoteAddress: String?
    public var eventName: String?
    /// Size as received; the stored body may be capped (``truncated``) for a rejected callback.
    public var bodySize: Int
    public var truncated: Bool
    /// The whole stored body for ``JobStore/callbackRecord(_:)``; the first bytes only in listings.
    public var body: [UInt8]
    /// The jobs this callback mentioned.
    public var jobIDs: [String]
}

/// A newest-first page of rejected callbacks.
public struct RejectedPage: Sendable, Hashable {
    public var callbacks: [StoredCallbackRecord]
    /// The `callback_id` to continue below; nil on the last page.
    public var nextBefore: Int64?
}

/// What the store holds of one callback id (``JobStore/callbackLookup(_:)``).
public enum CallbackLookup: Sendable, Hashable {
    /// The body is stored.
    case stored(StoredCallbackRecord)
    /// Retention dropped the body (`CALLBACK_RETENTION`); the history of these jobs, which outlives it, names it.
    case pruned(jobIDs: [String])
    /// Nothing names the id. When it was `issued` (the callback id sequence reached it) it was either a
    /// callback that named no job (a rejected one, say) whose body and digest retention dropped, or an id
    /// used up without a row (a repeated delivery takes one from the sequence too): nothing left tells which.
    /// An id not issued was never a callback.
    case notStored(issued: Bool)
}

/// Callbacks received per time bucket and outcome.
public struct CallbackRateBucket: Sendable, Hashable {
    /// Start of the bucket, microseconds since the epoch.
    public var startMicros: Int64
    public var outcome: StoredOutcome
    public var count: Int

    public init(startMicros: Int64, outcome: StoredOutcome, count: Int) {
        self.startMicros = startMicros
        self.outcome = outcome
        self.count = count
    }
}

/// A count that stops at a cap, so that it costs the same however many rows there are.
public struct CappedCount: Sendable, Hashable {
    /// The rows counted, at most ``cap`` + 1.
    public var counted: Int
    public var cap: Int

    public init(counted: Int, cap: Int) {
        self.counted = counted
        self.cap = cap
    }

    /// More than ``cap`` rows exist: the figure is shown as "10,000+".
    public var exceedsCap: Bool { counted > cap }
}

/// The bounds of the overview's statement (``JobStore/consoleOverview(now:policy:)``).
public struct ConsoleOverviewPolicy: Sendable, Hashable {
    /// Most open jobs, and most callbacks awaiting verification, the overview counts; more show as
    /// "10,000+". An exact count walks every open job's index entry (O(open jobs), unbounded when jobs
    /// go unanswered); a counter kept by a trigger would add a write to every callback's transaction.
    public var countCap = 10_000
    /// Longest span of callbacks the page counts itself, when the rollup's watermark is older (the rollup
    /// is behind: stopped, or a long `CONSOLE_ROLLUP_INTERVAL`): minutes before it and after the watermark
    /// show as not counted yet, rather than the page reading an unbounded range.
    public var liveWindow: Duration = .seconds(15 * 60)
    /// Bars of the day chart.
    public var dayBucket: Duration = .seconds(20 * 60)

    public init() {}
}

/// The figures of the console's overview, read in one statement.
public struct ConsoleOverview: Sendable {
    public var openJobs: CappedCount
    /// The open job not heard of for the longest time, and when it was last heard of.
    public var longestSilentOpenJob: (jobID: String, lastReceivedAt: String)?
    /// Callbacks whose final state awaits CI's confirmation, and when the oldest of them was received.
    public var verificationPending: CappedCount
    public var oldestPendingMicros: Int64?
    /// Callbacks per minute and outcome over the hour that ends with the current minute.
    public var hour: [CallbackRateBucket]
    public var hourStartMicros: Int64
    /// Callbacks per ``dayBucketMicros`` and outcome over the day.
    public var day: [CallbackRateBucket]
    public var dayStartMicros: Int64
    public var dayBucketMicros: Int64
    /// Minutes before this come from the rollup (`ci_callback_minutes`); callbacks since are counted live.
    public var rolledUpBeforeMicros: Int64
    /// Callbacks received before this are counted only by the rollup: when it is later than
    /// ``rolledUpBeforeMicros`` the minutes between are not counted yet.
    public var liveSinceMicros: Int64

    /// The rollup is behind the page's live window: minutes between its watermark and ``liveSinceMicros`` are missing.
    public var rollupBehind: Bool { rolledUpBeforeMicros < liveSinceMicros }
}

extension JobStore {
    /// Most jobs a prefix search answers with.
    public static let maximumPrefixMatches = 50

    /// JobIds that start with `prefix`, in key order, at most `limit`; a range of the primary key.
    public func jobIDs(withPrefix prefix: String, limit: Int = JobStore.maximumPrefixMatches) async throws -> [String] {
        let query = ConsoleSQL.prefixSearch(prefix, limit: limit)
        return try await withConnection { connection in
            try connection.query(query).strict("job prefix search") { row throws(StoredRowError) in try row.string("job_id") }
        }
    }

    /// The overview in one statement, each part bounded however large the tables grow: open jobs and
    /// callbacks awaiting verification counted up to ``ConsoleOverviewPolicy/countCap`` through their
    /// partial indexes, the open job silent longest (the first entry of `ci_jobs_open_idx`), the oldest
    /// pending verification (the first entry of each history partition's pending index), and the callback
    /// rates: the rolled-up minutes of the day (at most 1,440 per outcome) plus the callbacks since the
    /// rollup's watermark, read through the BRIN index of the last ``ConsoleOverviewPolicy/liveWindow`` only.
    public func consoleOverview(now: Date = Date(), policy: ConsoleOverviewPolicy = ConsoleOverviewPolicy()) async throws -> ConsoleOverview {
        let window = ConsoleSQL.OverviewWindow(nowMicros: Self.epochMicros(now), policy: policy)
        let query = ConsoleSQL.overview(window, cap: policy.countCap)
        return try await withConnection { connection in
            let rows = try connection.query(query).strict("console overview") { row throws(StoredRowError) in try ConsoleSQL.OverviewRow(row) }
            return try ConsoleSQL.overview(rows, window: window, cap: policy.countCap)
        }
    }

    /// Rejected callbacks, newest first, below `before` (a `callback_id`), whose reason contains
    /// `reasonContains`; each with the first `previewBytes` of its body.
    public func rejectedCallbacks(reasonContains: String?, before: Int64?, limit: Int, previewBytes: Int = 160) async throws -> RejectedPage {
        let limit = min(max(limit, 1), 200)
        let query = ConsoleSQL.rejected(reasonContains: reasonContains, before: before, limit: limit, previewBytes: previewBytes)
        return try await listings.withSlot {
            try await rejectedCallbacks(query, limit: limit)
        }
    }

    private func rejectedCallbacks(_ query: SQLQuery, limit: Int) async throws -> RejectedPage {
        try await withConnection { connection in
            let rows = try connection.query(query).strict("rejected callbacks") { row throws(StoredRowError) in try Self.callbackRecord(row) }
            let page = Array(rows.prefix(limit))
            return RejectedPage(callbacks: page, nextBefore: rows.count > limit ? page.last?.callbackID : nil)
        }
    }

    /// What the store holds of `callbackID`, in one statement: the callback with its whole body and the
    /// jobs it mentioned; or, with no body, the jobs whose history still names it (retention pruned it);
    /// or neither, and whether the id was ever handed out.
    public func callbackLookup(_ callbackID: Int64) async throws -> CallbackLookup {
        let query = ConsoleSQL.callbackLookup(callbackID, jobLimit: CIDecodingLimits().maxJobs)
        return try await withConnection { connection in
            let rows = try connection.query(query)
            // One row always: the callback's columns are NULL when no body is stored.
            let row = StrictRow(rows[0], read: "callback")
            if try row.optionalInt("callback_id") != nil { return .stored(try Self.callbackRecord(row)) }
            let jobs = try row.optionalTextArray("job_ids") ?? []
            if !jobs.isEmpty { return .pruned(jobIDs: jobs) }
            return .notStored(issued: callbackID <= (try row.optionalInt("last_issued").map(Int64.init) ?? 0))
        }
    }

    private static func callbackRecord(_ row: StrictRow) throws(StoredRowError) -> StoredCallbackRecord {
        StoredCallbackRecord(
            callbackID: try row.int64("callback_id"),
            receivedAt: try row.string("received_at"),
            deliveryCount: try row.int("delivery_count"),
            outcome: try row.value("outcome", as: StoredOutcome.self),
            rejectionReason: try row.optionalString("rejection_reason"),
            source: try row.value("source", as: CallbackSource.self),
            format: try row.optionalValue("format", as: CallbackFormat.self),
            contentType: try row.optionalString("content_type"),
            remoteAddress: try row.optionalString("remote_address"),
            eventName: try row.optionalString("event_name"),
            bodySize: try row.int("body_size"),
            truncated: try row.bool("body_truncated"),
            body: try row.bytes("body"),
            jobIDs: try row.optionalTextArray("job_ids") ?? []
        )
    }
}

/// The console's statements. Each walks an index: the primary key for a prefix, the partial index of
/// callbacks not accepted for rejected ones; the overview reads partial indexes, the rollup's minutes and
/// the BRIN index of the last minutes (the rollup itself is in ``CallbackRateSQL``).
enum ConsoleSQL {
    /// A callback's columns; `d` is its digest row (`ci_callback_digests`, which counts deliveries), joined
    /// LEFT so that a body is shown even in the moment retention has pruned its digest.
    static let callbackColumns = """
        c.callback_id, \(JobStore.rfc3339("c.received_at")) AS received_at, coalesce(d.delivery_count, 1) AS delivery_count, c.outcome, c.rejection_reason,
        c.source, c.format, c.content_type, c.remote_address, c.event_name, c.body_size, c.body_truncated
        """

    /// One row whatever is stored: the callback's columns (NULL when it has no body), the jobs whose history
    /// names it (through each history partition's index on `callback_id`), and the last id the sequence
    /// handed out (read from the sequence itself: one page, no table).
    static func callbackLookup(_ callbackID: Int64, jobLimit: Int) -> SQLQuery {
        """
        SELECT r.*, ARRAY(
                   SELECT DISTINCT e.job_id FROM ci_job_events e WHERE e.callback_id = \(callbackID) ORDER BY e.job_id LIMIT \(jobLimit)
               ) AS job_ids,
               (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM ci_callback_id_seq) AS last_issued
        FROM (SELECT 1) AS one LEFT JOIN LATERAL (
            SELECT \(unsafeRaw: callbackColumns), c.body AS body
            FROM ci_callbacks c LEFT JOIN ci_callback_digests d ON d.body_sha256 = c.body_sha256
            WHERE c.callback_id = \(callbackID)
        ) AS r ON true
        """
    }

    /// The instants the overview's statement reads from, all whole minutes.
    struct OverviewWindow: Sendable, Hashable {
        /// The hour chart's first minute: 59 minutes before the current one.
        var hourStartMicros: Int64
        /// The day chart's first bar: 71 (for 20-minute bars) before the current one.
        var dayStartMicros: Int64
        var dayBucketMicros: Int64
        /// The earliest receive time the statement counts in `ci_callbacks` itself.
        var liveSinceMicros: Int64

        init(nowMicros: Int64, policy: ConsoleOverviewPolicy) {
            let minute = CallbackRateSQL.minuteMicros
            let bucket = max(minute, CallbackRateSQL.minuteFloor(policy.dayBucket.microseconds))
            let currentBucket = nowMicros - ((nowMicros % bucket) + bucket) % bucket
            dayBucketMicros = bucket
            dayStartMicros = currentBucket - (max(1, 86_400_000_000 / bucket) - 1) * bucket
            hourStartMicros = CallbackRateSQL.minuteFloor(nowMicros) - 59 * minute
            liveSinceMicros = max(dayStartMicros, CallbackRateSQL.minuteFloor(nowMicros - policy.liveWindow.microseconds))
        }

        /// Bars of the day chart.
        var dayBucketCount: Int { Int(max(1, 86_400_000_000 / dayBucketMicros)) }
    }

    /// The overview as one statement (one round trip, one snapshot) of three kinds of rows: `hour` (per
    /// minute and outcome), `day` (per day bar and outcome) and one `figures` row. Every part is bounded:
    ///
    /// - the rates read `ci_callback_minutes` by its primary key for the day before the rollup's watermark
    ///   (at most 1,440 minutes per outcome), and `ci_callbacks` only from the watermark on and never
    ///   before `live` (a plan-time bound, so the planner prunes every older partition; the watermark,
    ///   read in the same statement, narrows the BRIN range at run time);
    /// - open jobs and pending verifications are counted up to `cap` + 1 entries of their partial indexes
    ///   (`ci_jobs_open_idx`, each history partition's `ci_job_events_pending_idx`);
    /// - the open job silent longest and the oldest pending verification are the first entries of those indexes.
    ///
    /// Instants are bound as `timestamptz` text, which the planner sees as constants (`interval`
    /// arithmetic is only stable, and would leave the pruning to run time and the planning to every partition).
    static func overview(_ window: OverviewWindow, cap: Int) -> SQLQuery {
        let instant = { (micros: Int64) in RetentionRunner.literal(Date(microsecondsSince1970: micros)) }
        let (hour, day, live) = (instant(window.hourStartMicros), instant(window.dayStartMicros), instant(window.liveSinceMicros))
        let limit = max(cap, 0) + 1
        // Bars and minutes are grouped as timestamps and turned into microseconds per output row only
        // (a numeric `extract` on each of the day's minutes was about a third of the statement's time).
        return """
            WITH mark AS MATERIALIZED (
                SELECT coalesce((SELECT counted_before FROM ci_callback_rollup), \(day)::timestamptz) AS counted_before
            ), minutes AS MATERIALIZED (
                SELECT m.minute, m.outcome, m.callbacks::int8 AS n
                FROM ci_callback_minutes m
                WHERE m.minute >= \(day)::timestamptz AND m.minute < (SELECT counted_before FROM mark)
                UNION ALL
                SELECT date_trunc('minute', c.received_at, 'UTC'), c.outcome, count(*)
                FROM ci_callbacks c
                WHERE c.received_at >= \(live)::timestamptz AND c.received_at >= (SELECT counted_before FROM mark)
                GROUP BY 1, 2
            )
            SELECT 'hour' AS kind, (extract(epoch FROM minute) * 1000000)::int8 AS micros, outcome, sum(n)::int8 AS n,
                   NULL::text AS job_id, NULL::text AS job_received_at, NULL::int8 AS pending, NULL::int8 AS pending_micros
            FROM minutes WHERE minute >= \(hour)::timestamptz
            GROUP BY minute, outcome
            UNION ALL
            SELECT 'day', (extract(epoch FROM bar) * 1000000)::int8, outcome, n, NULL, NULL, NULL, NULL
            FROM (
                SELECT date_bin(\(window.dayBucketMicros / 1_000_000)::int8 * interval '1 second', minute, \(day)::timestamptz) AS bar,
                       outcome, sum(n)::int8 AS n
                FROM minutes GROUP BY 1, 2
            ) AS bars
            UNION ALL
            SELECT 'figures', (SELECT (extract(epoch FROM counted_before) * 1000000)::int8 FROM mark), NULL,
                   (SELECT count(*) FROM (SELECT 1 FROM ci_jobs WHERE NOT is_final LIMIT \(limit)) AS open),
                   s.job_id, \(unsafeRaw: JobStore.rfc3339("s.last_received_at")),
                   (SELECT count(*) FROM (SELECT 1 FROM ci_job_events WHERE verification = 'pending' LIMIT \(limit)) AS pending),
                   (SELECT (extract(epoch FROM received_at) * 1000000)::int8 FROM ci_job_events
                    WHERE verification = 'pending' ORDER BY received_at LIMIT 1)
            FROM (SELECT 1) AS one LEFT JOIN LATERAL (
                SELECT job_id, last_received_at FROM ci_jobs WHERE NOT is_final ORDER BY last_received_at LIMIT 1
            ) AS s ON true
            """
    }

    /// One row of ``overview(_:cap:)``.
    struct OverviewRow: Sendable, Hashable {
        /// Which part of the overview a row carries (the statement's `kind` column).
        enum Kind: String, Sendable, Hashable, CaseIterable {
            /// Callbacks of one minute and outcome in the last hour.
            case hour
            /// Callbacks of one day bar and outcome.
            case day
            /// The one row of counts and watermarks.
            case figures
        }

        var kind: Kind
        var micros: Int64
        var outcome: StoredOutcome?
        var n: Int
        var jobID: String?
        var jobReceivedAt: String?
        var pending: Int?
        var pendingMicros: Int64?

        init(
            kind: Kind, micros: Int64, outcome: StoredOutcome?, n: Int, jobID: String? = nil, jobReceivedAt: String? = nil, pending: Int? = nil,
            pendingMicros: Int64? = nil
        ) {
            (self.kind, self.micros, self.outcome, self.n) = (kind, micros, outcome, n)
            (self.jobID, self.jobReceivedAt, self.pending, self.pendingMicros) = (jobID, jobReceivedAt, pending, pendingMicros)
        }

        init(_ row: StrictRow) throws(StoredRowError) {
            self.init(
                kind: try row.value("kind", as: Kind.self), micros: try row.int64("micros"),
                outcome: try row.optionalValue("outcome", as: StoredOutcome.self), n: try row.int("n"),
                jobID: try row.optionalString("job_id"), jobReceivedAt: try row.optionalString("job_received_at"),
                pending: try row.optionalInt("pending"), pendingMicros: try row.optionalInt("pending_micros").map(Int64.init))
        }
    }

    /// The overview from the statement's rows; without its `figures` row the statement is not the one this build knows.
    static func overview(_ rows: [OverviewRow], window: OverviewWindow, cap: Int) throws(StoredRowError) -> ConsoleOverview {
        guard let figures = rows.first(where: { $0.kind == .figures }) else { throw .missing("figures", read: "console overview") }
        let buckets = { (kind: OverviewRow.Kind) in
            rows.filter { $0.kind == kind }.compactMap { row in
                row.outcome.map { CallbackRateBucket(startMicros: row.micros, outcome: $0, count: row.n) }
            }.sorted { ($0.startMicros, $0.outcome.rawValue) < ($1.startMicros, $1.outcome.rawValue) }
        }
        let oldest = figures.jobID.flatMap { jobID in figures.jobReceivedAt.map { (jobID: jobID, lastReceivedAt: $0) } }
        return ConsoleOverview(
            openJobs: CappedCount(counted: figures.n, cap: cap), longestSilentOpenJob: oldest,
            verificationPending: CappedCount(counted: figures.pending ?? 0, cap: cap), oldestPendingMicros: figures.pendingMicros,
            hour: buckets(.hour), hourStartMicros: window.hourStartMicros,
            day: buckets(.day), dayStartMicros: window.dayStartMicros, dayBucketMicros: window.dayBucketMicros,
            rolledUpBeforeMicros: figures.micros, liveSinceMicros: window.liveSinceMicros)
    }

    /// A range of the primary key: `job_id >= prefix AND job_id < prefix || U+10FFFF`, exact under the
    /// C collation the cluster is created with; `starts_with` keeps the answer right under any other.
    static func prefixSearch(_ prefix: String, limit: Int) -> SQLQuery {
        let upper = prefix + "\u{10FFFF}"
        return """
            SELECT job_id FROM ci_jobs
            WHERE job_id >= \(prefix) AND job_id < \(upper) AND starts_with(job_id, \(prefix))
            ORDER BY job_id
            LIMIT \(min(max(limit, 1), JobStore.maximumPrefixMatches))
            """
    }

    static func rejected(reasonContains: String?, before: Int64?, limit: Int, previewBytes: Int) -> SQLQuery {
        var sql = SQLQuery.StringInterpolation(literalCapacity: 512, interpolationCount: 4)
        sql.appendLiteral("SELECT \(callbackColumns), substring(c.body FROM 1 FOR ")
        sql.appendInterpolation(previewBytes)
        sql.appendLiteral(") AS body, NULL::text[] AS job_ids\nFROM ci_callbacks c LEFT JOIN ci_callback_digests d ON d.body_sha256 = c.body_sha256\nWHERE c.outcome = 'rejected'")
        if let before {
            sql.appendLiteral(" AND c.callback_id < ")
            sql.appendInterpolation(before)
            sql.appendLiteral("::bigint")
        }
        if let reasonContains, !reasonContains.isEmpty {
            sql.appendLiteral(" AND strpos(c.rejection_reason, ")
            sql.appendInterpolation(reasonContains)
            sql.appendLiteral(") > 0")
        }
        sql.appendLiteral("\nORDER BY c.outcome, c.callback_id DESC\nLIMIT ")
        sql.appendInterpolation(limit + 1)
        return SQLQuery(stringInterpolation: sql)
    }
}
