import CIModel
import Foundation
import PostgresLibPQ

extension JobStore {
    /// A newest-first page of jobs matching `query`.
    public func jobs(_ query: JobListQuery) async throws -> JobPage {
        let limit = JobListSQL.clampedLimit(query.limit)
        let rows = try await listings.withSlot {
            try await routedRead(jobID: nil) { connection in try connection.query(JobListSQL.query(query)) } complete: { _ in true }
        }
        let read = "job list"
        let page = try rows.prefix(limit).map { row throws(StoredRowError) in try Self.storedJob(StrictRow(row, read: read)) }
        var next: JobListCursor?
        if rows.count > limit {
            let last = StrictRow(rows[limit - 1], read: read)
            next = JobListCursor(firstReceivedMicros: try last.int64("first_received_micros"), jobID: try last.string("job_id"))
        }
        return JobPage(jobs: page, nextCursor: next)
    }

    /// A page of the callbacks that mentioned the job, oldest first (in the order they were stored); nil
    /// when the job is unknown.
    ///
    /// A job whose only callbacks await verification has no `ci_jobs` row yet, but it has a history: the
    /// history itself decides whether the job is known.
    public func callbacks(forJob jobID: String, page: CallbackHistoryQuery = CallbackHistoryQuery()) async throws -> CallbackPage? {
        let limit = CallbackHistorySQL.clampedLimit(page.limit)
        return try await listings.withSlot { try await callbacks(forJob: jobID, page: page, limit: limit) }
    }

    private func callbacks(forJob jobID: String, page: CallbackHistoryQuery, limit: Int) async throws -> CallbackPage? {
        try await routedRead(jobID: jobID) { connection -> CallbackPage? in
            let rows = try connection.query(CallbackHistorySQL.query(jobID: jobID, page: page))
            if rows.isEmpty {
                // Past the last page, or a job row without events (every ingest writes an event per job, so
                // that is not expected): either is an empty page of a known job, not an unknown job.
                let known = try connection.query(CallbackHistorySQL.known(jobID: jobID))
                return try StrictRow(known[0], read: "callback history").bool("known") ? CallbackPage(callbacks: [], nextCursor: nil) : nil
            }
            let callbacks = try rows.prefix(limit).map { row throws(StoredRowError) in
                try Self.storedCallback(StrictRow(row, read: "callback history"))
            }
            let next = rows.count > limit ? callbacks.last.map { CallbackHistoryCursor(callbackID: $0.callbackID) } : nil
            return CallbackPage(callbacks: callbacks, nextCursor: next)
        } complete: { $0 != nil }
    }

    private static func storedCallback(_ row: StrictRow) throws(StoredRowError) -> StoredCallback {
        let verification = try row.optionalString("verification")
        var body: StoredCallbackBodyInfo?
        if try !row.bool("body_pruned") {
            body = StoredCallbackBodyInfo(
                lastReceivedAt: try row.string("last_received_at"),
                deliveryCount: try row.int("delivery_count"),
                format: try row.optionalValue("format", as: CallbackFormat.self),
                contentType: try row.optionalString("content_type"),
                eventName: try row.optionalString("event_name"),
                source: try row.value("source", as: CallbackSource.self),
                bodySize: try row.int("body_size")
            )
        }
        return StoredCallback(
            callbackID: try row.int64("callback_id"),
            receivedAt: try row.string("received_at"),
            body: body,
            state: JobState(rawValue: try row.string("state")),
            applied: try row.bool("applied"),
            verification: try verification.map { text throws(StoredRowError) in
                guard let value = CallbackVerification(rawValue: text) else {
                    throw StoredRowError.mistyped(try row.cell("verification"), expected: "pending, confirmed or contradicted", read: row.read)
                }
                return value
            },
            verificationNote: try row.optionalString("verification_note")
        )
    }
}

/// The statement of one job listing.
///
/// Only the filters a listing has appear in its text, so each combination of filters is a statement of
/// its own, whose plan (custom or generic) can use the index that leads with its filter column. One text
/// for every combination, with `$1 IS NULL OR state = $1` conditions, leaves a generic plan nothing to
/// seek on. Rows are ordered by the `ci_jobs` columns themselves, qualified: the output column
/// `first_received_at` is the RFC 3339 text, and an unqualified `ORDER BY first_received_at` sorts by that
/// text, over the whole table, instead of walking an index.
enum JobListSQL {
    static func clampedLimit(_ limit: Int) -> Int { min(max(limit, 1), JobListQuery.maximumLimit) }

