import CIModel
import CoreMetrics
import Foundation
import Logging
import PostgresLibPQ

/// The service's PostgreSQL repository: stores callbacks and answers lookups.
///
/// Every operation runs on a pooled connection's own thread (libpq blocks), so callers on Swift's
/// cooperative pool only await. Callbacks are written through an ``IngestBatcher`` (group commit).
///
/// A class, made once per process and shared by the HTTP API and the background workers: it owns the
/// batchers, whose limits (``IngestBatcher/Configuration/maxConcurrentBatches`` committers, one lookup
/// runner) hold for the process only if there is one of each, and whose statistics then cover all ingest.
public final class JobStore: Sendable {
    public let pool: PostgresPool
    /// Rejected bodies are kept for operators, but only up to this many bytes.
    public let rejectedBodyLimit: Int
    /// Writes callbacks that arrive together in one transaction.
    public let batcher: IngestBatcher
    /// Set when callbacks are verified (`VERIFY_CALLBACKS`): a final state a callback reports is then held
    /// for the verifier instead of becoming the job's state, and this is signalled after each commit that
    /// held one. Answers CI itself gave (submit, reconcile) are never held.
    public let verificationSignal: VerificationSignal?
    /// Raised after each commit that changed a job's state, and so wrote an event into the outbox
    /// (migration 0008's trigger): the event sequencer then positions it at once. In-process rather than a
    /// NOTIFY from the trigger, because a notifying transaction holds a database-wide lock through its
    /// commit, which would serialise the ingest committers. A change committed by another process (another
    /// replica, `ci-callbackd reprocess`) is positioned by that replica's sequencer or at the next interval.
    public let stateEventSignal: WakeSignal?
    /// The hot standby that answers lookups and listings when it is fresh enough (`READ_DATABASE_URL`);
    /// nil: every read goes to ``pool``.
    public let readStandby: ReadStandby?
    /// Answers lookups by JobId that arrive together with one query (`job_id = ANY($1)`).
    private let jobLookups: PoolBatcher<String, StoredJob?>
    /// Bounds the listings holding a connection at once (job lists, histories, rejected callbacks).
    public let listings: ListingLimit

    /// Lookups by JobId waiting for a batch right now.
    public var queuedLookups: Int { jobLookups.queued }

    /// The store's connections and queues right now, for `/metrics`.
    public var statistics: StoreStatistics {
        let pool = pool.statistics
        let listings = listings.usage
        return StoreStatistics(
            poolSize: pool.size, poolOpen: pool.open, poolInUse: pool.inUse, poolWaiting: pool.waiting,
            poolWaitSeconds: pool.totalWaitSeconds, poolAcquired: pool.acquired, statementsPrepared: pool.statementsPrepared,
            ingestQueued: batcher.statistics.queued, lookupsQueued: jobLookups.queued,
            listingsActive: listings.active, listingsWaiting: listings.waiting,
            readPool: readStandby.map { standby in
                let pool = standby.pool.statistics
                return ReadPoolStatistics(
                    poolSize: pool.size, poolOpen: pool.open, poolInUse: pool.inUse, poolWaiting: pool.waiting,
                    statementsPrepared: pool.statementsPrepared, standby: standby.status)
            })
    }

    /// Most JobIds in one batched lookup query.
    static let maxLookupBatch = 64

