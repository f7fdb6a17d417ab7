import Synchronization

/// Gathers work from many concurrent callers into batches that run on the pool's connection threads, so
/// that N callers cost one job hand-off and one round trip instead of N.
///
/// A caller queues its item and suspends. If fewer than `maxConcurrentBatches` runners are active, it
/// starts one: a job on a pooled connection's own thread (``PostgresPool/submit(_:onFailure:)``) that
/// takes everything queued (up to `maxBatchSize` items and `maxBatchWeight`), hands it to the `process`
/// closure, and takes the next batch until the queue is empty. A batch never waits to fill: under light load it is one item, run at
/// once; under a burst, the items that arrive while a batch runs form the next one.
///
/// `process` answers every member it can (``Member/resume(returning:)`` / ``Member/resume(throwing:)``).
/// When the connection breaks under it, it returns the error and the members it has not answered: those
/// go back to the head of the queue marked ``Member/retried`` (the process closure may run them alone), a
/// replacement runner takes them on a fresh connection, and a member that loses its connection a second
/// time fails with that error. A connection that went silent (``PostgresError/Code/serverTimeout``) fails
/// its members at once, and everything queued behind them: the database is not answering, and another
/// wait of a whole I/O deadline would double the callers'; they get their error (503) now instead. A
/// runner that cannot get a connection at all fails what is queued, unless another runner is still active
/// and will take it.
///
/// Why pool jobs rather than a long-lived task or thread: the pool already owns one thread per connection
/// and a clear shutdown (``PostgresPool/close()`` runs queued jobs, then joins its threads), a runner only
/// exists while there is work, and the caller → connection thread → caller path has no more hops than
/// ``PostgresPool/withConnection(_:)``.
public final class PoolBatcher<Item: Sendable, Output: Sendable>: Sendable {
    /// One queued caller, as `process` sees it.
    public struct Member: Sendable {
        /// What the caller submitted.
        public let item: Item
        /// True once a batch carrying this member lost its connection.
        public fileprivate(set) var retried = false
        /// Set by `process` on a member it returns unfinished when the lost connection may already have
        /// done its work (a commit was sent, ``PostgresError/outcomeUnknown``). A later attempt should look
        /// for that work before repeating it; a final connection failure carries `outcomeUnknown`.
        public var mayHaveTakenEffect = false
        fileprivate let id: UInt64
        fileprivate let weight: Int
        fileprivate let continuation: CheckedContinuation<Output, any Error>

        /// Answers the caller. Call exactly once per member, unless the member is returned as unfinished.
        public func resume(returning output: Output) { continuation.resume(returning: output) }

        /// Fails the caller. Call exactly once per member, unless the member is returned as unfinished.
        public func resume(throwing error: any Error) { continuation.resume(throwing: error) }

        /// Fails the caller with a connection failure, marked `outcomeUnknown` when an earlier attempt may
        /// have done the work.
        fileprivate func fail(_ error: any Error) {
            guard mayHaveTakenEffect, let error = error as? PostgresError else {
                continuation.resume(throwing: error)
                return
            }
            continuation.resume(throwing: error.withOutcomeUnknown(true))
        }
    }

    /// Runs one batch on `connection`. Returns nil when every member was answered, or the error that made the
    /// connection unusable with the members still unanswered.
    public typealias Process = @Sendable (_ batch: [Member], _ connection: PostgresConnection) -> (error: any Error, unfinished: [Member])?

    private struct State {
        var queue: [Member] = []
        var runners = 0
        var nextID: UInt64 = 0
    }

    private let pool: PostgresPool
    private let maxBatchSize: Int
    private let maxConcurrentBatches: Int
    private let maxBatchWeight: Int
    private let weight: @Sendable (Item) -> Int
    private let process: Process
    private let onConnectionLost: @Sendable (_ error: any Error, _ unfinished: Int, _ failed: Int) -> Void
    /// Callers (cooperative threads) and runners (pool threads) share the queue: a lock, not an actor,
    /// because runners are plain threads that must not hop to an executor between batches.
    private let state = Mutex(State())

    /// - Parameters:
    ///   - maxBatchSize: Most items handed to one `process` call.
    ///   - maxConcurrentBatches: Most runners at once, each holding one pooled connection, so the rest of the
    ///     pool stays free for other work.
    ///   - maxBatchWeight: Most total `weight` in one batch; an item heavier than this on its own runs alone.
    ///     What a batch costs to send grows with it (each byte of a parameter is copied a few times on the
    ///     way to the socket), so a byte weight bounds the memory a batch needs.
    ///   - weight: An item's weight, taken once when it is submitted. Default: 0 (only `maxBatchSize` counts).
    ///   - onConnectionLost: Told when a batch lost its connection (for a log line): the error, how many
    ///     members were unanswered, and how many of those failed because it was their second loss.
    ///   - process: Runs one batch; see ``Process``.
    public init(
        pool: PostgresPool, maxBatchSize: Int, maxConcurrentBatches: Int,
        maxBatchWeight: Int = .max, weight: @escaping @Sendable (Item) -> Int = { _ in 0 },
        onConnectionLost: @escaping @Sendable (_ error: any Error, _ unfinished: Int, _ failed: Int) -> Void = { _, _, _ in },
        process: @escaping Process
    ) {
        precondition(maxBatchSize >= 1 && maxConcurrentBatches >= 1, "PoolBatcher limits must be positive")
        self.pool = pool
        self.maxBatchSize = maxBatchSize
        self.maxConcurrentBatches = maxConcurrentBatches
        self.maxBatchWeight = maxBatchWeight
        self.weight = weight
        self.onConnectionLost = onConnectionLost
        self.process = process
    }

