/// Lets the first `burst` events of each key through per `interval` and counts the rest, so a flood (of
/// refused connections, say) cannot flood the log; ``drain(at:)`` then says how many each key held back.
///
/// Pure: the caller passes the time, so tests drive it with instants they make.
public struct LogRateLimiter<Key: Hashable & Sendable>: Sendable {
    /// Events of one key in its current interval.
    private struct Window: Sendable {
        var start: ContinuousClock.Instant
        var logged = 0
        var suppressed = 0
    }

    /// Events of one key logged per interval.
    public let burst: Int
    /// The length of one key's interval, from its first event.
    public let interval: Duration
    private var windows: [Key: Window] = [:]

    /// Creates a limiter.
    /// - Parameters:
    ///   - burst: Events of one key logged per interval (at least 1).
    ///   - interval: How long one key's interval lasts, from its first event.
    public init(burst: Int, interval: Duration) {
        self.burst = max(1, burst)
        self.interval = interval
    }

    /// Whether to log an event of `key` happening at `now`: true for the first `burst` of its interval.
    /// Call ``drain(at:)`` first, so an interval that has ended is summed up before a new one starts.
    public mutating func shouldLog(_ key: Key, at now: ContinuousClock.Instant) -> Bool {
        var window = windows[key] ?? Window(start: now)
        defer { windows[key] = window }
        guard window.logged < burst else {
            window.suppressed += 1
            return false
        }
        window.logged += 1
        return true
    }

    /// Ends every interval that is over at `now` and returns, for each that held events back, its key
    /// and how many: one summary line each instead of the lines themselves.
    public mutating func drain(at now: ContinuousClock.Instant) -> [(key: Key, suppressed: Int)] {
        var summaries: [(key: Key, suppressed: Int)] = []
        for (key, window) in windows where now - window.start >= interval {
            if window.suppressed > 0 { summaries.append((key, window.suppressed)) }
            windows[key] = nil
        }
        return summaries
    }
}