    static func query(_ query: JobListQuery) -> SQLQuery {
        var sql = SQLQuery.StringInterpolation(literalCapacity: 1024, interpolationCount: 8)
        sql.appendLiteral(
            """
            SELECT \(JobStore.jobColumns),
                   (extract(epoch FROM j.first_received_at) * 1000000)::bigint AS first_received_micros
            FROM ci_jobs j
            """)
        var joiner = "\nWHERE "
        func condition(_ text: String) {
            sql.appendLiteral(joiner + text)
            joiner = "\n  AND "
        }
        if let state = query.state {
            condition("j.state = ")
            sql.appendInterpolation(state.rawValue)
        }
        if let tag = query.tag {
            condition("j.tag = ")
            sql.appendInterpolation(tag)
        }
        if let queueID = query.queueID {
            condition("j.queue_id = ")
            sql.appendInterpolation(queueID)
        }
        if let since = query.since {
            condition("j.first_received_at >= ")
            instant(JobStore.epochMicros(since), into: &sql)
        }
        if let until = query.until {
            condition("j.first_received_at < ")
            instant(JobStore.epochMicros(until), into: &sql)
        }
        if let cursor = query.cursor {
            // A row comparison on the index's two columns: the index scan starts right after the cursor.
            condition("(j.first_received_at, j.job_id) < (")
            instant(cursor.firstReceivedMicros, into: &sql)
            sql.appendLiteral(", ")
            sql.appendInterpolation(cursor.jobID)
            sql.appendLiteral("::text)")
        }
        sql.appendLiteral("\nORDER BY j.first_received_at DESC, j.job_id DESC\nLIMIT ")
        sql.appendInterpolation(clampedLimit(query.limit) + 1)
        return SQLQuery(stringInterpolation: sql)
    }

    /// Microseconds since the epoch as a `timestamptz`: exact, where a float seconds value would round.
    private static func instant(_ micros: Int64, into sql: inout SQLQuery.StringInterpolation) {
        sql.appendLiteral("('epoch'::timestamptz + ")
        sql.appendInterpolation(micros)
        sql.appendLiteral("::bigint * interval '1 microsecond')")
    }
}

/// The statements of a job's history, paged by `callback_id` over the `ci_job_events` primary key
/// `(job_id, callback_id, received_at)` of each partition: no index beyond the primary key is written per
/// callback, and the bodies and digests are joined for the page's rows only.
enum CallbackHistorySQL {
    static func clampedLimit(_ limit: Int) -> Int { min(max(limit, 1), CallbackHistoryQuery.maximumLimit) }

    static func query(jobID: String, page: CallbackHistoryQuery) -> SQLQuery {
        var sql = SQLQuery.StringInterpolation(literalCapacity: 1024, interpolationCount: 3)
        // The page's events first, then the joins for those rows only: ci_job_events is partitioned, and
        // where the planner sorts across partitions instead of merging their key order, it then sorts the
        // job's events alone, never joined rows.
        sql.appendLiteral(
            """
            WITH page AS MATERIALIZED (
                SELECT e.callback_id, e.received_at, e.state, e.applied, e.verification, e.verification_note
                FROM ci_job_events e
                WHERE e.job_id =
            """)
        sql.appendLiteral(" ")
        sql.appendInterpolation(jobID)
        if let cursor = page.cursor {
            sql.appendLiteral(" AND e.callback_id > ")
            sql.appendInterpolation(cursor.callbackID)
            sql.appendLiteral("::bigint")
        }
        sql.appendLiteral("\n    ORDER BY e.callback_id\n    LIMIT ")
        sql.appendInterpolation(clampedLimit(page.limit) + 1)
        sql.appendLiteral(
            """

            )
            SELECT e.callback_id, \(JobStore.rfc3339("e.received_at")) AS received_at, c.callback_id IS NULL AS body_pruned,
                   \(JobStore.rfc3339("d.last_received_at")) AS last_received_at,
                   d.delivery_count, c.format, c.content_type, c.event_name, c.source, c.body_size,
                   e.state, e.applied, e.verification, e.verification_note
            FROM page e
            LEFT JOIN ci_callbacks c ON c.callback_id = e.callback_id AND c.received_at = e.received_at
            LEFT JOIN ci_callback_digests d ON d.body_sha256 = c.body_sha256
            ORDER BY e.callback_id
            """)
        return SQLQuery(stringInterpolation: sql)
    }

    /// Whether the job exists: a `ci_jobs` row, or history only (callbacks held for verification).
    ///
    /// The history half is the first event in key order, not `EXISTS`: for a job with many events the
    /// planner expects `EXISTS` to meet one early in a sequential scan, and with the order asked for it
    /// reads the primary key instead.
    static func known(jobID: String) -> SQLQuery {
        """
        SELECT EXISTS (SELECT 1 FROM ci_jobs WHERE job_id = \(jobID))
            OR (SELECT callback_id FROM ci_job_events WHERE job_id = \(jobID) ORDER BY callback_id LIMIT 1) IS NOT NULL AS known
        """
    }
}
