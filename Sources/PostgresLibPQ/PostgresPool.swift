import Foundation
import Logging
import TimeUnits

/// A fixed set of PostgreSQL connections, each living on its OWN thread, shared by async callers.
///
/// libpq calls block, and must stay off Swift's cooperative pool (how, everywhere: BlockingThread.swift).
/// Callers of ``withConnection(_:)`` enqueue a job and suspend; one of `size` dedicated threads takes it,
/// runs the body with its connection, and resumes the caller.
///
/// - Connections are made lazily, by the thread that first needs one, and remade after a failure: when the
///   database is down, calls fail at once with ``PostgresError/Code/connectionFailed`` and the pool
///   recovers by itself once it is back.
/// - A job that waits in the queue longer than ``Configuration/acquireTimeout`` fails with
///   ``PostgresError/Code/timeout`` (load shedding: the caller can answer 503).
/// - Cancelling the calling task removes its job if it is still queued (the call throws
///   `CancellationError`). A job already running is not interrupted, and a job whose task is cancelled in
///   the instant it is being queued may still run.
public final class PostgresPool: Sendable {
    /// Pool settings, with defaults for the callback service.
    public struct Configuration: Sendable {
        /// A libpq URI or `key=value` string.
        public var conninfo: String
        /// Number of connections, and of threads. Default 8.
        public var size: Int = 8
        /// Bounds on every wait for the server: connect, each command's answers (a connection that misses
        /// its I/O deadline is closed and replaced), each statement, and TCP keepalives. Their libpq keys
        /// override the same keys in ``conninfo``.
        public var connection = PostgresConnectionSettings()
        /// Time allowed to establish one connection: ``connection``'s
        /// ``PostgresConnectionSettings/connectTimeout``.
        public var connectTimeout: Duration {
            get { self.connection.connectTimeout }
            set { self.connection.connectTimeout = newValue }
        }
        /// Longest time a job may wait in the queue for a free connection before failing with
        /// ``PostgresError/Code/timeout``. Default 10 s.
        public var acquireTimeout: Duration = .seconds(10)
        /// Reported in `pg_stat_activity`; an `application_name` in ``conninfo`` wins. Default
        /// `ci-callbackd`.
        public var applicationName: String = "ci-callbackd"

        public init(conninfo: String) {
            self.conninfo = conninfo
        }
    }

    /// A snapshot of the pool's counters.
    public struct Statistics: Sendable, Hashable {
        /// Configured number of connections (threads).
        public var size: Int
        /// Connections currently open.
        public var open: Int
        /// Threads currently running a job (including connecting for it).
        public var inUse: Int
        /// Jobs queued, waiting for a thread.
        public var waiting: Int
        /// Sum over acquired jobs of the time they waited in the queue.
        public var totalWaitSeconds: Double
        /// Jobs that were given a connection since the pool started.
        public var acquired: Int
        /// Statements the pool's connections have prepared since it started
        /// (``PostgresConnection/statementsPrepared``, summed over every connection it opened).
        public var statementsPrepared: Int

        public init(size: Int, open: Int, inUse: Int, waiting: Int, totalWaitSeconds: Double, acquired: Int, statementsPrepared: Int = 0) {
            self.size = size
            self.open = open
            self.inUse = inUse
            self.waiting = waiting
            self.totalWaitSeconds = totalWaitSeconds
            self.acquired = acquired
            self.statementsPrepared = statementsPrepared
        }
    }

    private let core: PoolCore

    /// The pool's settings.
    public var configuration: Configuration { core.configuration }

    /// Starts `configuration.size` connection threads plus one timer thread; connects lazily.
    public init(configuration: Configuration, logger: Logger) {
        precondition(configuration.size >= 1, "PostgresPool needs at least one connection")
        self.core = PoolCore(configuration: configuration, logger: logger)
        self.core.start()
    }

    deinit {
        // Threads hold the core, not the pool: closing lets them drain and exit without anyone joining.
        self.core.beginClose()
    }

