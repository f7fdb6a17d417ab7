import CIModel
import Foundation
import PostgresLibPQ

/// Wakes the callback verifier when a commit held a final state for it, so verification starts at once
/// instead of at the next periodic sweep.
public typealias VerificationSignal = WakeSignal

/// Wakes a background worker (the callback verifier, the event sequencer, the delivery workers) when there
/// is work for it, so it starts at once instead of at its next periodic sweep.
///
/// A stream that keeps at most one wake-up: signals that arrive while the worker is busy collapse
/// into one, which is enough because each pass takes everything pending. Signalling never blocks.
public final class WakeSignal: Sendable {
    /// The worker's side: one element per (coalesced) wake-up; ends after ``finish()``.
    public let wakeups: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    public init() {
        (wakeups, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for a pass.
    public func signal() {
        continuation.yield()
    }

    /// Raises the signal every `interval` until the task is cancelled: a worker's periodic sweep, which
    /// collapses into the next pass like any other wake-up.
    public func signalEvery(_ interval: Duration) async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            signal()
        }
    }

    /// Ends ``wakeups``; later signals are ignored.
    public func finish() {
        continuation.finish()
    }
}

/// A callback's final state for one job, held until CI confirms it.
public struct PendingVerification: Sendable, Hashable {
    public var jobID: String
    public var callbackID: Int64
    /// The state the callback reported.
    public var claimedState: JobState
    /// Who sent the callback (for the contradiction's log line).
    public var remoteAddress: String?
    /// When the callback arrived: microseconds since the Unix epoch.
    public var receivedMicros: Int64

    public init(jobID: String, callbackID: Int64, claimedState: JobState, remoteAddress: String?, receivedMicros: Int64) {
        self.jobID = jobID
        self.callbackID = callbackID
        self.claimedState = claimedState
        self.remoteAddress = remoteAddress
        self.receivedMicros = receivedMicros
    }
}

/// What applying a confirmed callback did.
public struct ConfirmedVerification: Sendable, Hashable {
    /// Whether the callback's JobsDetail became the job's current one (precedence may keep another final
    /// state that arrived meanwhile).
    public var applied: Bool
    /// The job's state afterwards.
    public var currentState: JobState?
}

/// How many callbacks wait for verification.
public struct VerificationBacklog: Sendable, Hashable {
    /// Pending events (one per job and callback).
    public var pending: Int
    /// When the oldest pending callback arrived (microseconds since the Unix epoch); nil when none waits.
    public var oldestReceivedMicros: Int64?
}

extension JobStore {
    /// Pending events of the `maxJobs` jobs whose oldest pending callback is oldest, oldest first; every
    /// pending event of each such job is included, so one DescribeMediaJob answer settles them all.
    ///
    /// Served by the partial index `ci_job_events_pending_idx`: the scan is as small as the queue.
    /// - Parameter excluding: JobIds to leave out, such as those whose check just failed, so one job CI
    ///   keeps refusing cannot hold up the jobs behind it.
    public func pendingVerifications(maxJobs: Int, excluding: [String] = []) async throws -> [PendingVerification] {
        let limit = max(maxJobs, 1)
        return try await withConnection { connection in
            try connection.query(
                """
                WITH oldest AS (
                    SELECT job_id, min(received_at) AS first_pending
                    FROM ci_job_events
                    WHERE verification = 'pending' AND NOT (job_id = ANY (\(excluding)))
                    GROUP BY job_id
                    ORDER BY first_pending, job_id
                    LIMIT \(limit)
                )
                SELECT e.job_id, e.callback_id, e.state, c.remote_address,
                       (extract(epoch FROM e.received_at) * 1000000)::bigint AS received_micros
                FROM oldest o
                JOIN ci_job_events e ON e.job_id = o.job_id AND e.verification = 'pending'
                LEFT JOIN ci_callbacks c ON c.callback_id = e.callback_id AND c.received_at = e.received_at
                ORDER BY o.first_pending, e.job_id, e.received_at, e.callback_id
                """
            ).strict("pending verifications") { row throws(StoredRowError) in
                PendingVerification(
                    jobID: try row.string("job_id"), callbackID: try row.int64("callback_id"),
                    claimedState: JobState(rawValue: try row.string("state")),
                    remoteAddress: try row.optionalString("remote_address"), receivedMicros: try row.int64("received_micros"))
            }
        }
    }

