import CIModel
import Dispatch
import Foundation
import JobStore
import Logging
import PostgresLibPQ
import Synchronization
import TestSupport
import Testing

/// Group commit: callbacks committed together must behave exactly as if each had its own transaction.
///
/// To make a batch deterministic, the tests occupy the pool's only connection, queue the callbacks (the
/// committer job waits behind the blocker), then release it: the committer then finds them all queued
/// and takes them as one batch. Nothing depends on timing.
@Suite("Ingest batching")
struct IngestBatchingTests {
    @Test func batch_identicalBodiesInOneBatch_storeOneRowAndReportTheRestAsDuplicates() async throws {
        try await withBatchingStore { store, blocker in
            let body = callbackBody(jobID: RequestIDForTests.jobID(), state: "Success")
            let results = try await blocker.inOneBatch(store, count: 5) { _ in try await store.ingest(decode(body), body: received(body)) }
            #expect(results.filter { !$0.duplicate }.count == 1)
            #expect(results.filter(\.duplicate).count == 4)
            #expect(Set(results.map(\.callbackID)).count == 1, "every delivery names the one stored row")
            let statistics = store.batcher.statistics
            #expect(statistics.groupCommits == 1 && statistics.groupedCallbacks == 5, "\(statistics)")

            let rows = try await store.pool.withConnection { connection in
                try connection.query("SELECT count(*)::int AS n, max(delivery_count) AS deliveries FROM ci_callbacks JOIN ci_callback_digests USING (body_sha256)")
            }
            #expect(rows.first?["n"].int == 1)
            #expect(rows.first?["deliveries"].int == 5)
            let jobs = try await store.pool.withConnection { connection in
                try connection.query("SELECT callback_count FROM ci_jobs")
            }
            #expect(jobs.count == 1)
            #expect(jobs.first?["callback_count"].int == 1, "a duplicate body must not count as a new callback for the job")
        }
    }