    /// Runs `body` on one of the pool's threads with a healthy connection and returns its result.
    ///
    /// The connection is (re)made first when the previous one broke or was never made; if that fails, the
    /// call throws ``PostgresError/Code/connectionFailed`` at once, and the next call tries again. After a
    /// connection-level failure inside `body`, the connection is discarded; a transaction `body` left
    /// open is rolled back. `body` must not keep the connection beyond its return.
    ///
    /// - Throws: what `body` throws; ``PostgresError`` with code `connectionFailed`, `timeout` or
    ///   `poolClosed`; `CancellationError` when the task is cancelled while the job is queued.
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        let core = self.core
        let id = core.makeJobID()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                let now = ContinuousClock.now
                let job = PoolJob(
                    id: id,
                    enqueuedAt: now,
                    deadline: now + core.configuration.acquireTimeout,
                    execute: { connection in
                        let result = Result { try body(connection) }
                        let failure: (any Error)? = if case .failure(let error) = result { error } else { nil }
                        return PoolJob.Outcome(failure: failure) { continuation.resume(with: result) }
                    },
                    fail: { continuation.resume(throwing: $0) }
                )
                if !core.enqueue(job) {
                    continuation.resume(throwing: PostgresError(code: .poolClosed, serverMessage: "the pool is closed"))
                }
            }
        } onCancel: {
            core.cancelQueued(id)
        }
    }

    /// Queues `body` to run on one of the pool's threads with a healthy connection, without a caller
    /// awaiting it: for work that delivers its own results (a group-commit loop resumes each of its
    /// callers after the commit), so no task has to sit suspended for the whole job.
    ///
    /// `body` returns the error that ended it, if any; a connection problem makes the pool discard the
    /// connection afterwards, as with ``withConnection(_:)``. When the job cannot run (connecting failed,
    /// or it waited longer than ``Configuration/acquireTimeout``), `onFailure` gets that error instead and
    /// `body` never runs: exactly one of the two is called. Closing the pool still runs queued jobs.
    ///
    /// - Returns: `false`, without calling either closure, when the pool is already closed.
    public func submit(
        _ body: @escaping @Sendable (PostgresConnection) -> (any Error)?,
        onFailure: @escaping @Sendable (any Error) -> Void
    ) -> Bool {
        let core = self.core
        let now = ContinuousClock.now
        let job = PoolJob(
            id: core.makeJobID(),
            enqueuedAt: now,
            deadline: now + core.configuration.acquireTimeout,
            execute: { connection in PoolJob.Outcome(failure: body(connection), deliver: {}) },
            fail: onFailure
        )
        return core.enqueue(job)
    }

    /// Current counters.
    public var statistics: Statistics {
        self.core.statistics()
    }

    /// Stops taking work (later calls throw ``PostgresError/Code/poolClosed``), lets queued work finish,
    /// closes every connection and waits for the threads to end. Idempotent.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            self.core.close(notifying: continuation)
        }
    }
}

/// One unit of work for a pool thread.
struct PoolJob: Sendable {
    /// What running the body produced: its error (to judge the connection) and how to deliver the result
    /// to the caller, which the thread does only after tidying the connection.
    struct Outcome {
        var failure: (any Error)?
        var deliver: @Sendable () -> Void
    }

    let id: UInt64
    let enqueuedAt: ContinuousClock.Instant
    let deadline: ContinuousClock.Instant
    let execute: @Sendable (PostgresConnection) -> Outcome
    let fail: @Sendable (any Error) -> Void
}

/// FIFO of jobs: an array with a moving head, compacted when the dead prefix dominates.
struct JobQueue {
    private var storage: [PoolJob] = []
    private var head = 0

    var count: Int { self.storage.count - self.head }
    var isEmpty: Bool { self.count == 0 }
    var first: PoolJob? { self.isEmpty ? nil : self.storage[self.head] }

    mutating func append(_ job: PoolJob) {
        self.storage.append(job)
    }