    /// Items waiting for a batch right now.
    public var queued: Int { state.withLock { $0.queue.count } }

    /// Runs `item` in the next batch and returns what `process` answered for it.
    ///
    /// - Throws: what `process` answered; the connection error after a second lost connection or when no
    ///   connection could be had; `CancellationError` when the task is cancelled while the item is still
    ///   queued (an item already handed to `process` is not interrupted).
    public func submit(_ item: Item) async throws -> Output {
        let id = state.withLock { state in
            state.nextID &+= 1
            return state.nextID
        }
        let weight = weight(item)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Output, any Error>) in
                // Checked under the lock the cancellation handler takes, so a cancellation is never missed.
                let action: (start: Bool, cancelled: Bool) = state.withLock { state in
                    if Task.isCancelled { return (false, true) }
                    state.queue.append(Member(item: item, id: id, weight: weight, continuation: continuation))
                    guard state.runners < maxConcurrentBatches else { return (false, false) }
                    state.runners += 1
                    return (true, false)
                }
                if action.cancelled {
                    continuation.resume(throwing: CancellationError())
                } else if action.start {
                    startRunner()
                }
            }
        } onCancel: {
            let removed: Member? = state.withLock { state in
                guard let index = state.queue.firstIndex(where: { $0.id == id }) else { return nil }
                return state.queue.remove(at: index)
            }
            removed?.continuation.resume(throwing: CancellationError())
        }
    }

    // MARK: Runners

    /// Starts a runner for a slot already counted in `state.runners`.
    private func startRunner() {
        let accepted = pool.submit({ connection in self.runLoop(on: connection) }, onFailure: { error in self.runnerFailed(error) })
        if !accepted {
            runnerFailed(PostgresError(code: .poolClosed, serverMessage: "the pool is closed"))
        }
    }

    /// A runner that never got a connection gives up its slot; the last one standing fails the queue,
    /// since nobody else would take it.
    private func runnerFailed(_ error: any Error) {
        let orphans: [Member] = state.withLock { state in
            state.runners -= 1
            guard state.runners == 0 else { return [] }
            defer { state.queue.removeAll() }
            return state.queue
        }
        for member in orphans {
            member.fail(error)
        }
    }

    /// Runs batches until the queue is empty; returns the error that made the connection unusable, if any.
    private func runLoop(on connection: PostgresConnection) -> (any Error)? {
        while true {
            let batch: [Member] = state.withLock { state in
                guard !state.queue.isEmpty else {
                    state.runners -= 1
                    return []
                }
                var cut = BatchCut(maxCount: maxBatchSize, maxWeight: maxBatchWeight)
                for member in state.queue where !cut.take(weight: member.weight) { break }
                defer { state.queue.removeFirst(cut.count) }
                return Array(state.queue.prefix(cut.count))
            }
            if batch.isEmpty { return nil }
            if let (error, unfinished) = process(batch, connection) {
                connectionLost(error, unfinished: unfinished)
                return error
            }
        }
    }

    /// The connection broke under `unfinished`: first-timers go back to the head of the queue; repeaters
    /// fail, and so does everyone, queue included, after a silent connection. This runner ends; a
    /// replacement takes its slot when work remains.
    private func connectionLost(_ error: any Error, unfinished: [Member]) {
        let worthRetrying = (error as? PostgresError)?.code != .serverTimeout
        let (failed, restart): ([Member], Bool) = state.withLock { state in
            var failed: [Member] = []
            var retry: [Member] = []
            for var member in unfinished {
                if member.retried || !worthRetrying {
                    failed.append(member)
                } else {
                    member.retried = true
                    retry.append(member)
                }
            }
            state.queue.insert(contentsOf: retry, at: 0)
            if !worthRetrying {
                failed.append(contentsOf: state.queue)
                state.queue.removeAll()
            }
            if state.queue.isEmpty {
                state.runners -= 1
                return (failed, false)
            }
            return (failed, true)
        }
        onConnectionLost(error, unfinished.count, failed.count)
        for member in failed {
            member.fail(error)
        }
        if restart { startRunner() }
    }
}

/// Where the next batch ends: items at the head of the queue are offered one at a time, in order, until
/// one is refused. A batch takes at least one item, at most `maxCount`, and no more than `maxWeight` in
/// all unless the first alone weighs more.
///
/// A value fed in a loop rather than a function over a sequence: the batcher is generic, and handing it
/// `queue.lazy.map(\.weight)` instantiated a key path and walked an unspecialised lazy sequence on every
/// batch, a few per cent of a lookup's CPU in profiles.
struct BatchCut {
    let maxCount: Int
    let maxWeight: Int
    /// Items taken so far.
    private(set) var count = 0
    private var total = 0

    init(maxCount: Int, maxWeight: Int) {
        self.maxCount = maxCount
        self.maxWeight = maxWeight
    }

    /// Takes the next item if the batch has room for its weight; `false` ends the batch.
    mutating func take(weight: Int) -> Bool {
        guard count < maxCount else { return false }
        if count > 0, weight > maxWeight - total { return false }
        total = weight > maxWeight - total ? maxWeight : total + weight
        count += 1
        return true
    }

    /// How many items at the head of a queue with these `weights` form the next batch.
    static func length(weights: [Int], maxCount: Int, maxWeight: Int) -> Int {
        var cut = BatchCut(maxCount: maxCount, maxWeight: maxWeight)
        for weight in weights where !cut.take(weight: weight) { break }
        return cut.count
    }
}
