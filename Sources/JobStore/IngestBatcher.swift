import Logging
import PostgresLibPQ
import Synchronization

/// Group commit for ingest: callbacks that arrive together share one transaction, one round trip and one
/// WAL flush, and each caller is resumed with its own result only after that commit.
///
/// A caller queues its prepared statement and suspends. If fewer than
/// ``Configuration/maxConcurrentBatches`` committers are running, it starts one: a job on a pooled
/// connection's own thread (``PostgresPool/submit(_:onFailure:)``) that takes everything queued (up to
/// ``Configuration/maxBatchSize``), sends it as one pipeline with one Sync (one implicit transaction),
/// resumes each member, and takes the next batch until the queue is empty. So a batch never waits to
/// fill: under light load it is one callback, committed at once; under a burst, the callbacks that arrive
/// while a batch commits form the next one.
///
/// Why pool jobs rather than a long-lived committer task or thread: the pool already owns one thread per
/// connection and a clear shutdown (``PostgresPool/close()`` runs queued jobs, then joins its threads), a
/// committer only exists while there is work, and the caller → connection thread → caller path has no
/// more hops than a plain ``PostgresPool/withConnection(_:)``. Nothing needs to be added to a service group.
///
/// Failures never spread to batch-mates:
/// - a failed statement (any failure element in the pipeline results: the whole batch rolled back) →
///   every member is run again alone, in its own transaction, on the same connection, and gets its own
///   outcome;
/// - a lost connection → the batch's members go back to the head of the queue, marked to run alone, and
///   a new committer takes them on a fresh connection; a member that loses its connection a second time
///   fails with that error (``PostgresError/isConnectionProblem``, which the service answers 503). The
///   statement is idempotent per body (UNIQUE SHA-256), so running it again after an unknown outcome
///   cannot store a callback twice.
/// - a committer that cannot get a connection at all fails what is queued with that error, unless another
///   committer is still running and will take it.
///
/// Deadlocks: statements in one batch are ordered by their first JobId (arrival order among equals), so
/// concurrent batches lock jobs in one order; a deadlock that still happens fails a batch, whose members
/// then run alone.
public final class IngestBatcher: Sendable {
    /// Batching limits.
    public struct Configuration: Sendable, Hashable {
        /// Most callbacks in one transaction. Default 64; 1 turns grouping off (one transaction each).
        public var maxBatchSize = 64
        /// Most batches committing at once, each on its own pooled connection, so the rest of the pool
        /// stays free for lookups. Default 2: on two cores, two backends keep PostgreSQL busy.
        public var maxConcurrentBatches = 2

        public init(maxBatchSize: Int = 64, maxConcurrentBatches: Int = 2) {
            self.maxBatchSize = maxBatchSize
            self.maxConcurrentBatches = maxConcurrentBatches
        }
    }

    /// Counters since the batcher was made.
    public struct Statistics: Sendable, Hashable {
        /// Transactions that committed two or more callbacks together.
        public var groupCommits: Int
        /// Callbacks committed in those group transactions.
        public var groupedCallbacks: Int
        /// Statements run alone: single-callback batches and retries after a failed batch.
        public var singleCommits: Int
        /// Batches that failed as a whole and were retried member by member.
        public var failedBatches: Int
        /// Callbacks waiting for a batch right now.
        public var queued: Int
    }

    private struct Pending: Sendable {
        let id: UInt64
        let record: IngestRecord
        let continuation: CheckedContinuation<PostgresRows, any Error>
        /// Set once a batch carrying it lost its connection: it then runs alone, and a second loss fails it.
        var retried = false
    }

    private struct State {
        var queue: [Pending] = []
        var committers = 0
        var nextID: UInt64 = 0
        var statistics = Statistics(groupCommits: 0, groupedCallbacks: 0, singleCommits: 0, failedBatches: 0, queued: 0)
    }