    /// - Parameters:
    ///   - logger: Where the ingest batcher reports lost connections and failed batches.
    ///   - metricsFactory: Where the ingest batch metrics go (``IngestBatcher``); the global factory by default.
    ///   - readPool: Connections to a hot standby of `pool`'s database, for reads (``ReadStandby``).
    ///   - listing: How many listings may hold a connection at once, and wait for one (``ListingLimit``).
    public init(
        pool: PostgresPool, rejectedBodyLimit: Int = 64 * 1024, batching: IngestBatcher.Configuration = IngestBatcher.Configuration(),
        verificationSignal: VerificationSignal? = nil, stateEventSignal: WakeSignal? = nil, logger: Logger, metricsFactory: any MetricsFactory = MetricsSystem.factory,
        readPool: PostgresPool? = nil, readRouting: ReadStandby.Configuration = ReadStandby.Configuration(),
        listing: ListingLimit.Configuration = ListingLimit.Configuration()
    ) {
        self.pool = pool
        let batcher = IngestBatcher(pool: pool, configuration: batching, logger: logger, metricsFactory: metricsFactory)
        self.batcher = batcher
        // Callbacks queued behind the batches being written: ingest is short of the database's capacity.
        self.listings = ListingLimit(listing, maxWait: pool.configuration.acquireTimeout) { batcher.queuedCallbacks > 0 }
        self.readStandby = readPool.map { ReadStandby(pool: $0, configuration: readRouting, metricsFactory: metricsFactory) }
        self.rejectedBodyLimit = rejectedBodyLimit
        self.verificationSignal = verificationSignal
        self.stateEventSignal = stateEventSignal
        // One lookup batch at a time: a primary-key query for 64 ids costs PostgreSQL little more than for
        // one, so a single runner keeps batches large (measured: 0.029 against 0.032 ms service CPU and
        // 0.011 against 0.014 ms PostgreSQL CPU per lookup with two, at equal latency), and the rest of
        // the pool stays free for ingest and listings.
        self.jobLookups = PoolBatcher(pool: pool, maxBatchSize: Self.maxLookupBatch, maxConcurrentBatches: 1, process: Self.lookUpJobs)
    }

    // MARK: Writing

    /// Stores a decoded callback and applies each of its jobs under the precedence rules, in one
    /// statement, committed together with the callbacks that arrive at the same time (group commit).
    /// Returns only after the commit.
    ///
    /// With a ``verificationSignal``, the final states of a `callback` body are stored in the history as
    /// pending instead (``JobReceipt/heldForVerification``), and the signal is raised after the commit.
    public func ingest(_ envelope: CallbackEnvelope, body: ReceivedBody) async throws -> IngestResult {
        try await ingest(prepareIngest(envelope, body: body))
    }

    /// A decoded callback turned into what ``ingest(_:)`` writes: the body and its job records, without
    /// the decoded tree.
    ///
    /// Made synchronously, so that a caller can let go of the decoded envelope before it waits for the
    /// commit: the tree of a body with many small elements takes several times the body's size, and
    /// under a burst of large bodies most of them wait in the batcher's queue at once.
    public struct PreparedIngest: Sendable {
        let record: IngestRecord
        let receivedStates: [String: JobState]
    }

    /// What ``ingest(_:)`` needs to store `envelope`; see ``PreparedIngest``.
    public func prepareIngest(_ envelope: CallbackEnvelope, body: ReceivedBody) -> PreparedIngest {
        let jobs = Self.deduplicatedByJobID(envelope.jobs)
        let hold = verificationSignal != nil && body.source == .callback
        let record = IngestRecord(
            body: body.bytes,
            bodySize: body.bytes.count,
            truncated: false,
            format: envelope.format,
            contentType: body.contentType,
            remoteAddress: body.remoteAddress,
            eventName: envelope.eventName,
            outcome: jobs.isEmpty ? .noJobs : .accepted,
            rejectionReason: nil,
            source: body.source,
            jobsJSON: Self.jobsJSON(jobs, holdingFinalStates: hold),
            jobCount: jobs.count,
            receivedAt: body.receivedAt,
            lockKey: jobs.first?.jobID ?? "",
            jobIDs: jobs.map(\.jobID)
        )
        return PreparedIngest(record: record, receivedStates: Dictionary(jobs.map { ($0.jobID, $0.state) }, uniquingKeysWith: { $1 }))
    }

    /// Stores a prepared callback (see ``ingest(_:body:)``); returns only after the commit.
    public func ingest(_ prepared: PreparedIngest) async throws -> IngestResult {
        let result = try await write(prepared.record, receivedStates: prepared.receivedStates)
        if result.jobs.contains(where: \.heldForVerification) {
            verificationSignal?.signal()
        }
        if result.jobs.contains(where: \.applied) {
            stateEventSignal?.signal()
        }
        return result
    }

    /// Stores a body that could not be accepted, capped at `rejectedBodyLimit`, so an operator can see
    /// what was sent. Identical rejected bodies are counted, not stored twice.
    @discardableResult
    public func recordRejected(_ body: ReceivedBody, format: CallbackFormat?, reason: String) async throws -> Int64 {
        let kept = Array(body.bytes.prefix(rejectedBodyLimit))
        let record = IngestRecord(
            body: kept,
            bodySize: body.bytes.count,
            truncated: kept.count < body.bytes.count,
            format: format,
            contentType: body.contentType,
            remoteAddress: body.remoteAddress,
            eventName: nil,
            outcome: .rejected,
            rejectionReason: reason,
            source: body.source,
            jobsJSON: "[]",
            jobCount: 0,
            receivedAt: body.receivedAt,
            lockKey: "",
            jobIDs: []
        )
        return try await write(record, receivedStates: [:]).callbackID
    }

