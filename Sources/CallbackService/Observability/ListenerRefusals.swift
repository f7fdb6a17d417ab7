import HTTPListener
import HTTPWire
import Logging
import Synchronization

/// What the service does with the listener's refusals: counts each in
/// `http_listener_refusals_total{reason,status}` and logs it through the service logger, rate-limited per
/// reason (the first few per interval, then one `http listener refusals suppressed` line with the count,
/// written with the next refusal or the next `/metrics` scrape after the interval), so a flood is visible
/// in the metrics and the log without flooding the log.
final class ListenerRefusalRecorder: Sendable {
    /// Refusal lines per reason per interval.
    static let burst = 10
    static let interval: Duration = .seconds(10)

    private let metrics: ServiceMetrics
    private let logger: Logger
    private let interval: Duration
    private let now: @Sendable () -> ContinuousClock.Instant
    /// Shared by every event loop (each reports its own refusals): hence the lock. Held only to decide.
    private let limiter: Mutex<LogRateLimiter<HTTPRefusal.Reason>>

    init(
        metrics: ServiceMetrics, logger: Logger, burst: Int = ListenerRefusalRecorder.burst, interval: Duration = ListenerRefusalRecorder.interval,
        now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) {
        self.metrics = metrics
        self.logger = logger
        self.interval = interval
        self.now = now
        limiter = Mutex(LogRateLimiter(burst: burst, interval: interval))
    }

    /// Records one refusal; `response` is what was sent (nil when the connection closed unanswered).
    func record(_ refusal: HTTPRefusal, response: HTTPResponse?) {
        metrics.recordListenerRefusal(reason: refusal.reason, status: refusal.status)
        let instant = now()
        let (summaries, log) = limiter.withLock { limiter in
            (limiter.drain(at: instant), limiter.shouldLog(refusal.reason, at: instant))
        }
        write(summaries)
        guard log else { return }
        var metadata: Logger.Metadata = [
            "http.refusal": "\(refusal.reason.rawValue)",
            "http.status": "\(refusal.status.map { String($0.code) } ?? "none")",
            "http.reason": "\(refusal.message)",
            "net.peer": "\(refusal.remoteAddress)",
        ]
        if let requestID = response?.headers["X-Request-Id"] { metadata["request.id"] = "\(requestID)" }
        logger.log(level: Self.level(refusal.reason), "http request refused", metadata: metadata)
    }

    /// Writes the summary of every interval that is over, so one does not wait for the next refusal of its
    /// kind (a flood that stopped). Called on each `/metrics` scrape.
    func writeSummaries() {
        let instant = now()
        write(limiter.withLock { $0.drain(at: instant) })
    }

    private func write(_ summaries: [(key: HTTPRefusal.Reason, suppressed: Int)]) {
        for summary in summaries {
            logger.log(
                level: Self.level(summary.key), "http listener refusals suppressed",
                metadata: [
                    "http.refusal": "\(summary.key.rawValue)", "log.suppressed": "\(summary.suppressed)",
                    "log.interval_s": "\(interval.components.seconds)",
                ])
        }
    }

    /// Warning for what an operator must act on (capacity, memory), notice for a client's mistake.
    private static func level(_ reason: HTTPRefusal.Reason) -> Logger.Level {
        switch reason {
        case .atCapacity, .atCapacityUnanswered, .peerLimit, .evicted, .bodyBudget: .warning
        default: .notice
        }
    }
}