    /// Applies a callback CI confirmed: upserts the job from the callback's own JobsDetail, under exactly
    /// the ingest statement's precedence rule (the upsert text is generated from the same place), and
    /// marks the event `confirmed` — one statement, so both happen or neither.
    ///
    /// The JobsDetail is read back by decoding the stored body with ``CIModel/CallbackDecoder``: the body
    /// is what the history serves, it is kept whole for accepted callbacks, and decoding it again gives
    /// exactly the record ingest would have written, without storing a second copy of every held job.
    ///
    /// Idempotent, so several replicas may confirm the same event: the statement locks the event row and
    /// proceeds only while it is still `pending`; a replica that comes second finds it settled and writes
    /// nothing.
    ///
    /// - Returns: nil when the event is no longer pending (another replica settled it).
    public func confirmVerification(_ pending: PendingVerification, verifiedAt: Date = Date()) async throws -> ConfirmedVerification? {
        let verifiedMicros = Self.epochMicros(verifiedAt)
        let confirmed = try await withConnection { connection -> ConfirmedVerification? in
            let stored = try connection.query(
                """
                SELECT c.body FROM ci_job_events e JOIN ci_callbacks c ON c.callback_id = e.callback_id AND c.received_at = e.received_at
                WHERE e.job_id = \(pending.jobID) AND e.callback_id = \(pending.callbackID)
                """)
            guard let stored = stored.first else { return nil }
            let body = try StrictRow(stored, read: "held callback body").bytes("body")
            let envelope: CallbackEnvelope
            do throws(CallbackDecodingError) {
                envelope = try CallbackDecoder.decode(body)
            } catch {
                throw JobStoreError("callback \(pending.callbackID) held for verification no longer decodes: \(error.reason)")
            }
            guard let job = Self.deduplicatedByJobID(envelope.jobs).first(where: { $0.jobID == pending.jobID }) else {
                throw JobStoreError("callback \(pending.callbackID) held for verification does not name its job")
            }
            let rows = try connection.query(
                SQLQuery(
                    unsafeSQL: VerificationSQL.confirm,
                    binds: [
                        .text(String(pending.callbackID)), .text(pending.jobID), .text(Self.jobsJSON([job])), .text(String(verifiedMicros)),
                    ]))
            guard let row = rows.first else { return nil }
            let strict = StrictRow(row, read: "confirmed verification")
            return ConfirmedVerification(
                applied: try strict.bool("applied"), currentState: try strict.optionalString("current_state").map(JobState.init(rawValue:)))
        }
        if confirmed?.applied == true {
            stateEventSignal?.signal()
        }
        return confirmed
    }

    /// Marks a held callback `contradicted`, with `note` saying what CI answered; the job is left alone.
    ///
    /// - Returns: false when the event was no longer pending (another replica settled it), so only one
    ///   replica counts and logs each contradiction.
    public func contradictVerification(_ pending: PendingVerification, note: String, verifiedAt: Date = Date()) async throws -> Bool {
        let verifiedMicros = Self.epochMicros(verifiedAt)
        return try await withConnection { connection in
            let marked = try connection.query(
                """
                UPDATE ci_job_events
                SET verification = 'contradicted', verification_note = \(note),
                    verified_at = 'epoch'::timestamptz + \(verifiedMicros)::bigint * interval '1 microsecond'
                WHERE job_id = \(pending.jobID) AND callback_id = \(pending.callbackID) AND verification = 'pending'
                RETURNING job_id
                """
            )
            return !marked.isEmpty
        }
    }

    /// How many callbacks wait for verification, and since when.
    public func verificationBacklog() async throws -> VerificationBacklog {
        try await withConnection { connection in
            // An aggregate without GROUP BY answers exactly one row.
            let row = StrictRow(
                try connection.query(
                    """
                    SELECT count(*) AS pending, (extract(epoch FROM min(received_at)) * 1000000)::bigint AS oldest_micros
                    FROM ci_job_events
                    WHERE verification = 'pending'
                    """
                )[0], read: "verification backlog")
            return VerificationBacklog(pending: try row.int("pending"), oldestReceivedMicros: try row.optionalInt("oldest_micros").map(Int64.init))
        }
    }
}

/// The statement that applies a confirmed callback; see ``JobStore/confirmVerification(_:verifiedAt:)``.
///
/// `$1` callback id, `$2` JobId, `$3` the job's record (``JobStore/jobsJSON(_:holdingFinalStates:)``),
/// `$4` the verification time in microseconds since the epoch.
enum VerificationSQL {
    static let confirm: String = {
        let verifiedAt = JobUpsertSQL.instant("$4")
        // The state changes now, when it is confirmed; the receipt times are the callback's own.
        let upsert = JobUpsertSQL.upsert(
            from: "FROM incoming i JOIN ev ON ev.job_id = i.job_id",
            callbackID: "ev.callback_id", source: "ev.source", receivedAt: "ev.received_at", changedAt: verifiedAt)
        return """
            WITH ev AS (
                SELECT e.job_id, e.callback_id, e.received_at, c.source
                FROM ci_job_events e JOIN ci_callbacks c ON c.callback_id = e.callback_id AND c.received_at = e.received_at
                WHERE e.job_id = $2 AND e.callback_id = $1::bigint AND e.verification = 'pending'
                FOR UPDATE OF e
            ), incoming AS (
                SELECT * FROM \(JobUpsertSQL.recordset("$3"))
            ), upserted AS (
                \(upsert)
            ), marked AS (
                UPDATE ci_job_events e
                SET verification = 'confirmed', verified_at = \(verifiedAt),
                    applied = coalesce(u.state_callback_id = e.callback_id, false)
                FROM ev LEFT JOIN upserted u ON u.job_id = ev.job_id
                WHERE e.job_id = ev.job_id AND e.callback_id = ev.callback_id
                RETURNING e.job_id, e.applied
            )
            SELECT m.applied, coalesce(u.state, (SELECT j.state FROM ci_jobs j WHERE j.job_id = m.job_id)) AS current_state
            FROM marked m LEFT JOIN upserted u ON u.job_id = m.job_id
            """
    }()
}