    /// Issue 10 §2: 64 one-MiB bodies gathered into one statement needed over 600 MB to send; a batch now
    /// stops at `maxBatchBytes` (1 MiB of bodies and job records), and a larger callback goes alone.
    @Test func batch_largeCallbacksQueuedTogether_areEachWrittenAlone() async throws {
        try await withBatchingStore { store, blocker in
            let message = String(repeating: "w", count: 300_000)
            let results = try await blocker.inOneBatch(store, count: 3) { _ in
                let body = Array(
                    #"{"JobsDetail":{"JobId":"\#(RequestIDForTests.jobID())","State":"Success","Message":"\#(message)"}}"#.utf8)
                return try await store.ingest(decode(body), body: received(body))
            }
            #expect(results.allSatisfy { !$0.duplicate && $0.jobs.count == 1 })
            let statistics = store.batcher.statistics
            #expect(statistics.groupCommits == 0 && statistics.singleCommits == 3, "\(statistics)")
        }
    }

    @Test func batch_sameJobOutOfOrderInOneBatch_keepsTheFinalStateAndRecordsBoth() async throws {
        try await withBatchingStore { store, blocker in
            let late = RequestIDForTests.jobID()
            let inOrder = RequestIDForTests.jobID()
            // Arrival order inside the batch: Success then Running for `late`; Running then Success for `inOrder`.
            let bodies = [
                callbackBody(jobID: late, state: "Success"), callbackBody(jobID: late, state: "Running"),
                callbackBody(jobID: inOrder, state: "Running"), callbackBody(jobID: inOrder, state: "Success"),
            ]
            let results = try await blocker.inOneBatch(store, count: bodies.count, sequential: true) { index in
                try await store.ingest(decode(bodies[index]), body: received(bodies[index]))
            }
            #expect(store.batcher.statistics.groupCommits == 1)
            #expect(results.allSatisfy { !$0.duplicate })
            let receipts = results.map { $0.jobs[0] }
            #expect(receipts[0].currentState == .success && receipts[0].applied)
            #expect(receipts[1].receivedState == .running && receipts[1].currentState == .success && !receipts[1].applied)
            #expect(receipts[3].currentState == .success && receipts[3].applied)

            for jobID in [late, inOrder] {
                let job = try #require(try await store.job(jobID))
                #expect(job.state == .success, "\(jobID)")
                #expect(job.callbackCount == 2)
                let history = try #require(try await store.callbacks(forJob: jobID)).callbacks
                #expect(history.count == 2)
                #expect(history.filter(\.applied).count == (jobID == late ? 1 : 2))
            }
        }
    }

    @Test func batch_oneFailingStatement_failsOnlyItself() async throws {
        try await withBatchingStore { store, blocker in
            // A row PostgreSQL refuses although the decoder accepts it: a CHECK constraint added for this
            // test only, violated by one JobId (23514).
            let refusedJobID = RequestIDForTests.jobID()
            _ = try await store.pool.withConnection { connection in
                try connection.execute(
                    simpleSQL: "ALTER TABLE ci_jobs ADD CONSTRAINT test_refuses_one_job CHECK (job_id <> '\(refusedJobID)')")
            }
            let bad = Array(#"{"JobsDetail":{"JobId":"\#(refusedJobID)","State":"Running"}}"#.utf8)
            let good = (0..<4).map { _ in callbackBody(jobID: RequestIDForTests.jobID(), state: "Success") }
            let bodies = [good[0], good[1], bad, good[2], good[3]]
            let outcomes = try await blocker.inOneBatchResults(store, count: bodies.count) { index in
                try await store.ingest(decode(bodies[index]), body: received(bodies[index]))
            }
            for (index, outcome) in outcomes.enumerated() {
                switch (index, outcome) {
                case (2, .failure(let error)):
                    let postgres = try #require(error as? PostgresError)
                    #expect(postgres.sqlState == "23514")
                    #expect(!postgres.isConnectionProblem)
                case (2, .success):
                    Issue.record("the refused callback must fail")
                case (_, .failure(let error)):
                    Issue.record("callback \(index) failed with its batch-mate: \(error)")
                case (_, .success(let result)):
                    #expect(!result.duplicate)
                }
            }
            #expect(store.batcher.statistics.failedBatches == 1)
            #expect(store.batcher.statistics.retriedCallbacks == outcomes.count, "every member of the failed batch ran again alone")
            let stored = try await store.pool.withConnection { connection in
                try connection.query("SELECT count(*)::int AS n FROM ci_callbacks")
            }
            #expect(stored.first?["n"].int == 4)
        }
    }

    @Test func batch_withVerification_holdsFinalStatesAndAppliesTheRest() async throws {
        try await withBatchingStore(verifying: true) { store, blocker in
            let held = RequestIDForTests.jobID()
            let running = RequestIDForTests.jobID()
            let bodies = [callbackBody(jobID: held, state: "Success"), callbackBody(jobID: running, state: "Running")]
            let results = try await blocker.inOneBatch(store, count: bodies.count, sequential: true) { index in
                try await store.ingest(decode(bodies[index]), body: received(bodies[index]))
            }
            #expect(store.batcher.statistics.groupCommits == 1, "both went through the batch statement")
            #expect(results[0].jobs[0].heldForVerification && !results[0].jobs[0].applied)
            #expect(!results[1].jobs[0].heldForVerification && results[1].jobs[0].applied)
            #expect(try await store.job(held) == nil, "a held final state does not create the job")
            #expect(try await store.job(running)?.state == .running)
            let pending = try await store.pool.withConnection { connection in
                try connection.query("SELECT job_id FROM ci_job_events WHERE verification = 'pending'")
            }
            #expect(pending.map { $0["job_id"].string } == [held])
        }
    }

    @Test func lookups_queuedTogether_shareOneQueryAndAnswerEachCaller() async throws {
        try await withBatchingStore { store, blocker in
            let known = (0..<3).map { _ in RequestIDForTests.jobID() }
            for jobID in known {
                let body = callbackBody(jobID: jobID, state: "Success")
                _ = try await store.ingest(decode(body), body: received(body))
            }
            let asked = known + [known[0], "no-such-job"]
            let acquiredBefore = store.pool.statistics.acquired
            var answers: [String?] = []
            try await blocker.hold(store) { release in
                let tasks = asked.map { jobID in Task { try await store.job(jobID)?.jobID } }
                while store.queuedLookups < asked.count {
                    try await Task.sleep(for: .milliseconds(2))
                }
                release()
                for task in tasks { answers.append(try await task.value) }
            }
            #expect(answers == known + [known[0], nil], "each caller gets its own job, a repeated id too, and nil for an unknown one")
            // The blocker's job plus ONE runner that takes all five queued lookups: never one job per lookup.
            #expect(store.pool.statistics.acquired - acquiredBefore == 2)
        }
    }

    @Test func batch_cancelledWhileQueued_throwsCancellationAndOthersCommit() async throws {
        try await withBatchingStore { store, blocker in
            let kept = callbackBody(jobID: RequestIDForTests.jobID(), state: "Success")
            let dropped = callbackBody(jobID: RequestIDForTests.jobID(), state: "Success")
            try await blocker.hold(store) { release in
                let keptTask = Task { try await store.ingest(decode(kept), body: received(kept)) }
                let droppedTask = Task { try await store.ingest(decode(dropped), body: received(dropped)) }
                try await waitUntilQueued(store, count: 2)
                droppedTask.cancel()
                await #expect(throws: CancellationError.self) { try await droppedTask.value }
                release()
                #expect(try await keptTask.value.duplicate == false)
            }
            let stored = try await store.pool.withConnection { connection in
                try connection.query("SELECT count(*)::int AS n FROM ci_callbacks")
            }
            #expect(stored.first?["n"].int == 1)
        }
    }

    @Test func batch_databaseUnreachable_failsEveryQueuedCallerAsUnreachable() async throws {
        var configuration = PostgresPool.Configuration(conninfo: "postgresql://postgres@127.0.0.1:1/none")
        configuration.size = 2
        configuration.connectTimeout = .seconds(1)
        let pool = PostgresPool(configuration: configuration, logger: serviceTestLogger)
        let store = JobStore(pool: pool, logger: serviceTestLogger)
        let bodies = (0..<10).map { _ in callbackBody(jobID: RequestIDForTests.jobID(), state: "Success") }
        let failures = await withTaskGroup(of: Bool.self) { group in
            for body in bodies {
                group.addTask {
                    do {
                        _ = try await store.ingest(try decode(body), body: received(body))
                        return false
                    } catch let error as StoreUnavailableError {
                        return error.reason == .unreachable
                    } catch {
                        return false
                    }
                }
            }
            return await group.reduce(into: 0) { count, isConnectionProblem in count += isConnectionProblem ? 1 : 0 }
        }
        #expect(failures == bodies.count)
        #expect(store.batcher.statistics.queued == 0)
        await pool.close()
    }

    /// Through the real service: 200 distinct callbacks, 50 deliveries of one body and 20 out-of-order
    /// pairs, all at once; the stored rows must be exactly what one-at-a-time ingest would give.
    @Test func service_concurrentMixedCallbacks_storeExactRowsAndStates() async throws {
        try await ServiceHarness.with { service in
            let distinct = (0..<200).map { _ in callbackBody(jobID: RequestIDForTests.jobID(), state: "Success") }
            let identical = callbackBody(jobID: RequestIDForTests.jobID(), state: "Success")
            let pairJobs = (0..<20).map { _ in RequestIDForTests.jobID() }
            var bodies = distinct + Array(repeating: identical, count: 50)
            for jobID in pairJobs {
                bodies.append(callbackBody(jobID: jobID, state: "Success"))
                bodies.append(callbackBody(jobID: jobID, state: "Running"))
            }
            let replies = try await withThrowingTaskGroup(of: (status: Int, duplicate: Bool?).self) { group in
                for body in bodies.shuffled() {
                    group.addTask {
                        let reply = try await service.post("/v1/callbacks", body, contentType: "application/json")
                        return (reply.status, try? reply.json()["Duplicate"] as? Bool)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.allSatisfy { $0.status == 200 }, "\(replies.filter { $0.status != 200 })")
            #expect(replies.filter { $0.duplicate == true }.count == 49)

            let counts = try await service.query(
                """
                SELECT (SELECT count(*)::int FROM ci_callbacks) AS callbacks,
                       (SELECT count(*)::int FROM ci_jobs) AS jobs,
                       (SELECT count(*)::int FROM ci_job_events) AS events,
                       (SELECT delivery_count FROM ci_callback_digests WHERE delivery_count > 1) AS deliveries
                """)
            #expect(counts.first?["callbacks"].int == 200 + 1 + 40)
            #expect(counts.first?["jobs"].int == 200 + 1 + 20)
            #expect(counts.first?["events"].int == 200 + 1 + 40)
            #expect(counts.first?["deliveries"].int == 50)
            let pairStates = try await service.query(
                "SELECT count(*)::int AS n FROM ci_jobs WHERE job_id = ANY(\(pairJobs)) AND state = 'Success' AND callback_count = 2")
            #expect(pairStates.first?["n"].int == 20, "a late Running must never replace Success")
        }
    }
}

// MARK: Helpers

private func callbackBody(jobID: String, state: String) -> [UInt8] {
    Array(
        """
        {"EventName":"TaskFinish","JobsDetail":{"Code":"Success","JobId":"\(jobID)","State":"\(state)",\
        "Tag":"ExtractDigitalWatermark","Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1","Message":"m"}}}}
        """.utf8)
}

private func decode(_ body: [UInt8]) throws -> CallbackEnvelope {
    try CallbackDecoder.decode(body)
}

private func received(_ body: [UInt8]) -> ReceivedBody {
    ReceivedBody(bytes: body, contentType: "application/json", remoteAddress: "127.0.0.1")
}

/// Waits (by polling the batcher, not by a deadline) until `count` callbacks are queued.
private func waitUntilQueued(_ store: JobStore, count: Int) async throws {
    while store.batcher.statistics.queued < count {
        try await Task.sleep(for: .milliseconds(2))
    }
}

/// A JobStore on a fresh schema whose pool has ONE connection, so a test can hold it.
private func withBatchingStore(verifying: Bool = false, _ body: (JobStore, PoolBlocker) async throws -> Void) async throws {
    let schema = "t_" + RequestIDForTests.random()
    let admin = try PostgresConnection.connect(testDatabaseURL)
    try admin.execute(simpleSQL: "CREATE SCHEMA \(schema)")
    admin.close()
    var configuration = PostgresPool.Configuration(conninfo: conninfo(testDatabaseURL, searchPath: schema))
    configuration.size = 1
    // The migrations below wait for other tests' migrations on this pool's only connection.
    configuration.connection = PostgresConnectionSettings().forMigrations()
    let pool = PostgresPool(configuration: configuration, logger: serviceTestLogger)
    let migrations = try MigrationSet.embedded()
    do {
        _ = try await pool.withConnection { connection in
            try Migrator(migrations: migrations, logger: serviceTestLogger).migrate(connection)
        }
        let store = JobStore(
            pool: pool, batching: .init(maxBatchSize: 64, maxConcurrentBatches: 1), verificationSignal: verifying ? VerificationSignal() : nil,
            logger: serviceTestLogger)
        try await body(store, PoolBlocker())
    } catch {
        await pool.close()
        try? dropSchema(schema)
        throw error
    }
    await pool.close()
    try dropSchema(schema)
}

private func dropSchema(_ schema: String) throws {
    let admin = try PostgresConnection.connect(testDatabaseURL)
    defer { admin.close() }
    try admin.execute(simpleSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
}

/// Occupies the pool's only connection until released, so that callbacks queue up behind it.
private struct PoolBlocker {
    /// Runs `body` while the connection is held; `release` lets the pool go (idempotent). The connection
    /// is released when `body` ends in any case.
    func hold(_ store: JobStore, _ body: (@escaping @Sendable () -> Void) async throws -> Void) async throws {
        let gate = DispatchSemaphore(value: 0)
        let entered = DispatchSemaphore(value: 0)
        let released = ReleaseOnce(gate)
        let holder = Task {
            try await store.pool.withConnection { _ in
                entered.signal()
                gate.wait()
            }
        }
        // The pool thread signals once it holds the connection; wait for it off the cooperative pool.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                entered.wait()
                continuation.resume()
            }
        }
        do {
            try await body { released.release() }
        } catch {
            released.release()
            _ = try? await holder.value
            throw error
        }
        released.release()
        try await holder.value
    }

    /// Starts `count` ingests while the connection is held, waits until all are queued, then releases:
    /// they commit as one batch. `sequential` queues them in index order.
    func inOneBatchResults<T: Sendable>(
        _ store: JobStore, count: Int, sequential: Bool = false, _ operation: @escaping @Sendable (Int) async throws -> T
    ) async throws -> [Result<T, any Error>] {
        var results: [Result<T, any Error>] = []
        try await hold(store) { release in
            var tasks: [Task<T, any Error>] = []
            for index in 0..<count {
                tasks.append(Task { try await operation(index) })
                if sequential { try await waitUntilQueued(store, count: index + 1) }
            }
            try await waitUntilQueued(store, count: count)
            release()
            for task in tasks {
                results.append(await task.result)
            }
        }
        return results
    }

    func inOneBatch<T: Sendable>(
        _ store: JobStore, count: Int, sequential: Bool = false, _ operation: @escaping @Sendable (Int) async throws -> T
    ) async throws -> [T] {
        try await inOneBatchResults(store, count: count, sequential: sequential, operation).map { try $0.get() }
    }
}

/// Signals a semaphore at most once, from any thread.
private final class ReleaseOnce: Sendable {
    private let gate: DispatchSemaphore
    private let done = Mutex(false)

    init(_ gate: DispatchSemaphore) { self.gate = gate }

    func release() {
        let first = done.withLock { done in
            defer { done = true }
            return !done
        }
        if first { gate.signal() }
    }
}