    mutating func popFirst() -> PoolJob? {
        guard !self.isEmpty else { return nil }
        let job = self.storage[self.head]
        self.head += 1
        if self.head == self.storage.count {
            self.storage.removeAll(keepingCapacity: true)
            self.head = 0
        } else if self.head >= 64 && self.head * 2 >= self.storage.count {
            self.storage.removeFirst(self.head)
            self.head = 0
        }
        return job
    }

    /// What the pool's timer thread does next, from the queue and the time alone (pure, so it is tested
    /// with made-up instants). Jobs share one acquire timeout and leave in arrival order, so the head's
    /// deadline is the earliest: the timer only ever needs to look at it.
    func timerStep(now: ContinuousClock.Instant, isClosed: Bool) -> PoolTimerStep {
        guard let head = self.first else { return isClosed ? .exit : .waitForWork }
        return head.deadline <= now ? .expireHead : .waitUntil(head.deadline)
    }

    mutating func remove(id: UInt64) -> PoolJob? {
        guard let index = self.storage[self.head...].firstIndex(where: { $0.id == id }) else { return nil }
        return self.storage.remove(at: index)
    }
}

/// The pool's timer thread's next move (``JobQueue/timerStep(now:isClosed:)``).
enum PoolTimerStep: Equatable {
    /// Nothing is queued: sleep until a job arrives or the pool closes.
    case waitForWork
    /// The head waits until this deadline: sleep until then, or until woken.
    case waitUntil(ContinuousClock.Instant)
    /// The head's deadline has passed: take it off the queue and fail it.
    case expireHead
    /// The pool is closed and nothing is queued: the thread ends. (A closing pool still runs, or
    /// expires, what was queued before it closed.)
    case exit
}

/// The pool's shared state and its threads' loops.
///
/// `@unchecked Sendable`: async callers (enqueue, cancel, statistics), the connection threads and the timer
/// thread all touch the queue and counters below. Every `var` is read and written only while `monitor` is
/// locked; the `let`s are immutable. A lock rather than an actor because the readers are plain threads that
/// must block waiting for work.
final class PoolCore: @unchecked Sendable {
    private static let workCondition = 0
    private static let timerCondition = 1

    let configuration: PostgresPool.Configuration
    private let logger: Logger
    private let monitor = Monitor(conditionCount: 2)
    private let redactedConninfo: String

    private var queue = JobQueue()
    private var isClosed = false
    private var open = 0
    private var inUse = 0
    private var acquired = 0
    private var statementsPrepared = 0
    private var totalWait: Duration = .zero
    private var liveThreads = 0
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private var nextJobID: UInt64 = 0

    init(configuration: PostgresPool.Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.redactedConninfo = PostgresConnInfo.redacted(configuration.conninfo)
    }

    func start() {
        self.monitor.lock()
        self.liveThreads = self.configuration.size + 1
        self.monitor.unlock()
        for index in 0..<self.configuration.size {
            startBlockingThread(name: "pg-pool-\(index)") { [self] in self.runWorker(index: index) }
        }
        startBlockingThread(name: "pg-pool-timer") { [self] in self.runTimer() }
        self.logger.debug(
            "postgres pool started",
            metadata: ["db.conninfo": "\(self.redactedConninfo)", "pool.size": "\(self.configuration.size)"]
        )
    }

    // MARK: Callers

    func makeJobID() -> UInt64 {
        self.monitor.lock()
        defer { self.monitor.unlock() }
        self.nextJobID &+= 1
        return self.nextJobID
    }

    /// Queues a job; `false` once the pool is closed.
    func enqueue(_ job: PoolJob) -> Bool {
        self.monitor.lock()
        defer { self.monitor.unlock() }
        guard !self.isClosed else { return false }
        self.queue.append(job)
        self.monitor.signal(Self.workCondition)
        // The timer waits without a deadline only while the queue is empty; later jobs expire after the
        // head (same timeout, FIFO), so only this transition needs to wake it.
        if self.queue.count == 1 {
            self.monitor.signal(Self.timerCondition)
        }
        return true
    }

    func cancelQueued(_ id: UInt64) {
        self.monitor.lock()
        let job = self.queue.remove(id: id)
        self.queueShrankLocked()
        self.monitor.unlock()
        job?.fail(CancellationError())
    }

