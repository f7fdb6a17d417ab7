import Synchronization

/// Bounds the listings (job lists, job histories, the console's rejected callbacks) that hold a pooled
/// connection at once, so that a loop of dashboard refreshes can take at most ``Configuration/concurrency``
/// of the pool's connections and the rest stay free for callbacks and lookups. Without it, eight clients
/// listing in a loop held all eight default connections, and callbacks waited behind them for one.
///
/// Beyond the concurrency, up to ``Configuration/maxWaiting`` listings wait for a slot, first come first
/// served, for at most `maxWait` (the pool's `DB_ACQUIRE_TIMEOUT`, the wait for a connection this one
/// stands in front of); a listing beyond the queue, or one that waited that long, is refused with
/// ``TooManyListings`` (the service answers 503 with `Retry-After`) rather than queued without bound.
///
/// Listings yield to callbacks. The slots bound the connections listings hold, not the CPU they take: on
/// a small machine, eight clients listing in a loop through two slots still took half of the capacity
/// ingest had (measured at 5 M jobs on 2 cores: ingest at 0.56× its rate alone). So while callbacks wait
/// for the database (`ingestIsBackedUp`), a listing keeps its slot until ``Configuration/yieldUnderIngestLoad``
/// after it began, which caps listings at `concurrency / yield` a second for as long as ingest is short of
/// capacity; its answer is not delayed. With ingest keeping up, slots are handed on at once.
///
/// A lock rather than an actor: callers on the cooperative pool take and give back slots, and the waiting
/// ones are suspended on continuations; the state is a counter and a short queue.
public final class ListingLimit: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Listings holding a connection at once (`LIST_CONCURRENCY`). Default: 2.
        public var concurrency: Int
        /// Listings waiting for a slot (`LIST_QUEUE`); more are answered 503 at once. Default: 64.
        public var maxWaiting: Int
        /// While callbacks wait for the database, how long after it began a listing keeps its slot
        /// (`LIST_YIELD`); zero: never longer than the listing. Default: 100 ms, so at most
        /// `concurrency` × 10 listings a second then.
        public var yieldUnderIngestLoad: Duration

        public init(concurrency: Int = 2, maxWaiting: Int = 64, yieldUnderIngestLoad: Duration = .milliseconds(100)) {
            self.concurrency = max(1, concurrency)
            self.maxWaiting = max(0, maxWaiting)
            self.yieldUnderIngestLoad = max(.zero, yieldUnderIngestLoad)
        }
    }

    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
        /// Refuses the listing when it has waited `maxWait`; cancelled when it gets its slot.
        let deadline: Task<Void, Never>
    }

    private struct State {
        var active = 0
        var waiting: [Waiter] = []
        var nextID: UInt64 = 0
    }

    public let configuration: Configuration
    /// Longest wait for a slot.
    public let maxWait: Duration
    /// Whether callbacks are waiting for the database right now; asked as each listing ends.
    private let ingestIsBackedUp: @Sendable () -> Bool
    private let state = Mutex(State())

    public init(
        _ configuration: Configuration = Configuration(), maxWait: Duration = .seconds(10), ingestIsBackedUp: @escaping @Sendable () -> Bool = { false }
    ) {
        self.configuration = configuration
        self.maxWait = maxWait
        self.ingestIsBackedUp = ingestIsBackedUp
    }

    /// Listings holding a slot, and listings waiting for one, right now.
    public var usage: (active: Int, waiting: Int) { state.withLock { ($0.active, $0.waiting.count) } }

    /// Runs `body` holding a slot: at once when one is free, after the listings ahead of it otherwise.
    ///
    /// - Throws: ``TooManyListings`` when ``Configuration/maxWaiting`` listings already wait, or after
    ///   ``maxWait`` without a slot;
    ///   `CancellationError` when the task is cancelled while waiting; whatever `body` throws.
    public func withSlot<T>(_ body: () async throws -> T) async throws -> T {
        try await acquire()
        let began = ContinuousClock.now
        defer { giveBack(began: began) }
        return try await body()
    }

    /// When a listing that began at `began` and ends at `now` gives its slot back: nil for at once, or the
    /// instant it yields until (``Configuration/yieldUnderIngestLoad`` after it began, while ingest is
    /// backed up).
    static func heldUntil(
        began: ContinuousClock.Instant, now: ContinuousClock.Instant, yield: Duration, ingestIsBackedUp: Bool
    ) -> ContinuousClock.Instant? {
        guard ingestIsBackedUp, yield > .zero, now < began + yield else { return nil }
        return began + yield
    }

    private func giveBack(began: ContinuousClock.Instant) {
        guard let until = Self.heldUntil(began: began, now: .now, yield: configuration.yieldUnderIngestLoad, ingestIsBackedUp: ingestIsBackedUp())
        else {
            release()
            return
        }
        // The listing has answered; only its slot waits. Cancelled or not, the sleep ends by `until`.
        Task {
            try? await Task.sleep(until: until, clock: .continuous)
            self.release()
        }
    }

    private func acquire() async throws {
        enum Entry { case granted, full, cancelled, queued }
        let id = state.withLock { state -> UInt64 in
            state.nextID &+= 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let entry: Entry = state.withLock { state in
                    if Task.isCancelled { return .cancelled }
                    if state.active < configuration.concurrency {
                        state.active += 1
                        return .granted
                    }
                    guard state.waiting.count < configuration.maxWaiting else { return .full }
                    let deadline = Task { [maxWait] in
                        guard (try? await Task.sleep(for: maxWait)) != nil else { return }
                        self.expire(id)
                    }
                    state.waiting.append(Waiter(id: id, continuation: continuation, deadline: deadline))
                    return .queued
                }
                switch entry {
                case .granted: continuation.resume()
                case .full: continuation.resume(throwing: refusal(timedOut: false))
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .queued: break
                }
            }
        } onCancel: {
            let removed: Waiter? = state.withLock { state in
                guard let index = state.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiting.remove(at: index)
            }
            removed?.deadline.cancel()
            removed?.continuation.resume(throwing: CancellationError())
        }
    }

    /// A listing still waiting at its deadline leaves the queue, refused.
    private func expire(_ id: UInt64) {
        let removed: Waiter? = state.withLock { state in
            guard let index = state.waiting.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiting.remove(at: index)
        }
        removed?.continuation.resume(throwing: refusal(timedOut: true))
    }

    /// Hands the slot to the first waiting listing, or frees it.
    private func release() {
        let next: Waiter? = state.withLock { state in
            guard !state.waiting.isEmpty else {
                state.active -= 1
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.deadline.cancel()
        next?.continuation.resume()
    }

    private func refusal(timedOut: Bool) -> TooManyListings {
        TooManyListings(concurrency: configuration.concurrency, maxWaiting: configuration.maxWaiting, waited: timedOut ? maxWait : nil)
    }
}

/// A listing refused because ``ListingLimit/Configuration/maxWaiting`` listings already wait for a slot,
/// or because it waited ``ListingLimit/maxWait`` for one: nothing was read; retry shortly.
public struct TooManyListings: Error, Sendable, Hashable, CustomStringConvertible {
    public var concurrency: Int
    public var maxWaiting: Int
    /// Set when the listing waited this long without a slot; nil when the queue was full.
    public var waited: Duration?

    public var description: String {
        if let waited {
            return "a listing waited \(waited) for one of the \(concurrency) listing slots (LIST_CONCURRENCY, DB_ACQUIRE_TIMEOUT)"
        }
        return "\(maxWaiting) listings already wait for one of the \(concurrency) listing slots (LIST_CONCURRENCY, LIST_QUEUE)"
    }
}
