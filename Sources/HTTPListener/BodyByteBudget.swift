import Synchronization

/// Request-body bytes held in memory across all connections, against a limit: pure accounting.
///
/// Each holder (a connection reading a body, then the request being handled) keeps its own count of what
/// it reserved, and grows it as the body is announced; the budget refuses growth that would pass the
/// limit, so a flood of large bodies is answered 503 instead of exhausting memory.
struct BodyByteBudget: Sendable, Hashable {
    /// The most bytes reserved at once.
    let limit: Int
    /// Bytes reserved now, by every holder together.
    private(set) var reserved = 0

    init(limit: Int) {
        self.limit = max(0, limit)
    }

    /// Grows a holder's reservation from `held` to `wanted` bytes. Returns false, changing nothing, when
    /// that would pass the limit. A reservation never shrinks here (see ``release(_:)``).
    mutating func grow(_ held: inout Int, to wanted: Int) -> Bool {
        guard wanted > held else { return true }
        let extra = wanted - held
        guard extra <= limit - reserved else { return false }
        reserved += extra
        held = wanted
        return true
    }

    /// Gives back a holder's whole reservation and sets it to 0.
    mutating func release(_ held: inout Int) {
        reserved -= min(held, reserved)
        held = 0
    }
}

/// The one ``BodyByteBudget`` of a server, shared by its event loops and its responder tasks (which
/// release what a request held once it is answered): hence the lock. Taken only for requests that
/// carry a body, briefly, never around I/O.
final class SharedBodyByteBudget: Sendable {
    private let budget: Mutex<BodyByteBudget>
    private let statistics: ListenerStatistics

    init(limit: Int, statistics: ListenerStatistics) {
        budget = Mutex(BodyByteBudget(limit: limit))
        self.statistics = statistics
    }

    /// See ``BodyByteBudget/grow(_:to:)``.
    func grow(_ held: inout Int, to wanted: Int) -> Bool {
        guard wanted > held else { return true }
        return budget.withLock { budget in
            defer { statistics.bodyBytesInFlightCounter.store(budget.reserved, ordering: .relaxed) }
            return budget.grow(&held, to: wanted)
        }
    }

    /// See ``BodyByteBudget/release(_:)``.
    func release(_ held: inout Int) {
        guard held > 0 else { return }
        budget.withLock { budget in
            budget.release(&held)
            statistics.bodyBytesInFlightCounter.store(budget.reserved, ordering: .relaxed)
        }
    }
}