    /// A closing pool's timer may be sleeping until a deadline of a job that has since left the queue;
    /// wake it once the queue is drained so ``close(notifying:)`` does not wait for that deadline.
    private func queueShrankLocked() {
        if self.isClosed && self.queue.isEmpty {
            self.monitor.signal(Self.timerCondition)
        }
    }

    func statistics() -> PostgresPool.Statistics {
        self.monitor.lock()
        defer { self.monitor.unlock() }
        return PostgresPool.Statistics(
            size: self.configuration.size,
            open: self.open,
            inUse: self.inUse,
            waiting: self.queue.count,
            totalWaitSeconds: self.totalWait.inSeconds,
            acquired: self.acquired,
            statementsPrepared: self.statementsPrepared
        )
    }

    func beginClose() {
        self.monitor.lock()
        self.markClosedLocked()
        self.monitor.unlock()
    }

    func close(notifying continuation: CheckedContinuation<Void, Never>) {
        self.monitor.lock()
        self.markClosedLocked()
        guard self.liveThreads > 0 else {
            self.monitor.unlock()
            continuation.resume()
            return
        }
        self.closeWaiters.append(continuation)
        self.monitor.unlock()
    }

    private func markClosedLocked() {
        guard !self.isClosed else { return }
        self.isClosed = true
        self.monitor.broadcast(Self.workCondition)
        self.monitor.broadcast(Self.timerCondition)
    }

    private func threadExited() {
        self.monitor.lock()
        self.liveThreads -= 1
        var waiters: [CheckedContinuation<Void, Never>] = []
        if self.liveThreads == 0 {
            swap(&waiters, &self.closeWaiters)
        }
        self.monitor.unlock()
        if !waiters.isEmpty {
            self.logger.debug("postgres pool closed", metadata: ["db.conninfo": "\(self.redactedConninfo)"])
        }
        for waiter in waiters {
            waiter.resume()
        }
    }

    // MARK: Timer thread

    /// Fails jobs that waited longer than `acquireTimeout`, even while every connection thread is busy.
    private func runTimer() {
        self.monitor.lock()
        loop: while true {
            switch self.queue.timerStep(now: ContinuousClock.now, isClosed: self.isClosed) {
            case .exit:
                break loop
            case .waitForWork:
                self.monitor.wait(Self.timerCondition)
            case .waitUntil(let deadline):
                self.monitor.wait(Self.timerCondition, until: deadline)
            case .expireHead:
                guard let head = self.queue.popFirst() else { continue }
                self.monitor.unlock()
                self.failTimedOut(head)
                self.monitor.lock()
            }
        }
        self.monitor.unlock()
        self.threadExited()
    }

    private func failTimedOut(_ job: PoolJob) {
        self.logger.warning(
            "postgres pool acquire timed out",
            metadata: ["pool.size": "\(self.configuration.size)", "pool.acquire_timeout": "\(self.configuration.acquireTimeout)"]
        )
        job.fail(
            PostgresError(
                code: .timeout,
                serverMessage: "no database connection became free within \(self.configuration.acquireTimeout)"
            )
        )
    }

    // MARK: Connection threads

    private func runWorker(index: Int) {
        var worker = Worker(index: index)
        while let job = self.nextJob() {
            self.serve(job, worker: &worker)
        }
        if let connection = worker.connection {
            connection.close()
            worker.connection = nil
            self.adjustOpen(by: -1)
        }
        self.threadExited()
    }

    /// What one connection thread keeps between jobs.
    private struct Worker {
        let index: Int
        var connection: PostgresConnection?
        /// Whether this thread ever had a connection, to log re-connections louder than the first one.
        var hasConnected = false
        /// Whether the last connect attempt failed, so an outage logs one warning per thread, not one per job.
        var lastConnectFailed = false
    }

