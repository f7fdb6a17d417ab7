import Foundation

/// Limits and schedule of outgoing webhook deliveries: one settings struct, with the defaults documented
/// (README, Webhooks).
public struct WebhookDeliveryConfiguration: Sendable, Hashable {
    /// Pauses before the 2nd, 3rd, … attempt; the first is sent at once. After the last, the delivery is
    /// `failed` (the dead letter). Default, as Standard Webhooks suggests: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
    /// 14 h, 20 h, 24 h (10 attempts over about 3 days).
    public var retrySchedule: [Duration] = [
        .seconds(5), .seconds(300), .seconds(1800), .seconds(7200), .seconds(18_000), .seconds(36_000), .seconds(50_400),
        .seconds(72_000), .seconds(86_400),
    ]
    /// Each pause is scaled by a random factor in 1 ± this, so endpoints recovering from an outage are not
    /// hit by every retry at once. Default 0.2.
    public var jitter = 0.2
    /// Longest `Retry-After` (on 429 and 503) honoured; a longer one is shortened to this. Default 24 h.
    public var maxRetryAfter: Duration = .seconds(86_400)
    /// Time for one attempt, connection included (`WEBHOOK_TIMEOUT`). Default 15 s.
    public var timeout: Duration = .seconds(15)
    /// Response body bytes read; the rest is not read. Default 64 KiB.
    public var maxResponseBytes = 64 * 1024
    /// POSTs in flight at once in this replica (`WEBHOOK_CONCURRENCY`), and the leased pending deliveries
    /// it holds; a walk takes up to four times this many events of each subscription it leases, and leases
    /// only as many subscriptions as keep the walked deliveries held within sixteen times this many
    /// (``WebhookDeliveryWorker/walkedInFlightLimit(concurrency:)``), those walked least recently first.
    /// Default 64.
    ///
    /// A leased attempt holds its slot until its outcome is recorded, two database round trips besides the
    /// POST; with 16 slots that cycle capped delivery near 600/s against a fast consumer (Benchmarks/webhooks.py,
    /// latency: the backlog grew without end at 1,000 deliveries/s wanted).
    public var concurrency = 64
    /// Most of one subscription's POSTs in flight at once in this replica (`WEBHOOK_SUBSCRIPTION_CONCURRENCY`);
    /// nil: half of ``concurrency``. A consumer that never answers holds this many slots for a whole
    /// ``timeout`` at a time, and the others are everyone else's: with many subscriptions, a smaller share
    /// keeps a few hanging consumers from taking every slot between them. At most ``concurrency``
    /// (``subscriptionShare``).
    public var subscriptionConcurrency: Int? = nil

