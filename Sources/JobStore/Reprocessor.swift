import CIModel
import Dispatch
import Foundation
import Logging
import PostgresLibPQ
import Synchronization
import TimeUnits

/// Which stored bodies a reprocess run covers.
public struct ReprocessScope: Sendable, Hashable {
    /// Bodies received at or after this instant.
    public var since: Date?
    /// Bodies received before this instant.
    public var until: Date?
    /// Only the callbacks in this job's history (a body that was refused names no job, so it is not among them).
    public var jobID: String?

    public init(since: Date? = nil, until: Date? = nil, jobID: String? = nil) {
        self.since = since
        self.until = until
        self.jobID = jobID
    }

    /// The checkpoint's key: one per set of arguments, so a run resumes only what the same command began.
    public var runKey: String {
        let micros = { (date: Date?) in date.map { String($0.microsecondsSince1970) } ?? "-" }
        return "since=\(micros(since)) until=\(micros(until)) job=\(jobID ?? "-")"
    }
}

/// What a reprocess run did so far; passed to the progress callback after every page.
public struct ReprocessCounts: Sendable, Hashable, CustomStringConvertible {
    /// Bodies in scope (counted at the start; after a resume, those still ahead).
    public var total = 0
    public var read = 0
    /// Jobs whose columns were written from a body (a new job, a decoder fix, a different winner).
    public var jobsApplied = 0
    /// History entries added or corrected.
    public var eventsWritten = 0
    /// Bodies once refused that now decode, and were applied.
    public var rejectedNowAccepted = 0
    /// Bodies refused before and still refused (or cut at the rejected-body limit, so never whole).
    public var stillRejected = 0
    /// Bodies accepted before that the current decoder refuses: left as they are, for an operator to look at.
    public var noLongerDecode = 0

    public init() {}

    public var description: String {
        "\(read) of \(total) bodies read; \(jobsApplied) jobs applied, \(eventsWritten) history entries written, "
            + "\(rejectedNowAccepted) refused bodies now accepted, \(stillRejected) still refused, \(noLongerDecode) no longer decode"
    }
}

/// Re-decodes stored raw bodies with the current decoder and re-applies them (issue 11 §3).
///
/// Bodies are read in `callback_id` order, a page at a time; each page is ONE transaction that also moves
/// the run's checkpoint (`ci_reprocess_checkpoints`), so an interrupted run loses at most the page it was
/// in and the same command resumes after the last committed page. Re-applying follows ingest's precedence
/// replayed in receive order (``ReprocessDecision``) and writes only what differs, so a second run changes
/// nothing. Delivery counters are not touched: no body arrives.
public struct Reprocessor: Sendable {
    public var conninfo: String
    public var settings: PostgresConnectionSettings
    /// Bodies per transaction. Default: 200.
    public var pageSize = 200
    public var logger: Logger

    public init(conninfo: String, settings: PostgresConnectionSettings, logger: Logger) {
        self.conninfo = conninfo
        self.settings = settings.forMigrations()
        self.logger = logger
    }

