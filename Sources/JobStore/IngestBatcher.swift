import CoreMetrics
import Logging
import PostgresLibPQ
import Synchronization

/// Group commit for ingest: callbacks that arrive together share one transaction, one round trip and one
/// WAL flush, and each caller is resumed with its own result only after that commit.
///
/// The queueing is ``PoolBatcher``'s: a caller queues its record and suspends; up to
/// ``Configuration/maxConcurrentBatches`` committers, each a job on a pooled connection's thread, take
/// everything queued (up to ``Configuration/maxBatchSize`` callbacks and ``Configuration/maxBatchBytes``)
/// and write it with ONE multi-row statement (``IngestBatchStatement``; a few in one pipeline only where a
/// body or JobId repeats), under one Sync: one implicit transaction. So a batch never waits to fill: under
/// light load it is one callback, committed at once with the single-callback statement; under a burst, the
/// callbacks that arrive while a batch commits form the next one.
///
/// Failures never spread to batch-mates:
/// - a failed statement (the whole batch rolled back) → every member is run again alone, in its own
///   transaction, on the same connection, and gets its own outcome;
/// - a lost connection → the batch's members go back to the head of the queue, marked to run alone, and
///   a new committer takes them on a fresh connection; a member that loses its connection a second time
///   fails with that error (``PostgresError/isConnectionProblem``, which the service answers 503), as does
///   a member whose connection went silent past its I/O deadline (no second wait). The
///   statement is idempotent per body (UNIQUE SHA-256), so running it again after an unknown outcome
///   cannot store a callback twice.
/// - a lost connection after the commit was sent (``PostgresError/outcomeUnknown``: the commit may have
///   landed and only its answer was lost) → the retry first reads the record's own earlier write back
///   (``IngestRecord/earlierWriteQuery``) and answers from it, so the caller hears `Duplicate:false` and
///   the delivery counter is not bumped by our own retry; when nothing settles the doubt, the error keeps
///   `outcomeUnknown`, and the service says so instead of "nothing was stored".
/// - a committer that cannot get a connection at all fails what is queued with that error, unless another
///   committer is still running and will take it.
///
/// Deadlocks: a batch's records are ordered by their first JobId (arrival order among equals) and its
/// statement upserts jobs in JobId order, so concurrent batches lock jobs in one order; a deadlock that
/// still happens fails a batch, whose members then run alone.
public final class IngestBatcher: Sendable {
    /// Batching limits.
    public struct Configuration: Sendable, Hashable {
        /// Most callbacks in one transaction. Default 64; 1 turns grouping off (one transaction each).
        public var maxBatchSize = 64
        /// Most batches committing at once, each on its own pooled connection, so the rest of the pool
        /// stays free for lookups. Default 2: on two cores, two backends keep PostgreSQL busy.
        public var maxConcurrentBatches = 2
        /// Most bytes (bodies plus their job records) in one batch; a callback larger than this is written
        /// alone. Default 1 MiB: ordinary callbacks (a few KB) still batch 64 at a time, while large ones no
        /// longer gather into one statement whose parameters are copied several times on the way to the
        /// socket (64 one-MiB bodies in one statement needed over 600 MB).
        public var maxBatchBytes = 1 << 20

        public init(maxBatchSize: Int = 64, maxConcurrentBatches: Int = 2, maxBatchBytes: Int = 1 << 20) {
            self.maxBatchSize = maxBatchSize
            self.maxConcurrentBatches = maxConcurrentBatches
            self.maxBatchBytes = maxBatchBytes
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
        /// Callbacks run alone again because their batch failed as a whole.
        public var retriedCallbacks: Int
        /// Callbacks waiting for a batch right now.
        public var queued: Int
    }

    /// The metrics names, for `/metrics` and its documentation.
    public enum MetricLabel {
        /// Histogram of callbacks per committed transaction (grouped or alone).
        public static let batchSize = "db_ingest_batch_size"
        /// Counter of batches that failed as a whole and were retried member by member.
        public static let failedBatches = "db_ingest_failed_batches_total"
        /// Counter of callbacks run alone again after their batch failed.
        public static let retriedCallbacks = "db_ingest_batch_retries_total"
    }

    /// The metric handles, made once: asking the factory per batch costs a lock and a lookup.
    private struct Handles: Sendable {
        let batchSize: Recorder
        let failedBatches: Counter
        let retriedCallbacks: Counter