    private func write(_ record: IngestRecord, receivedStates: [String: JobState]) async throws -> IngestResult {
        let rows = try await translatingErrors { try await batcher.submit(record) }
        guard let first = rows.first else {
            throw JobStoreError("the ingest statement returned no callback row")
        }
        let head = StrictRow(first, read: "ingest result")
        let callbackID = try head.int64("callback_id")
        let duplicate = try !head.bool("inserted")
        var receipts: [JobReceipt] = []
        for row in rows {
            let row = StrictRow(row, read: "ingest result")
            // NULL for a body without jobs: the statement's one row then carries only the callback.
            guard let jobID = try row.optionalString("job_id") else { continue }
            let received = try receivedStates[jobID] ?? JobState(rawValue: row.string("received_state"))
            let held = try row.bool("held")
            // A held job the store had never seen has no current state yet.
            let current = try row.optionalString("current_state").map(JobState.init(rawValue:)) ?? (held ? nil : received)
            receipts.append(
                JobReceipt(jobID: jobID, receivedState: received, currentState: current, applied: try row.bool("applied"), heldForVerification: held))
        }
        // After the commit: reads of these jobs go to the primary until the standby has replayed it.
        readStandby?.acknowledged(receipts.map(\.jobID))
        return IngestResult(callbackID: callbackID, duplicate: duplicate, jobs: receipts)
    }

    /// A body may name a job twice (CI's list responses can); one statement cannot upsert a row twice,
    /// so the occurrence with the highest precedence (the later one among equals) is kept. Sorting by
    /// JobId makes concurrent multi-job callbacks lock rows in one order, which rules out deadlocks.
    static func deduplicatedByJobID(_ jobs: [JobsDetail]) -> [JobsDetail] {
        var byID: [String: JobsDetail] = [:]
        for job in jobs {
            if let existing = byID[job.jobID], !existing.state.allowsReplacement(by: job.state) { continue }
            byID[job.jobID] = job
        }
        return byID.values.sorted { $0.jobID < $1.jobID }
    }

    /// The jobs as a JSON array whose keys are the `ci_jobs` column names, read by `jsonb_to_recordset`.
    /// One parameter carries any number of jobs, and absent keys become NULL.
    ///
    /// With `holdingFinalStates`, each job in a final state also carries `"held":true`, which makes the
    /// ingest statement record it as pending verification instead of applying it. The flag travels inside
    /// the record rather than as a bind of its own, so a record retried alone by ``IngestBatcher`` keeps it
    /// and the statement keeps its parameter list.
    static func jobsJSON(_ jobs: [JobsDetail], holdingFinalStates: Bool = false) -> String {
        var json = JSONWriter(reservingCapacity: 512 * max(jobs.count, 1))
        json.beginArray()
        for job in jobs {
            json.beginObject()
            json.member("job_id", job.jobID)
            json.member("state", job.state.rawValue)
            json.member("state_rank", job.state.precedence)
            json.member("is_final", job.state.isFinal)
            json.optionalMember("code", job.code)
            json.optionalMember("message", job.message)
            json.optionalMember("tag", job.tag)
            json.optionalMember("sub_tag", job.subTag)
            json.optionalMember("queue_id", job.queueID)
            json.optionalMember("queue_type", job.queueType)
            // CI documents Progress 0–100 and JobLevel 0–2; other values stay in `detail` but not in the
            // integer columns, so an odd number from a sender can never fail the whole callback.
            if let progress = job.progress, (0...100).contains(progress) { json.member("progress", progress) }
            json.optionalMember("creation_time", job.creationTime?.rfc3339)
            json.optionalMember("start_time", job.startTime?.rfc3339)
            json.optionalMember("end_time", job.endTime?.rfc3339)
            json.optionalMember("input_bucket", job.input?.bucketID)
            json.optionalMember("input_object", job.input?.object)
            json.optionalMember("input_region", job.input?.region)
            json.optionalMember("user_data", job.userData)
            if let level = job.jobLevel, (0...2).contains(level) { json.member("job_level", level) }
            json.member("has_watermark", job.isWatermarkExtraction)
            json.optionalMember("watermark_type", job.watermark?.type)
            json.optionalMember("watermark_version", job.watermark?.version)
            json.optionalMember("watermark_message", job.watermark?.message)
            json.optionalMember("workflow_id", job.workflow?.workflowID)
            json.optionalMember("workflow_run_id", job.workflow?.runID)
            json.key("detail")
            CINodeJSON.encode(job.normalized, into: &json)
            if holdingFinalStates && job.state.isFinal { json.member("held", true) }
            json.endObject()
        }
        json.endArray()
        return json.string
    }