    /// Blocks until a job is queued (returns it, counted in-use) or the pool is closed and drained (`nil`).
    private func nextJob() -> PoolJob? {
        self.monitor.lock()
        defer { self.monitor.unlock() }
        while true {
            if let job = self.queue.popFirst() {
                self.inUse += 1
                self.queueShrankLocked()
                return job
            }
            if self.isClosed { return nil }
            self.monitor.wait(Self.workCondition)
        }
    }

    private func serve(_ job: PoolJob, worker: inout Worker) {
        if job.deadline <= ContinuousClock.now {
            self.finishJob()
            self.failTimedOut(job)
            return
        }
        if let connection = worker.connection, !connection.checkIdleConnection() {
            self.discard(&worker, reason: "connection broke while idle")
        }
        let connection: PostgresConnection
        if let existing = worker.connection {
            connection = existing
        } else {
            do {
                connection = try self.connect(&worker)
            } catch {
                self.finishJob()
                job.fail(error)
                return
            }
        }
        self.recordAcquired(waited: ContinuousClock.now - job.enqueuedAt)

        let preparedBefore = connection.statementsPrepared
        let outcome = job.execute(connection)
        let prepared = connection.statementsPrepared - preparedBefore

        if let error = outcome.failure as? PostgresError, error.isConnectionProblem {
            self.discard(&worker, reason: "connection-level failure")
        } else if connection.isInTransaction {
            self.logger.warning("postgres transaction left open, rolling back", metadata: ["pool.worker": "\(worker.index)"])
            if (try? connection.execute(simpleSQL: "ROLLBACK")) == nil || !connection.isHealthy {
                self.discard(&worker, reason: "rollback failed")
            }
        } else if !connection.isHealthy {
            self.discard(&worker, reason: "connection unhealthy after use")
        }
        self.finishJob(prepared: prepared)
        outcome.deliver()
    }

    private func connect(_ worker: inout Worker) throws(PostgresError) -> PostgresConnection {
        do {
            let connection = try PostgresConnection.connect(
                self.configuration.conninfo,
                settings: self.configuration.connection,
                defaults: [(key: "application_name", value: self.configuration.applicationName)]
            )
            worker.connection = connection
            self.adjustOpen(by: 1)
            let metadata: Logger.Metadata = [
                "db.conninfo": "\(self.redactedConninfo)",
                "pool.worker": "\(worker.index)",
                "db.backend_pid": "\(connection.backendPID)",
            ]
            if worker.hasConnected || worker.lastConnectFailed {
                self.logger.info("postgres reconnected", metadata: metadata)
            } else {
                self.logger.debug("postgres connected", metadata: metadata)
            }
            worker.hasConnected = true
            worker.lastConnectFailed = false
            return connection
        } catch {
            var metadata: Logger.Metadata = [
                "db.conninfo": "\(self.redactedConninfo)",
                "pool.worker": "\(worker.index)",
                "error": "\(error)",
            ]
            if let refusal = error.connectionRefusal {
                metadata["hint"] = "\(refusal)"
            }
            if worker.lastConnectFailed {
                self.logger.debug("postgres connect failed", metadata: metadata)
            } else {
                self.logger.warning("postgres connect failed", metadata: metadata)
            }
            worker.lastConnectFailed = true
            throw error
        }
    }

    private func discard(_ worker: inout Worker, reason: String) {
        guard let connection = worker.connection else { return }
        self.logger.notice(
            "postgres connection discarded",
            metadata: ["pool.worker": "\(worker.index)", "reason": "\(reason)", "db.backend_pid": "\(connection.backendPID)"]
        )
        connection.close()
        worker.connection = nil
        self.adjustOpen(by: -1)
    }

    private func adjustOpen(by delta: Int) {
        self.monitor.lock()
        self.open += delta
        self.monitor.unlock()
    }

    private func recordAcquired(waited: Duration) {
        self.monitor.lock()
        self.acquired += 1
        self.totalWait += waited
        self.monitor.unlock()
    }

    private func finishJob(prepared: Int = 0) {
        self.monitor.lock()
        self.inUse -= 1
        self.statementsPrepared += prepared
        self.monitor.unlock()
    }
}
