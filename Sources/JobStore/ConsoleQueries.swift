import CIModel
import Foundation
import PostgresLibPQ

/// One stored callback as the console shows it: any outcome, rejected ones included.
public struct StoredCallbackRecord: Sendable, Hashable {
    public var callbackID: Int64
    public var receivedAt: String
    public var deliveryCount: Int
    /// `accepted`, `no_jobs` or `rejected`.
    public var outcome: String
    public var rejectionReason: String?
    public var source: String
    public var format: String?
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

/// Callbacks received per time bucket and outcome.
public struct CallbackRateBucket: Sendable, Hashable {
    /// Start of the bucket, microseconds since the epoch.
    public var startMicros: Int64
    public var outcome: String
    public var count: Int

    public init(startMicros: Int64, outcome: String, count: Int) {
        self.startMicros = startMicros
        self.outcome = outcome
        self.count = count
    }
}

/// The figures of the console's overview.
public struct ConsoleOverview: Sendable {
    public var openJobs: Int
    /// The open job not heard of for the longest time, and when it was last heard of.
    public var longestSilentOpenJob: (jobID: String, lastReceivedAt: String)?
    public var verification: VerificationBacklog
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

    /// Open jobs (not final), the one not heard of longest, and the verification backlog.
    public func consoleOverview() async throws -> ConsoleOverview {
        let backlog = try await verificationBacklog()
        return try await withConnection { connection in
            // Both read the partial index ci_jobs_open_idx, which holds open jobs only.
            let count = try StrictRow(connection.query(ConsoleSQL.openJobs)[0], read: "open jobs").int("open")
            let oldest = try connection.query(ConsoleSQL.longestSilentOpenJob).strict("longest silent open job") { row throws(StoredRowError) in
                (jobID: try row.string("job_id"), lastReceivedAt: try row.string("last_received_at"))
            }.first
            return ConsoleOverview(openJobs: count, longestSilentOpenJob: oldest, verification: backlog)
        }
    }

    /// Rejected callbacks, newest first, below `before` (a `callback_id`), whose reason contains
    /// `reasonContains`; each with the first `previewBytes` of its body.
    public func rejectedCallbacks(reasonContains: String?, before: Int64?, limit: Int, previewBytes: Int = 160) async throws -> RejectedPage {
        let limit = min(max(limit, 1), 200)
        let query = ConsoleSQL.rejected(reasonContains: reasonContains, before: before, limit: limit, previewBytes: previewBytes)
        return try await withConnection { connection in
            let rows = try connection.query(query).strict("rejected callbacks") { row throws(StoredRowError) in try Self.callbackRecord(row) }
            let page = Array(rows.prefix(limit))
            return RejectedPage(callbacks: page, nextBefore: rows.count > limit ? page.last?.callbackID : nil)
        }
    }

    /// One stored callback with its whole body and the jobs it mentioned; nil when there is none.
    public func callbackRecord(_ callbackID: Int64) async throws -> StoredCallbackRecord? {
        try await withConnection { connection in
            try connection.query(
                """
                SELECT \(unsafeRaw: ConsoleSQL.callbackColumns), c.body AS body,
                       ARRAY(SELECT e.job_id FROM ci_job_events e WHERE e.callback_id = c.callback_id ORDER BY e.job_id)::text AS job_ids
                FROM ci_callbacks c LEFT JOIN ci_callback_digests d ON d.body_sha256 = c.body_sha256
                WHERE c.callback_id = \(callbackID)
                """
            ).strict("callback") { row throws(StoredRowError) in try Self.callbackRecord(row) }.first
        }
    }

    /// The jobs whose history names `callbackID` (at most ``maximumPrefixMatches``). For a callback with no
    /// stored body this tells a pruned one (retention dropped the body; the history outlives it) from an id
    /// never stored; empty for both a never-stored one and a pruned one that mentioned no job.
    public func jobIDs(mentionedBy callbackID: Int64) async throws -> [String] {
        try await withConnection { connection in
            try connection.query(ConsoleSQL.jobsMentioning(callbackID, limit: Self.maximumPrefixMatches))
                .strict("jobs of a callback") { row throws(StoredRowError) in try row.string("job_id") }
        }
    }

    private static func callbackRecord(_ row: StrictRow) throws(StoredRowError) -> StoredCallbackRecord {
        StoredCallbackRecord(
            callbackID: try row.int64("callback_id"),
            receivedAt: try row.string("received_at"),
            deliveryCount: try row.int("delivery_count"),
            outcome: try row.string("outcome"),
            rejectionReason: try row.optionalString("rejection_reason"),
            source: try row.string("source"),
            format: try row.optionalString("format"),
            contentType: try row.optionalString("content_type"),
            remoteAddress: try row.optionalString("remote_address"),
            eventName: try row.optionalString("event_name"),
            bodySize: try row.int("body_size"),
            truncated: try row.bool("body_truncated"),
            body: try row.bytes("body"),
            jobIDs: try row.optionalString("job_ids").map(ConsoleSQL.parseTextArray) ?? []
        )
    }
}

/// The console's statements. Each walks an index: the primary key for a prefix, the partial index of
/// callbacks not accepted for rejected ones (the rates are in ``CallbackRateSQL``).
enum ConsoleSQL {
    /// A callback's columns; `d` is its digest row (`ci_callback_digests`, which counts deliveries), joined
    /// LEFT so that a body is shown even in the moment retention has pruned its digest.
    static let callbackColumns = """
        c.callback_id, \(JobStore.rfc3339("c.received_at")) AS received_at, coalesce(d.delivery_count, 1) AS delivery_count, c.outcome, c.rejection_reason,
        c.source, c.format, c.content_type, c.remote_address, c.event_name, c.body_size, c.body_truncated
        """

    /// Through the history's index on `callback_id`.
    static func jobsMentioning(_ callbackID: Int64, limit: Int) -> SQLQuery {
        "SELECT DISTINCT job_id FROM ci_job_events WHERE callback_id = \(callbackID) ORDER BY job_id LIMIT \(limit)"
    }

    static let openJobs: SQLQuery = "SELECT count(*) AS open FROM ci_jobs WHERE NOT is_final"

    static let longestSilentOpenJob = SQLQuery(
        unsafeSQL: """
            SELECT job_id, \(JobStore.rfc3339("last_received_at")) AS last_received_at
            FROM ci_jobs WHERE NOT is_final ORDER BY last_received_at LIMIT 1
            """, binds: [])

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
        sql.appendLiteral(") AS body, NULL::text AS job_ids\nFROM ci_callbacks c LEFT JOIN ci_callback_digests d ON d.body_sha256 = c.body_sha256\nWHERE c.outcome = 'rejected'")
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

    /// A PostgreSQL text array's output form (`{a,b}`; JobIds hold no quotes, commas or braces, but an
    /// element that needs quoting is unquoted all the same).
    static func parseTextArray(_ text: String) -> [String] {
        guard text.hasPrefix("{"), text.hasSuffix("}"), text.count > 2 else { return [] }
        var elements: [String] = []
        var current = ""
        var quoted = false
        var escaped = false
        for character in text.dropFirst().dropLast() {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == "\"" {
                quoted.toggle()
            } else if character == ",", !quoted {
                elements.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        elements.append(current)
        return elements
    }
}