    /// Runs to the end of `scope`, or until the task is cancelled (between pages). With `dryRun` every
    /// page is rolled back, and no checkpoint is kept. `fromStart` forgets an earlier run's checkpoint.
    public func run(
        _ scope: ReprocessScope, dryRun: Bool = false, fromStart: Bool = false, progress: @escaping @Sendable (ReprocessCounts) -> Void = { _ in }
    ) async throws -> ReprocessCounts {
        let cancelled = CancellationFlag()
        return try await StoreUnavailableError.translatingErrors {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    // libpq blocks: the run gets a thread of Dispatch's, never one of Swift's cooperative pool.
                    DispatchQueue.global().async {
                        continuation.resume(
                            with: Result { try self.runBlocking(scope, dryRun: dryRun, fromStart: fromStart, cancelled: cancelled, progress: progress) })
                    }
                }
            } onCancel: {
                cancelled.set()
            }
        }
    }

    private struct DryRunRollback: Error {}

    func runBlocking(
        _ scope: ReprocessScope, dryRun: Bool, fromStart: Bool, cancelled: CancellationFlag, progress: (ReprocessCounts) -> Void
    ) throws -> ReprocessCounts {
        let connection = try PostgresConnection.connect(conninfo, settings: settings)
        defer { connection.close() }
        let key = scope.runKey
        if fromStart && !dryRun {
            _ = try connection.query("DELETE FROM ci_reprocess_checkpoints WHERE run_key = \(key)")
        }
        var after = try connection.query("SELECT after_callback_id FROM ci_reprocess_checkpoints WHERE run_key = \(key)").first
            .map { row throws(StoredRowError) in try StrictRow(row, read: "reprocess checkpoint").int64("after_callback_id") } ?? 0
        if after > 0 {
            logger.notice("resuming reprocess after callback \(after)", metadata: ["reprocess.run": "\(key)"])
        }
        var counts = ReprocessCounts()
        counts.total = Int(try StrictRow(connection.query(Self.countQuery(scope, after: after))[0], read: "reprocess count").int64("n"))
        progress(counts)
        while !cancelled.isSet {
            let page = try connection.query(Self.pageQuery(scope, after: after, limit: pageSize))
            guard !page.isEmpty else { break }
            var pageCounts = counts
            var last = after
            do {
                try connection.transaction { connection in
                    for row in page {
                        let body = try Self.storedBody(StrictRow(row, read: "reprocess body"))
                        try Self.reapply(body, on: connection, counts: &pageCounts)
                        last = body.callbackID
                    }
                    if dryRun { throw DryRunRollback() }
                    _ = try connection.query(
                        """
                        INSERT INTO ci_reprocess_checkpoints (run_key, after_callback_id, updated_at) VALUES (\(key), \(last)::int8, now())
                        ON CONFLICT (run_key) DO UPDATE SET after_callback_id = EXCLUDED.after_callback_id, updated_at = EXCLUDED.updated_at
                        """)
                }
            } catch is DryRunRollback {}
            counts = pageCounts
            after = last
            progress(counts)
        }
        if !cancelled.isSet && !dryRun {
            _ = try connection.query("DELETE FROM ci_reprocess_checkpoints WHERE run_key = \(key)")
        }
        if cancelled.isSet { throw CancellationError() }
        return counts
    }

    // MARK: One body

    struct Body {
        var callbackID: Int64
        var receivedMicros: Int64
        var bytes: [UInt8]
        var outcome: StoredOutcome
        var truncated: Bool
        var source: CallbackSource
    }

    static func storedBody(_ row: StrictRow) throws -> Body {
        Body(
            callbackID: try row.int64("callback_id"), receivedMicros: try row.int64("received_micros"), bytes: try row.bytes("body"),
            outcome: try row.value("outcome", as: StoredOutcome.self), truncated: try row.bool("body_truncated"),
            source: try row.value("source", as: CallbackSource.self))
    }

    /// Decodes `body` with the current decoder and writes what differs, inside the caller's transaction.
    static func reapply(_ body: Body, on connection: PostgresConnection, counts: inout ReprocessCounts) throws {
        counts.read += 1
        let envelope: CallbackEnvelope
        do throws(CallbackDecodingError) {
            // Callbacks went through the callback rule; CI's own answers (submit, reconcile) are envelopes.
            envelope = body.source == .callback ? try CallbackDecoder.decodeCallback(body.bytes) : try CallbackDecoder.decode(body.bytes)
        } catch {
            if body.outcome == .rejected { counts.stillRejected += 1 } else { counts.noLongerDecode += 1 }
            return
        }
        if body.truncated {
            counts.stillRejected += 1
            return
        }
        let receivedAt = "('epoch'::timestamptz + \(body.receivedMicros)::int8 * interval '1 microsecond')"
        let jobs = JobStore.deduplicatedByJobID(envelope.jobs)
        let outcome: StoredOutcome = jobs.isEmpty ? .noJobs : .accepted
        let updated = try connection.query(
            """
            UPDATE ci_callbacks SET outcome = \(outcome.rawValue), rejection_reason = NULL, format = \(envelope.format.rawValue),
                   event_name = \(envelope.eventName), job_count = \(jobs.count)
            WHERE callback_id = \(body.callbackID)::int8 AND received_at = \(unsafeRaw: receivedAt)
              AND (outcome, rejection_reason, format, event_name, job_count)
                  IS DISTINCT FROM (\(outcome.rawValue), NULL::text, \(envelope.format.rawValue), \(envelope.eventName), \(jobs.count)::int)
            RETURNING 1
            """)
        if body.outcome == .rejected && !updated.isEmpty { counts.rejectedNowAccepted += 1 }
        guard !jobs.isEmpty else { return }

        let jobIDs = jobs.map(\.jobID)
        // Lock the jobs in one order, as ingest does, before reading what decides.
        _ = try connection.query("SELECT job_id FROM ci_jobs WHERE job_id = ANY(\(jobIDs)::text[]) ORDER BY job_id FOR UPDATE")
        let rows = try connection.query(
            """
            SELECT i.job_id, e.job_id IS NOT NULL AS has_event, e.state AS event_state, e.verification,
                   j.state_callback_id, j.state_rank, (extract(epoch FROM ce.received_at) * 1000000)::int8 AS current_micros
            FROM unnest(\(jobIDs)::text[]) AS i(job_id)
            LEFT JOIN ci_jobs j ON j.job_id = i.job_id
            LEFT JOIN ci_job_events e ON e.job_id = i.job_id AND e.callback_id = \(body.callbackID)::int8 AND e.received_at = \(unsafeRaw: receivedAt)
            LEFT JOIN ci_job_events ce ON ce.job_id = j.job_id AND ce.callback_id = j.state_callback_id
            """)
        var stored: [String: StrictRow] = [:]
        for row in rows {
            let row = StrictRow(row, read: "reprocess jobs")
            stored[try row.string("job_id")] = row
        }
        for job in jobs {
            guard let row = stored[job.jobID] else { continue }
            let current = try row.optionalInt("state_callback_id").map { callbackID throws(StoredRowError) in
                ReprocessDecision.Current(
                    callbackID: Int64(callbackID), stateRank: try row.int("state_rank"),
                    receivedMicros: try row.optionalInt("current_micros").map(Int64.init))
            }
            let hasEvent = try row.bool("has_event")
            let decision = ReprocessDecision.decide(
                incoming: job.state, callbackID: body.callbackID, receivedMicros: body.receivedMicros, hasEvent: hasEvent,
                verification: try row.optionalString("verification"), current: current)
            let applies: Bool
            switch decision {
            case .skipVerification:
                continue
            case .apply(let newEvent):
                applies = true
                let written = try connection.query(
                    SQLQuery(
                        unsafeSQL: ReprocessSQL.apply,
                        binds: [
                            .text(JobStore.jobsJSON([job])), .text(String(body.callbackID)), .text(body.source.rawValue),
                            .text(String(body.receivedMicros)), .text(newEvent ? "1" : "0"),
                        ]))
                counts.jobsApplied += written.count
            case .record:
                applies = false
                _ = try connection.query(
                    """
                    UPDATE ci_jobs SET callback_count = callback_count + 1, first_received_at = least(first_received_at, \(unsafeRaw: receivedAt)),
                           last_received_at = greatest(last_received_at, \(unsafeRaw: receivedAt))
                    WHERE job_id = \(job.jobID)
                    """)
            case .keep:
                applies = false
            }
            let event: PostgresRows
            if hasEvent {
                event = try connection.query(
                    """
                    UPDATE ci_job_events SET state = \(job.state.rawValue), applied = applied OR \(applies)
                    WHERE job_id = \(job.jobID) AND callback_id = \(body.callbackID)::int8 AND received_at = \(unsafeRaw: receivedAt)
                      AND (state, applied) IS DISTINCT FROM (\(job.state.rawValue), applied OR \(applies))
                    RETURNING 1
                    """)
            } else {
                event = try connection.query(
                    """
                    INSERT INTO ci_job_events (job_id, callback_id, state, applied, received_at)
                    VALUES (\(job.jobID), \(body.callbackID)::int8, \(job.state.rawValue), \(applies), \(unsafeRaw: receivedAt))
                    ON CONFLICT DO NOTHING
                    RETURNING 1
                    """)
            }
            counts.eventsWritten += event.count
        }
    }

    // MARK: Reading bodies

    static func pageQuery(_ scope: ReprocessScope, after: Int64, limit: Int) -> SQLQuery {
        var sql = SQLQuery.StringInterpolation(literalCapacity: 512, interpolationCount: 5)
        sql.appendLiteral(
            """
            SELECT c.callback_id, (extract(epoch FROM c.received_at) * 1000000)::int8 AS received_micros, c.body, c.outcome,
                   c.body_truncated, c.source
            FROM ci_callbacks c
            """)
        appendFilters(scope, after: after, into: &sql)
        sql.appendLiteral(" ORDER BY c.callback_id LIMIT ")
        sql.appendInterpolation(limit)
        return SQLQuery(stringInterpolation: sql)
    }

    static func countQuery(_ scope: ReprocessScope, after: Int64) -> SQLQuery {
        var sql = SQLQuery.StringInterpolation(literalCapacity: 256, interpolationCount: 4)
        sql.appendLiteral("SELECT count(*)::int8 AS n FROM ci_callbacks c")
        appendFilters(scope, after: after, into: &sql)
        return SQLQuery(stringInterpolation: sql)
    }

    private static func appendFilters(_ scope: ReprocessScope, after: Int64, into sql: inout SQLQuery.StringInterpolation) {
        sql.appendLiteral(" WHERE c.callback_id > ")
        sql.appendInterpolation(after)
        sql.appendLiteral("::int8")
        if let since = scope.since {
            sql.appendLiteral(" AND c.received_at >= ('epoch'::timestamptz + ")
            sql.appendInterpolation(since.microsecondsSince1970)
            sql.appendLiteral("::int8 * interval '1 microsecond')")
        }
        if let until = scope.until {
            sql.appendLiteral(" AND c.received_at < ('epoch'::timestamptz + ")
            sql.appendInterpolation(until.microsecondsSince1970)
            sql.appendLiteral("::int8 * interval '1 microsecond')")
        }
        if let jobID = scope.jobID {
            sql.appendLiteral(" AND EXISTS (SELECT 1 FROM ci_job_events e WHERE e.job_id = ")
            sql.appendInterpolation(jobID)
            sql.appendLiteral(" AND e.callback_id = c.callback_id AND e.received_at = c.received_at)")
        }
    }
}