        init(factory: any MetricsFactory) {
            batchSize = Recorder(label: MetricLabel.batchSize, dimensions: [], aggregate: true, factory: factory)
            failedBatches = Counter(label: MetricLabel.failedBatches, dimensions: [], factory: factory)
            retriedCallbacks = Counter(label: MetricLabel.retriedCallbacks, dimensions: [], factory: factory)
        }
    }

    private typealias Pending = PoolBatcher<IngestRecord, [PostgresRow]>.Member

    /// Written by committers on pool threads, read by `/metrics`: shared, hence the lock; a class so the
    /// batcher's process closure can hold it.
    private final class Counters: Sendable {
        let statistics = Mutex(Statistics(groupCommits: 0, groupedCallbacks: 0, singleCommits: 0, failedBatches: 0, retriedCallbacks: 0, queued: 0))
        let metrics: Handles

        init(metrics: Handles) { self.metrics = metrics }

        /// A transaction committed `size` callbacks together (1: a statement run alone).
        func committed(_ size: Int) {
            statistics.withLock { counters in
                if size == 1 {
                    counters.singleCommits += 1
                } else {
                    counters.groupCommits += 1
                    counters.groupedCallbacks += size
                }
            }
            metrics.batchSize.record(size)
        }

        /// A batch of `size` failed as a whole; its members run alone.
        func failed(_ size: Int) {
            statistics.withLock { counters in
                counters.failedBatches += 1
                counters.retriedCallbacks += size
            }
            metrics.failedBatches.increment()
            metrics.retriedCallbacks.increment(by: size)
        }
    }

    public let configuration: Configuration
    private let counters: Counters
    private let batcher: PoolBatcher<IngestRecord, [PostgresRow]>

    /// - Parameters:
    ///   - logger: The service's logger, for lost connections and failed batches.
    ///   - metricsFactory: Where ``MetricLabel`` series go.
    public init(pool: PostgresPool, configuration: Configuration = Configuration(), logger: Logger, metricsFactory: any MetricsFactory) {
        self.configuration = configuration
        let counters = Counters(metrics: Handles(factory: metricsFactory))
        self.counters = counters
        self.batcher = PoolBatcher(
            pool: pool, maxBatchSize: configuration.maxBatchSize, maxConcurrentBatches: configuration.maxConcurrentBatches,
            maxBatchWeight: configuration.maxBatchBytes, weight: { record in record.body.count + record.jobsJSON.utf8.count },
            onConnectionLost: { error, unfinished, failed in
                logger.notice(
                    "ingest batch lost its connection",
                    metadata: ["ingest.batch_size": "\(unfinished)", "ingest.failed": "\(failed)", "error": "\(error)"]
                )
            },
            process: { batch, connection in
                Self.commit(batch, on: connection, counters: counters, logger: logger)
            }
        )
    }

    /// Callbacks waiting for a batch: the ones beyond what the batches being written hold.
    public var queuedCallbacks: Int { batcher.queued }

    /// Current counters.
    public var statistics: Statistics {
        var statistics = counters.statistics.withLock { $0 }
        statistics.queued = batcher.queued
        return statistics
    }

    /// Runs `record`'s statement in the next batch and returns its rows once that batch has committed.
    ///
    /// - Throws: the statement's own ``PostgresError``; a connection problem (the pool's
    ///   `connectionFailed`, `connectionLost`, `timeout`, `poolClosed`); `CancellationError` when the task
    ///   is cancelled while the record is still queued (a record already sent is not interrupted).
    func submit(_ record: IngestRecord) async throws -> [PostgresRow] {
        try await batcher.submit(record)
    }