    public let configuration: Configuration
    private let pool: PostgresPool
    private let logger: Logger
    /// Callers (cooperative threads) and committers (pool threads) share the queue: a lock, not an actor,
    /// because committers are plain threads that must not hop to an executor between batches.
    private let state = Mutex(State())

    public init(pool: PostgresPool, configuration: Configuration = Configuration(), logger: Logger = Logger(label: "ci-callbackd.ingest")) {
        precondition(configuration.maxBatchSize >= 1 && configuration.maxConcurrentBatches >= 1, "IngestBatcher limits must be positive")
        self.pool = pool
        self.configuration = configuration
        self.logger = logger
    }

    /// Current counters.
    public var statistics: Statistics {
        state.withLock { state in
            var statistics = state.statistics
            statistics.queued = state.queue.count
            return statistics
        }
    }

    /// Runs `record`'s statement in the next batch and returns its rows once that batch has committed.
    ///
    /// - Throws: the statement's own ``PostgresError``; a connection problem (the pool's
    ///   `connectionFailed`, `connectionLost`, `timeout`, `poolClosed`); `CancellationError` when the task
    ///   is cancelled while the record is still queued (a record already sent is not interrupted).
    func submit(_ record: IngestRecord) async throws -> PostgresRows {
        let id = state.withLock { state in
            state.nextID &+= 1
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<PostgresRows, any Error>) in
                // Checked under the lock the cancellation handler takes, so a cancellation is never missed.
                let action: (start: Bool, cancelled: Bool) = state.withLock { state in
                    if Task.isCancelled { return (false, true) }
                    state.queue.append(Pending(id: id, record: record, continuation: continuation))
                    guard state.committers < configuration.maxConcurrentBatches else { return (false, false) }
                    state.committers += 1
                    return (true, false)
                }
                if action.cancelled {
                    continuation.resume(throwing: CancellationError())
                } else if action.start {
                    startCommitter()
                }
            }
        } onCancel: {
            let removed: Pending? = state.withLock { state in
                guard let index = state.queue.firstIndex(where: { $0.id == id }) else { return nil }
                return state.queue.remove(at: index)
            }
            removed?.continuation.resume(throwing: CancellationError())
        }
    }

    // MARK: Committers

    /// Starts a committer for a slot already counted in `state.committers`.
    private func startCommitter() {
        let accepted = pool.submit({ connection in self.commitLoop(on: connection) }, onFailure: { error in self.committerFailed(error) })
        if !accepted {
            committerFailed(PostgresError(code: .poolClosed, serverMessage: "the pool is closed"))
        }
    }

    /// A committer that never got a connection gives up its slot; the last one standing fails the queue,
    /// since nobody else would take it.
    private func committerFailed(_ error: any Error) {
        let orphans: [Pending] = state.withLock { state in
            state.committers -= 1
            guard state.committers == 0 else { return [] }
            defer { state.queue.removeAll() }
            return state.queue
        }
        for pending in orphans {
            pending.continuation.resume(throwing: error)
        }
    }

    /// Commits batches until the queue is empty; returns the error that made the connection unusable, if any.
    private func commitLoop(on connection: PostgresConnection) -> (any Error)? {
        while true {
            let batch: [Pending] = state.withLock { state in
                guard !state.queue.isEmpty else {
                    state.committers -= 1
                    return []
                }
                let count = min(state.queue.count, configuration.maxBatchSize)
                defer { state.queue.removeFirst(count) }
                return Array(state.queue.prefix(count))
            }
            if batch.isEmpty { return nil }
            if let (error, unfinished) = commit(batch, on: connection) {
                connectionLost(error, unfinished: unfinished)
                return error
            }
        }
    }

    /// The connection broke under `unfinished`: first-timers go back to the head of the queue to run
    /// alone on a fresh connection; repeaters fail. This committer ends; a replacement takes its slot when
    /// work remains.
    private func connectionLost(_ error: any Error, unfinished: [Pending]) {
        let (failed, restart): ([Pending], Bool) = state.withLock { state in
            var failed: [Pending] = []
            var retry: [Pending] = []
            for var pending in unfinished {
                if pending.retried {
                    failed.append(pending)
                } else {
                    pending.retried = true
                    retry.append(pending)
                }
            }
            state.queue.insert(contentsOf: retry, at: 0)
            if state.queue.isEmpty {
                state.committers -= 1
                return (failed, false)
            }
            return (failed, true)
        }
        logger.notice(
            "ingest batch lost its connection",
            metadata: ["ingest.batch_size": "\(unfinished.count)", "ingest.failed": "\(failed.count)", "error": "\(error)"]
        )
        for pending in failed {
            pending.continuation.resume(throwing: error)
        }
        if restart { startCommitter() }
    }

    /// Commits one batch and resumes its members; when the connection becomes unusable, returns the error
    /// and the members not yet resumed.
    private func commit(_ batch: [Pending], on connection: PostgresConnection) -> (any Error, [Pending])? {
        var alone = batch.filter(\.retried)
        var grouped = batch.filter { !$0.retried }
        if grouped.count == 1 {
            // A pipeline of one costs the same round trip as a plain statement, with more bookkeeping.
            alone.append(contentsOf: grouped)
            grouped.removeAll()
        }
        if !grouped.isEmpty {
            grouped = Self.lockOrdered(grouped)
            do throws(PostgresError) {
                let results = try connection.pipeline(grouped.map(\.record.query))
                var rows: [PostgresRows] = []
                rows.reserveCapacity(results.count)
                for result in results {
                    guard case .success(let value) = result else { break }
                    rows.append(value)
                }
                if rows.count == grouped.count {
                    state.withLock { state in
                        state.statistics.groupCommits += 1
                        state.statistics.groupedCallbacks += grouped.count
                    }
                    for (pending, value) in zip(grouped, rows) {
                        pending.continuation.resume(returning: value)
                    }
                } else {
                    // The whole batch rolled back: run each member alone so one bad row fails only itself.
                    let failure = results.lazy.compactMap { if case .failure(let error) = $0 { error } else { nil } }.first
                    logger.debug(
                        "ingest batch failed; retrying its members one by one",
                        metadata: ["ingest.batch_size": "\(grouped.count)", "error": "\(failure.map { "\($0)" } ?? "")"]
                    )
                    state.withLock { $0.statistics.failedBatches += 1 }
                    alone.append(contentsOf: grouped)
                }
            } catch {
                guard connection.isHealthy else { return (error, grouped + alone) }
                state.withLock { $0.statistics.failedBatches += 1 }
                alone.append(contentsOf: grouped)
            }
        }
        for (index, pending) in alone.enumerated() {
            do throws(PostgresError) {
                let rows = try Self.runAlone(pending.record, on: connection)
                state.withLock { $0.statistics.singleCommits += 1 }
                pending.continuation.resume(returning: rows)
            } catch {
                if error.isConnectionProblem || !connection.isHealthy {
                    return (error, Array(alone[index...]))
                }
                pending.continuation.resume(throwing: error)
            }
        }
        return nil
    }

    /// One statement in its own transaction, tried once more after losing a deadlock or a serialization
    /// conflict to a concurrent batch (the statement itself is safe to repeat).
    private static func runAlone(_ record: IngestRecord, on connection: PostgresConnection) throws(PostgresError) -> PostgresRows {
        do {
            return try connection.query(record.query)
        } catch where error.sqlState == "40P01" || error.sqlState == "40001" {
            return try connection.query(record.query)
        }
    }

    /// The batch ordered by each record's first JobId, arrival order among equals, so concurrent batches
    /// (and the single statements, which lock their jobs in JobId order) take row locks in one order.
    private static func lockOrdered(_ batch: [Pending]) -> [Pending] {
        batch.enumerated()
            .sorted { ($0.element.record.lockKey, $0.offset) < ($1.element.record.lockKey, $1.offset) }
            .map(\.element)
    }
}