    /// The most POSTs of one subscription in flight at once: ``subscriptionConcurrency``, or half of
    /// ``concurrency``; at least 1 and at most ``concurrency``.
    public var subscriptionShare: Int {
        let concurrency = max(1, concurrency)
        return min(concurrency, max(1, subscriptionConcurrency ?? concurrency / 2))
    }
    /// How long a leased attempt is kept from other replicas beyond ``timeout``: a replica killed mid-attempt
    /// is replaced after `timeout + leaseMargin`. Default 15 s.
    public var leaseMargin: Duration = .seconds(15)
    /// Least time from one walk of the subscriptions' cursors to the next: new events notified meanwhile
    /// go out in the next walk, so that under load a walk sends and records many deliveries at once (each
    /// walk and its record are a statement of fixed cost). Adds at most this much to a delivery's latency
    /// (`WEBHOOK_WALK_SPACING`). Default 10 ms: at 1,450–1,500 callbacks/s with 2 subscriptions
    /// (Benchmarks/webhooks.py, latency, `--paced-connections 96`), no spacing gave p99 74 ms at 1.02 ms of
    /// CPU (service and PostgreSQL) per callback, 25 ms gave 100 ms at 0.94, and 10 ms 65 ms at 0.92.
    public var walkSpacing: Duration = .milliseconds(10)
    /// Pause between polls of the queue when no notification arrives (retries come due by time). Default 1 s.
    public var pollInterval: Duration = .seconds(1)
    /// Consecutive failed attempts after which a subscription is flagged failing (GET, metrics). Default 5.
    public var failingThreshold = 5
    /// Consecutive attempts failing for the endpoint's sake (no answer, 5xx, 429) that open a
    /// subscription's circuit breaker (`WEBHOOK_BREAKER_AFTER`): its deliveries then wait, using up no
    /// attempts, while single probes test the endpoint. Default 5.
    public var breakerThreshold = 5
    /// The wait before the first probe after the breaker opens (`WEBHOOK_BREAKER_COOL_DOWN`); doubled after
    /// each failed probe. Default 1 s.
    public var breakerCoolDown: Duration = .seconds(1)
    /// The longest wait between probes (`WEBHOOK_BREAKER_MAX_COOL_DOWN`). Default 10 s: an endpoint that
    /// is back waits up to this long for the probe that finds it, while its backlog keeps growing (with
    /// 60 s, a 30 s outage under load took 80 s to catch up, against issue 13's goal of 60 s).
    public var breakerMaxCoolDown: Duration = .seconds(10)
    /// Destination blocks always refused unless allowed explicitly: link-local and cloud metadata addresses.
    public var deniedDestinations: [IPAddressRange] = ["169.254.0.0/16", "fe80::/10"].compactMap(IPAddressRange.init)
    /// When not empty, the only destination blocks allowed (`WEBHOOK_ALLOW_CIDRS`); an allowed block also
    /// lifts the default denial inside it.
    public var allowedDestinations: [IPAddressRange] = []

    /// The defaults.
    public init() {}

    /// Whether an attempt may connect to `address`.
    public func allowsDestination(_ address: IPAddress) -> Bool {
        if !allowedDestinations.isEmpty { return allowedDestinations.contains { $0.contains(address) } }
        return !deniedDestinations.contains { $0.contains(address) }
    }

    /// Attempts a delivery gets before it is `failed`.
    public var maxAttempts: Int { retrySchedule.count + 1 }
}

/// What one attempt's outcome means for its delivery: the delivery's state machine, pure.
public enum WebhookAttemptDecision: Sendable, Hashable {
    /// 2xx: delivered.
    case succeeded
    /// Another attempt after this pause.
    case retry(after: Duration)
    /// No attempts left: the dead letter.
    case failed
    /// 410 Gone: the delivery fails and the subscription is disabled.
    case gone

    /// How an attempt ended, as the worker saw it.
    public struct Outcome: Sendable, Hashable {
        /// The response status; nil when no response came (connection refused, timeout, address refused).
        public var status: Int?
        /// Seconds the response's `Retry-After` asked for.
        public var retryAfterSeconds: Int64?

        public init(status: Int?, retryAfterSeconds: Int64? = nil) {
            self.status = status
            self.retryAfterSeconds = retryAfterSeconds
        }
    }

    /// - Parameters:
    ///   - attempt: 1 for the first attempt of the delivery's current schedule (a manual retry starts a new one).
    ///   - random: a number in 0..<1 for the jitter (injected, so tests are exact), drawn only for a retry: the
    ///     system generator is a getrandom(2) call, which every success paid for.
    public static func decide(
        _ outcome: Outcome, attempt: Int, configuration: WebhookDeliveryConfiguration, random: @autoclosure () -> Double
    ) -> WebhookAttemptDecision {
        if let status = outcome.status {
            if (200...299).contains(status) { return .succeeded }
            if status == 410 { return .gone }
        }
        guard attempt < configuration.maxAttempts, attempt >= 1 else { return .failed }
        if let status = outcome.status, status == 429 || status == 503, let seconds = outcome.retryAfterSeconds, seconds >= 0 {
            return .retry(after: min(.seconds(seconds), configuration.maxRetryAfter))
        }
        let pause = configuration.retrySchedule[attempt - 1]
        let factor = 1 + configuration.jitter * (2 * min(max(random(), 0), 1) - 1)
        return .retry(after: pause * factor)
    }
}