    /// The statement `ingest` runs, with `$1`…`$13` as documented on `IngestRecord.query`.
    public static var ingestStatementSQL: String { IngestRecord.sql }

    /// The jobs parameter (`$13`) `ingest` binds for `envelope`.
    public static func jobsParameter(for envelope: CallbackEnvelope) -> String {
        jobsJSON(deduplicatedByJobID(envelope.jobs))
    }

    // MARK: Reading

    /// The job with this JobId, or nil; from the standby when it is fresh enough (see ``ReadStandby``) unless
    /// `requirePrimary` (a `?wait=`, woken by the primary's NOTIFY, must read what that commit wrote).
    ///
    /// Lookups that arrive together share one query and one pool hand-off (``PoolBatcher``): under load
    /// that, not the query itself, is most of a lookup's cost.
    public func job(_ jobID: String, requirePrimary: Bool = false) async throws -> StoredJob? {
        try await routedRead(
            jobID: jobID, requirePrimary: requirePrimary,
            primary: { try await self.translatingErrors { try await self.jobLookups.submit(jobID) } },
            standby: { standby in try await self.translatingErrors { try await standby.lookups.submit(jobID) } },
            complete: { $0 != nil })
    }

    /// Answers one batch of lookups with one query. A failed query fails the batch's members (a lost
    /// connection is left to ``PoolBatcher``, which retries them once on a fresh connection).
    static func lookUpJobs(
        _ batch: [PoolBatcher<String, StoredJob?>.Member], on connection: PostgresConnection
    ) -> (error: any Error, unfinished: [PoolBatcher<String, StoredJob?>.Member])? {
        var jobIDs: [String] = []
        jobIDs.reserveCapacity(batch.count)
        var seen = Set<String>(minimumCapacity: batch.count)
        for member in batch where seen.insert(member.item).inserted {
            jobIDs.append(member.item)
        }
        let rows: PostgresRows
        do throws(PostgresError) {
            rows = try connection.query(
                "SELECT \(unsafeRaw: Self.jobColumns) FROM ci_jobs WHERE job_id = ANY(\(PostgresValue.textArray(jobIDs))::text[])"
            )
        } catch {
            if error.isConnectionProblem || !connection.isHealthy { return (error, batch) }
            for member in batch { member.resume(throwing: error) }
            return nil
        }
        var found: [String: Result<StoredJob, StoredRowError>] = Dictionary(minimumCapacity: rows.count)
        for row in rows {
            let strict = StrictRow(row, read: "job lookup")
            let jobID: String
            do throws(StoredRowError) {
                jobID = try strict.string("job_id")
            } catch {
                // Without its JobId the row cannot be matched to a member: the whole batch fails.
                for member in batch { member.resume(throwing: error) }
                return nil
            }
            found[jobID] = Result { () throws(StoredRowError) in try Self.storedJob(strict) }
        }
        for member in batch {
            switch found[member.item] {
            case nil: member.resume(returning: nil)
            case .success(let job): member.resume(returning: job)
            case .failure(let error): member.resume(throwing: error)
            }
        }
        return nil
    }

    /// The raw body of one of the job's callbacks: `.unknown` unless that callback mentioned that job, and
    /// `.pruned` when the history names it but retention has dropped the body.
    public func callbackBody(jobID: String, callbackID: Int64) async throws -> CallbackBodyLookup {
        try await routedRead(jobID: jobID) { connection in
            let rows = try connection.query(
                """
                SELECT c.callback_id IS NULL AS pruned, c.body, c.content_type, c.format, c.body_truncated
                FROM ci_job_events e
                LEFT JOIN ci_callbacks c ON c.callback_id = e.callback_id AND c.received_at = e.received_at
                WHERE e.job_id = \(jobID) AND e.callback_id = \(callbackID)
                """
            )
            guard let first = rows.first else { return .unknown }
            let row = StrictRow(first, read: "callback body")
            if try row.bool("pruned") { return .pruned }
            return .stored(
                StoredBody(
                    bytes: try row.bytes("body"),
                    contentType: try row.optionalString("content_type"),
                    format: try row.optionalValue("format", as: CallbackFormat.self),
                    truncated: try row.bool("body_truncated")
                ))
        } complete: { lookup in
            // A body the standby calls unknown or pruned may be on the primary (a newer callback).
            if case .stored = lookup { true } else { false }
        }
    }