    /// Commits one batch and resumes its members; when the connection becomes unusable, returns the error
    /// and the members not yet resumed.
    private static func commit(
        _ batch: [Pending], on connection: PostgresConnection, counters: Counters, logger: Logger
    ) -> (error: any Error, unfinished: [Pending])? {
        var alone = batch.filter(\.retried)
        var grouped = batch.filter { !$0.retried }
        if grouped.count == 1 {
            // A batch of one takes the single-callback statement: the same round trip, less for PostgreSQL
            // to set up than the multi-row statement.
            alone.append(contentsOf: grouped)
            grouped.removeAll()
        }
        if !grouped.isEmpty {
            grouped = Self.lockOrdered(grouped, lockKey: \.item.lockKey)
            let waves = IngestBatchStatement.waves(of: grouped, record: \.item)
            do throws(PostgresError) {
                let results = try connection.pipeline(waves.map { IngestBatchStatement(records: $0.map(\.item)).query })
                var byMember: [[PostgresRow]] = []
                byMember.reserveCapacity(grouped.count)
                var failure: PostgresError?
                for (wave, result) in zip(waves, results) {
                    switch result {
                    case .success(let rows):
                        byMember.append(contentsOf: Self.split(rows, into: wave.count, ord: { $0["ord"].int }))
                    case .failure(let error):
                        failure = failure ?? error
                    }
                }
                if failure == nil {
                    // Every wave ran in the one transaction, and it committed: each member answers from its
                    // own rows. A member that came back without any (which the statement should never do)
                    // was still committed; it is answered by reading its own write back, never run again as
                    // if rolled back: the re-run would find its body stored and call a first delivery a
                    // duplicate.
                    counters.committed(grouped.count)
                    for (pending, rows) in zip(waves.joined(), byMember) {
                        if rows.isEmpty {
                            var unanswered = pending
                            unanswered.mayHaveTakenEffect = true
                            alone.append(unanswered)
                        } else {
                            pending.resume(returning: rows)
                        }
                    }
                } else {
                    // The whole batch rolled back: run each member alone so one bad row fails only itself.
                    logger.debug(
                        "ingest batch failed; retrying its members one by one",
                        metadata: ["ingest.batch_size": "\(grouped.count)", "error": "\(failure.map { "\($0)" } ?? "")"]
                    )
                    counters.failed(grouped.count)
                    alone.append(contentsOf: grouped)
                }
            } catch {
                guard connection.isHealthy else { return (error, Self.marking(grouped, after: error) + alone) }
                counters.failed(grouped.count)
                alone.append(contentsOf: grouped)
            }
        }
        for (index, pending) in alone.enumerated() {
            do throws(PostgresError) {
                if pending.mayHaveTakenEffect, let rows = try Self.earlierWrite(of: pending.item, on: connection) {
                    pending.resume(returning: rows)
                    continue
                }
                let rows = try Self.runAlone(pending.item, on: connection)
                counters.committed(1)
                pending.resume(returning: rows)
            } catch {
                if error.isConnectionProblem || !connection.isHealthy {
                    return (error, Self.marking([pending], after: error) + alone[(index + 1)...])
                }
                pending.resume(throwing: error.withOutcomeUnknown(pending.mayHaveTakenEffect))
            }
        }
        return nil
    }

    /// The members that were sent when `error` broke the connection, marked when it may have committed them.
    private static func marking(_ members: [Pending], after error: PostgresError) -> [Pending] {
        guard error.outcomeUnknown else { return members }
        return members.map { member in
            var member = member
            member.mayHaveTakenEffect = true
            return member
        }
    }

    /// The rows of the record's own earlier write, if an attempt whose answer was lost committed it; nil
    /// when it did not (then the statement runs as usual).
    private static func earlierWrite(of record: IngestRecord, on connection: PostgresConnection) throws(PostgresError) -> [PostgresRow]? {
        let rows = try connection.query(record.earlierWriteQuery)
        return rows.isEmpty ? nil : Array(rows)
    }

    /// One statement in its own transaction, tried once more after losing a deadlock or a serialization
    /// conflict to a concurrent batch (the statement itself is safe to repeat).
    private static func runAlone(_ record: IngestRecord, on connection: PostgresConnection) throws(PostgresError) -> [PostgresRow] {
        do {
            return Array(try connection.query(record.query))
        } catch where error.sqlState == "40P01" || error.sqlState == "40001" {
            return Array(try connection.query(record.query))
        }
    }

    /// A batch statement's rows, one group per record, by `ord`: the record's 1-based position. Every
    /// record should have at least one row (the callback row, joined to each of its jobs); one without is an
    /// empty group, which the caller settles by itself, while the other records keep their rows.
    static func split<Row>(_ rows: some Sequence<Row>, into count: Int, ord: (Row) -> Int?) -> [[Row]] {
        var groups = [[Row]](repeating: [], count: count)
        for row in rows {
            guard let ord = ord(row), (1...count).contains(ord) else { continue }
            groups[ord - 1].append(row)
        }
        return groups
    }

    /// The batch ordered by each record's first JobId, arrival order among equals, so concurrent batches
    /// (and the single statements, which lock their jobs in JobId order) take row locks in one order.
    static func lockOrdered<Element>(_ batch: [Element], lockKey: (Element) -> String) -> [Element] {
        batch.enumerated()
            .sorted { (lockKey($0.element), $0.offset) < (lockKey($1.element), $1.offset) }
            .map(\.element)
    }
}
