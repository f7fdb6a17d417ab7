import Foundation
import JobStore
import TimeUnits

/// The circuit breaker of one subscription: whether its endpoint is taking deliveries. Pure; the stored
/// state (``WebhookBreakerRecord``, a row of `webhook_subscriptions`) is shared by every replica, which
/// apply attempts to it under the row's lock.
///
/// Closed, it counts consecutive attempts that failed for the endpoint's sake (no answer, 5xx, 429) and
/// opens after ``WebhookDeliveryConfiguration/breakerThreshold`` of them. Open, the lease takes none of
/// the subscription's deliveries until the cool-down has passed, then one: the probe (half-open while it
/// is in flight; the lease does that part, in SQL). The probe's success closes the breaker; its failure
/// opens it again for twice as long, up to ``WebhookDeliveryConfiguration/breakerMaxCoolDown``. A
/// `Retry-After` is the cool-down's floor. Failures recorded while the breaker is open do not use up
/// their delivery's retry schedule: an outage fails no delivery, however long it lasts.
public struct WebhookCircuitBreaker: Sendable, Hashable {
    public private(set) var record: WebhookBreakerRecord

    public init(_ record: WebhookBreakerRecord = WebhookBreakerRecord()) {
        self.record = record
    }

    /// What an attempt says about the endpoint.
    public enum Signal: Sendable, Hashable {
        /// 2xx, or any answer that is the endpoint's verdict on the delivery (4xx but 429): it is up.
        case answered
        /// No answer (connection error, timeout), 5xx or 429: counts towards opening.
        case failed(retryAfter: Duration?)

        /// Classifies an attempt's outcome.
        public init(_ outcome: WebhookAttemptDecision.Outcome) {
            guard let status = outcome.status else {
                self = .failed(retryAfter: nil)
                return
            }
            if status == 429 || (500...599).contains(status) {
                self = .failed(retryAfter: outcome.retryAfterSeconds.flatMap { $0 >= 0 ? .seconds($0) : nil })
            } else {
                self = .answered
            }
        }
    }

    /// What the caller does after an attempt was applied.
    public enum Action: Sendable, Hashable {
        /// Nothing changes for the subscription's deliveries.
        case none
        /// The breaker opened (or opened again after a failed probe): no attempts until `nextProbe`.
        case open(nextProbe: Date)
        /// The breaker closed after being open: the held-back deliveries go out again.
        case close
    }

    /// The result of applying one attempt.
    public struct Transition: Sendable, Hashable {
        public var action: Action
        /// The attempt's failure does not use up its delivery's retry schedule: the delivery waits for the
        /// breaker instead (the attempt was the probe, or the breaker is open after it).
        public var holdsDelivery: Bool
    }

    /// How many deliveries the lease may take from the subscription at `now`.
    public enum Admission: Sendable, Hashable {
        case any
        /// One probe: the cool-down has passed (or a probe's lease ran out with no outcome).
        case probe
        case none
    }

    /// The lease's rule (``JobStore/leaseDeliveries(limit:lease:)`` applies it in SQL, on
    /// `breaker_next_probe_at`).
    public func admission(at now: Date) -> Admission {
        guard let nextProbe = record.nextProbeAt else { return .any }
        return nextProbe <= now ? .probe : .none
    }

    /// The pause after the `openings`-th opening in a row: the base cool-down doubled each time, capped.
    public static func coolDown(openings: Int, configuration: WebhookDeliveryConfiguration) -> Duration {
        let doublings = max(0, min(openings - 1, 40))
        let seconds = configuration.breakerCoolDown.inSeconds * pow(2, Double(doublings))
        return min(.seconds(seconds), configuration.breakerMaxCoolDown)
    }

    /// Applies one finished attempt, `probe` when the lease took it as the breaker's probe.
    public mutating func apply(
        _ signal: Signal, probe: Bool, at now: Date, configuration: WebhookDeliveryConfiguration
    ) -> Transition {
        switch (signal, record.state) {
        case (.answered, .closed):
            record.failures = 0
            return Transition(action: .none, holdsDelivery: false)
        case (.answered, .open), (.answered, .halfOpen):
            // A probe, or an attempt that was in flight when the breaker opened: either way the endpoint
            // answers again.
            record = WebhookBreakerRecord(state: .closed, failures: 0, openings: 0, since: now, nextProbeAt: nil)
            return Transition(action: .close, holdsDelivery: false)
        case (.failed(let retryAfter), .closed):
            record.failures += 1
            guard record.failures >= configuration.breakerThreshold else { return Transition(action: .none, holdsDelivery: false) }
            let nextProbe = Self.nextProbe(after: now, openings: 1, retryAfter: retryAfter, configuration: configuration)
            record = WebhookBreakerRecord(state: .open, failures: record.failures, openings: 1, since: now, nextProbeAt: nextProbe)
            return Transition(action: .open(nextProbe: nextProbe), holdsDelivery: true)
        case (.failed(let retryAfter), .open), (.failed(let retryAfter), .halfOpen):
            record.failures += 1
            if probe {
                record.openings += 1
                record.state = .open
                let nextProbe = Self.nextProbe(after: now, openings: record.openings, retryAfter: retryAfter, configuration: configuration)
                record.nextProbeAt = nextProbe
                return Transition(action: .open(nextProbe: nextProbe), holdsDelivery: true)
            }
            // An attempt leased before the breaker opened: it changes no cool-down, but a Retry-After
            // still pushes the next probe back.
            if let retryAfter, let nextProbe = record.nextProbeAt {
                let floor = now.addingTimeInterval(min(retryAfter, configuration.maxRetryAfter).inSeconds)
                if floor > nextProbe {
                    record.nextProbeAt = floor
                    return Transition(action: .open(nextProbe: floor), holdsDelivery: true)
                }
            }
            return Transition(action: .none, holdsDelivery: true)
        }
    }

    private static func nextProbe(after now: Date, openings: Int, retryAfter: Duration?, configuration: WebhookDeliveryConfiguration) -> Date {
        var pause = coolDown(openings: openings, configuration: configuration)
        if let retryAfter { pause = max(pause, min(retryAfter, configuration.maxRetryAfter)) }
        return now.addingTimeInterval(pause.inSeconds)
    }
}