/// The job write of a reprocessed callback that wins under ``ReprocessDecision``: the columns ingest would
/// write from it, with the callback's own receive time; nothing when they already hold exactly that.
enum ReprocessSQL {
    static let apply: String = {
        let at = JobUpsertSQL.instant("$4")
        let columns = JobUpsertSQL.precedenceColumns
        let insertColumns = (["job_id"] + columns).joined(separator: ", ")
        let selectColumns = (["job_id"] + columns).map { "t.\($0)" }.joined(separator: ", ")
        let replaced = (columns + ["state_callback_id", "state_source"]).map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", ")
        let stored = (columns + ["state_callback_id", "state_source"]).map { "j.\($0)" }.joined(separator: ", ")
        let incoming = (columns + ["state_callback_id", "state_source"]).map { "EXCLUDED.\($0)" }.joined(separator: ", ")
        return """
            INSERT INTO ci_jobs AS j (\(insertColumns), state_callback_id, state_source,
                                      first_received_at, last_received_at, state_changed_at, callback_count)
            SELECT \(selectColumns), $2::int8, $3, \(at), \(at), \(at), 1
            FROM \(JobUpsertSQL.recordset("$1"))
            ON CONFLICT (job_id) DO UPDATE SET
                \(replaced),
                state_changed_at = CASE WHEN EXCLUDED.state IS DISTINCT FROM j.state THEN EXCLUDED.state_changed_at ELSE j.state_changed_at END,
                callback_count = j.callback_count + $5::int,
                first_received_at = least(j.first_received_at, EXCLUDED.first_received_at),
                last_received_at = greatest(j.last_received_at, EXCLUDED.last_received_at)
            WHERE $5::int > 0 OR ROW(\(stored)) IS DISTINCT FROM ROW(\(incoming))
            RETURNING j.job_id
            """
    }()
}

/// Set once when the run's task is cancelled; read by the run's thread between pages.
final class CancellationFlag: Sendable {
    // An atomic rather than a lock: one writer, one reader, a single bit.
    private let flag = Atomic<Bool>(false)

    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}