    /// The schema version the database is at (0 before the first migration).
    public func schemaVersion() async throws -> Int {
        try await withConnection { connection in try Migrator.currentVersion(connection) }
    }

    // MARK: SQL

    static func rfc3339(_ column: String) -> String {
        "to_char(\(column) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    }

    static let jobColumns = """
        job_id, state, tag, detail::text AS detail, has_watermark, watermark_type, watermark_version, watermark_message,
        \(rfc3339("first_received_at")) AS first_received_at, \(rfc3339("last_received_at")) AS last_received_at,
        \(rfc3339("state_changed_at")) AS state_changed_at, callback_count, state_source
        """

    /// A row of ``jobColumns``; every column the schema declares NOT NULL must be present and non-NULL.
    static func storedJob(_ row: StrictRow) throws(StoredRowError) -> StoredJob {
        StoredJob(
            jobID: try row.string("job_id"),
            state: JobState(rawValue: try row.string("state")),
            tag: try row.optionalString("tag"),
            detailJSON: JSONBText.compact(try row.string("detail")),
            hasWatermark: try row.bool("has_watermark"),
            watermarkType: try row.optionalString("watermark_type"),
            watermarkVersion: try row.optionalString("watermark_version"),
            watermarkMessage: try row.optionalString("watermark_message"),
            firstReceivedAt: try row.string("first_received_at"),
            lastReceivedAt: try row.string("last_received_at"),
            stateChangedAt: try row.string("state_changed_at"),
            callbackCount: try row.int("callback_count"),
            stateSource: try row.value("state_source", as: CallbackSource.self)
        )
    }

}

/// A snapshot of the store's connections and batch queues: what `/metrics` shows, in the store's own
/// terms, so its readers need not know the driver.
public struct StoreStatistics: Sendable, Hashable {
    /// Configured connections.
    public var poolSize: Int
    /// Connections open.
    public var poolOpen: Int
    /// Connections running a job.
    public var poolInUse: Int
    /// Jobs waiting for a connection.
    public var poolWaiting: Int
    /// Seconds jobs have waited for a connection, summed, since start.
    public var poolWaitSeconds: Double
    /// Jobs that were given a connection since start.
    public var poolAcquired: Int
    /// Statements prepared by the connections since start (``PostgresPool/Statistics/statementsPrepared``):
    /// steady once each connection has prepared what it runs.
    public var statementsPrepared: Int = 0
    /// Callbacks waiting for an ingest batch.
    public var ingestQueued: Int
    /// Lookups by JobId waiting for a lookup batch.
    public var lookupsQueued: Int
    /// Listings holding one of the ``ListingLimit``'s slots (a connection, or waiting in the pool for one).
    public var listingsActive: Int = 0
    /// Listings waiting for a slot.
    public var listingsWaiting: Int = 0
    /// The read standby's pool and state; nil without one.
    public var readPool: ReadPoolStatistics? = nil
}

/// The read standby's connections and state (``ReadStandby``).
public struct ReadPoolStatistics: Sendable, Hashable {
    public var poolSize: Int
    public var poolOpen: Int
    public var poolInUse: Int
    public var poolWaiting: Int
    /// Statements its connections prepared since start, as ``StoreStatistics/statementsPrepared`` is the
    /// primary pool's.
    public var statementsPrepared: Int
    public var standby: ReadStandby.Status
}

/// A store operation got an answer it cannot use; the database is reachable but disagrees with the code.
public struct JobStoreError: Error, Sendable, CustomStringConvertible {
    public var message: String

    init(_ message: String) { self.message = message }

    public var description: String { "JobStoreError: \(message)" }
}

extension JobsDetail {
    /// A job that reads a watermark: tagged so, or carrying the extraction's result element.
    var isWatermarkExtraction: Bool {
        tag == "ExtractDigitalWatermark" || watermark != nil
    }
}
