import CIModel
import Foundation
import JobStore
import Logging
import ServiceLifecycle
import Synchronization
import TimeUnits

/// Sends pending webhook deliveries, in every replica at once.
///
/// Deliveries are leased (``JobStore/leaseDeliveries(limit:lease:)``: `FOR UPDATE SKIP LOCKED` plus a lease
/// time), so each attempt is sent by one replica; each job's deliveries to one subscription go out one at a
/// time, oldest event first, so a consumer never gets an older state after a newer one. Woken by the
/// sequencer's `NOTIFY` (a new delivery) and every ``WebhookDeliveryConfiguration/pollInterval`` (retries
/// come due by time); at most ``WebhookDeliveryConfiguration/concurrency`` attempts are in flight, an attempt
/// counting until its outcome is recorded.
///
/// Outcomes are recorded in batches (``JobStore/completeDeliveries(_:)``) by one recording task: whatever
/// finished while the previous batch was being written goes in the next statement. Recording one outcome
/// per transaction made the database's cost per delivery, above all a commit each, the ceiling of the
/// delivery rate.
public struct WebhookDeliveryWorker: Service {
    let store: JobStore
    let signal: WakeSignal
    let configuration: WebhookDeliveryConfiguration
    let metrics: ServiceMetrics
    let logger: Logger
    private let client: WebhookHTTPClient

    /// How often the backlog gauges are refreshed.
    static let backlogInterval: Duration = .seconds(10)

    /// Free attempt slots the worker waits for before it leases again, while attempts are in flight: a
    /// quarter of the concurrency.
    static func leaseBatch(concurrency: Int) -> Int { max(1, concurrency / 4) }

    /// Most outcomes one recording statement writes.
    static let recordingBatch = 128

    public init(store: JobStore, signal: WakeSignal, configuration: WebhookDeliveryConfiguration, metrics: ServiceMetrics, logger: Logger) {
        self.store = store
        self.signal = signal
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.client = WebhookHTTPClient(configuration: configuration)
    }

    public func run() async throws {
        let inFlight = InFlightCount()
        let finished = FinishedAttempts()
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { [signal = self.signal, interval = self.configuration.pollInterval] in await signal.signalEvery(interval) }
                group.addTask {
                    for await _ in finished.signal.wakeups {
                        while true {
                            let batch = finished.take(max: Self.recordingBatch)
                            if batch.isEmpty { break }
                            await self.record(batch)
                            inFlight.value.subtract(batch.count, ordering: .relaxed)
                            // Free slots, and maybe these jobs' next deliveries: look again.
                            self.signal.signal()
                        }
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        await self.refreshBacklogMetrics()
                        do {
                            try await Task.sleep(for: Self.backlogInterval)
                        } catch {
                            return
                        }
                    }
                }
                self.signal.signal()
                for await _ in self.signal.wakeups {
                    let busy = inFlight.value.load(ordering: .relaxed)
                    let free = self.configuration.concurrency - busy
                    // Leases go in batches: one costs the database about as much for one delivery as for
                    // sixteen, and leasing a single slot each time an attempt finished made the lease query
                    // the ceiling of the delivery rate (measured: about 50 deliveries/s under a backlog).
                    guard free > 0, busy == 0 || free >= Self.leaseBatch(concurrency: self.configuration.concurrency) else { continue }
                    let leased: [LeasedDelivery]
                    do {
                        leased = try await self.store.leaseDeliveries(limit: free, lease: self.configuration.timeout + self.configuration.leaseMargin)
                    } catch {
                        self.logger.warning("leasing webhook deliveries failed", metadata: ["error": "\(error)"])
                        continue
                    }
                    for delivery in leased {
                        inFlight.value.add(1, ordering: .relaxed)
                        group.addTask {
                            finished.append(await self.attempt(delivery))
                        }
                    }
                    if leased.count == free { self.signal.signal() }
                }
                group.cancelAll()
            }
        }
        client.finish()
    }

    /// The body of a delivery: `{"type":…,"timestamp":…,"data":…}`, `data` being the job's lookup body.
    static func body(of event: JobStateEvent) -> [UInt8] {
        var json = JSONWriter(reservingCapacity: 2048)
        json.beginObject()
        CallbackApplication.writeEventPayload(event, into: &json)
        json.endObject()
        return json.bytes
    }

    /// Sends one attempt; returns its outcome, to be recorded.
    func attempt(_ delivery: LeasedDelivery) async -> FinishedAttempt {
        let body = Self.body(of: delivery.event)
        let id = delivery.event.publicID
        let startedAt = Date()
        let timestamp = Int64(startedAt.timeIntervalSince1970)
        let started = ContinuousClock.now
        let response: WebhookHTTPClient.Response
        if let signature = WebhookSigning.signature(secret: delivery.secret, id: id, timestamp: timestamp, body: body) {
            response = await client.post(
                url: delivery.url,
                headers: [
                    ("Content-Type", "application/json"), ("webhook-id", id), ("webhook-timestamp", String(timestamp)),
                    ("webhook-signature", signature),
                ],
                body: body)
        } else {
            response = .init(status: nil, retryAfterSeconds: nil, error: "the subscription's secret is not a whsec_ secret")
        }
        let elapsed = started.duration(to: .now)
        let decision = WebhookAttemptDecision.decide(
            .init(status: response.status, retryAfterSeconds: response.retryAfterSeconds), attempt: delivery.scheduleAttempt,
            configuration: configuration, random: Double.random(in: 0..<1))
        let completion: DeliveryCompletion =
            switch decision {
            case .succeeded: .succeeded
            case .retry(let pause): .retry(afterMilliseconds: pause.inMilliseconds)
            case .failed: .failed
            case .gone: .gone
            }
        let error = response.error ?? response.status.flatMap { (200...299).contains($0) ? nil : "HTTP \($0)" }
        return FinishedAttempt(
            delivery: delivery, completion: completion, statusCode: response.status, retryAfterSeconds: response.retryAfterSeconds, error: error,
            startedAt: startedAt,
            finishedAt: startedAt.addingTimeInterval(elapsed.inSeconds))
    }

    /// Counts and logs recorded attempts, by what became of their deliveries: only once recorded, since a
    /// circuit breaker that opens may hold back an attempt that was its delivery's last (not the dead
    /// letter, then).
    func report(_ attempts: [FinishedAttempt]) {
        for attempt in attempts {
            let outcome =
                switch attempt.completion {
                case .succeeded: "succeeded"
                case .retry: "retried"
                case .heldBack: "held"
                case .failed: "failed"
                case .gone: "gone"
                }
            let elapsed = Duration.seconds(attempt.finishedAt.timeIntervalSince(attempt.startedAt))
            metrics.recordDeliveryAttempt(outcome: outcome, duration: elapsed)
            // The URL is left out: it may carry the consumer's own credentials. The secret is never
            // logged. A function, so that a debug line that is not logged (every success, by default)
            // builds nothing.
            func metadata(error: String?) -> Logger.Metadata {
                var metadata: Logger.Metadata = [
                    "webhook.subscription": "\(attempt.delivery.subscriptionID)", "webhook.delivery": "\(attempt.delivery.deliveryID)",
                    "webhook.event": "\(attempt.delivery.event.publicID)", "webhook.attempt": "\(attempt.delivery.attempt)",
                    "webhook.outcome": "\(outcome)", "http.status": "\(attempt.statusCode.map(String.init) ?? "-")",
                    "webhook.duration_ms": "\(CallbackApplication.milliseconds(elapsed))",
                ]
                if let error { metadata["error"] = "\(error)" }
                return metadata
            }
            switch attempt.completion {
            case .succeeded, .retry, .heldBack: logger.debug("webhook attempt", metadata: metadata(error: attempt.error ?? "-"))
            case .failed: logger.warning("webhook delivery failed for good", metadata: metadata(error: attempt.error ?? "-"))
            case .gone: logger.warning("webhook endpoint answered 410 Gone; subscription disabled", metadata: metadata(error: nil))
            }
        }
    }

    /// Records a batch of outcomes, trying once more after a failure (two replicas recording failures of
    /// one subscription may deadlock on its row; the database picks one to fail). If that fails too, the
    /// leases run out and the attempts are sent again (same webhook-id): at least once.
    ///
    /// Attempts that may move their subscription's circuit breaker (a failure, a probe, or any outcome on
    /// a breaker that was not closed and clean when leased) are recorded under the breaker's row lock,
    /// through ``applyBreakers(_:stored:now:configuration:)``; a batch of successes on healthy
    /// subscriptions takes no lock. A breaker another replica opened after this one leased is closed
    /// again only by its probe: one cool-down late at worst.
    func record(_ batch: [FinishedAttempt]) async {
        let moving = Self.subscriptionsMovingBreakers(batch)
        // The attempts as recorded: the transition below may hold some back. Shared with that closure,
        // which the store runs on its connection's thread, hence the lock.
        let recorded = Mutex(batch)
        defer { report(recorded.withLock { $0 }) }
        for attempt in 1...2 {
            do {
                if moving.isEmpty {
                    try await store.completeDeliveries(batch)
                } else {
                    try await store.completeDeliveries(batch, movingBreakersOf: moving) {
                        [configuration = self.configuration, logger = self.logger, metrics = self.metrics] stored, now in
                        let inputs = batch.map { BreakerInput(subscription: $0.delivery.subscriptionID, probe: $0.delivery.probe, signal: Self.signal(of: $0)) }
                        let applied = Self.applyBreakers(inputs, stored: stored, now: now, configuration: configuration)
                        for (subscription, action) in applied.actions { Self.report(action, subscription: subscription, logger: logger, metrics: metrics) }
                        var attempts = batch
                        for index in attempts.indices where applied.holds[index] {
                            switch attempts[index].completion {
                            case .retry, .failed: attempts[index].completion = .heldBack
                            case .succeeded, .gone, .heldBack: break
                            }
                        }
                        recorded.withLock { $0 = attempts }
                        return (attempts, applied.breakers)
                    }
                }
                return
            } catch {
                logger.warning(
                    "recording webhook attempts failed",
                    metadata: ["webhook.attempts": "\(batch.count)", "try": "\(attempt)", "error": "\(error)"])
            }
        }
    }

    /// The subscriptions of `batch` whose breakers the batch may move.
    static func subscriptionsMovingBreakers(_ batch: [FinishedAttempt]) -> Set<String> {
        Set(
            batch.filter { attempt in
                attempt.delivery.probe || !attempt.delivery.breakerUntouched || Self.signal(of: attempt) != .answered
            }.map(\.delivery.subscriptionID))
    }

    static func signal(of attempt: FinishedAttempt) -> WebhookCircuitBreaker.Signal {
        WebhookCircuitBreaker.Signal(.init(status: attempt.statusCode, retryAfterSeconds: attempt.retryAfterSeconds))
    }

    /// One finished attempt as its subscription's breaker sees it.
    struct BreakerInput: Sendable, Hashable {
        var subscription: String
        var probe: Bool
        var signal: WebhookCircuitBreaker.Signal
    }

    /// Applies a batch's attempts, in order, to the `stored` breakers of their subscriptions. Returns, per
    /// attempt, whether its breaker holds its delivery back (its failure uses up no attempt of the retry
    /// schedule); the breakers that changed; and what each transition did. Attempts of a subscription not
    /// in `stored` (deleted meanwhile) change nothing.
    static func applyBreakers(
        _ inputs: [BreakerInput], stored: [String: WebhookBreakerRecord], now: Date, configuration: WebhookDeliveryConfiguration
    ) -> (holds: [Bool], breakers: [String: WebhookBreakerRecord], actions: [(String, WebhookCircuitBreaker.Action)]) {
        var breakers = stored.mapValues(WebhookCircuitBreaker.init)
        var holds: [Bool] = []
        var actions: [(String, WebhookCircuitBreaker.Action)] = []
        for input in inputs {
            guard var breaker = breakers[input.subscription] else {
                holds.append(false)
                continue
            }
            let transition = breaker.apply(input.signal, probe: input.probe, at: now, configuration: configuration)
            breakers[input.subscription] = breaker
            if transition.action != .none { actions.append((input.subscription, transition.action)) }
            holds.append(transition.holdsDelivery)
        }
        let changed = breakers.mapValues(\.record).filter { stored[$0.key] != $0.value }
        return (holds, changed, actions)
    }

    private static func report(_ action: WebhookCircuitBreaker.Action, subscription: String, logger: Logger, metrics: ServiceMetrics) {
        switch action {
        case .none: break
        case .open(let nextProbe):
            metrics.recordBreakerTransition("opened")
            logger.warning(
                "webhook circuit breaker open: deliveries wait for a probe", metadata: ["webhook.subscription": "\(subscription)", "webhook.next_probe": "\(nextProbe)"])
        case .close:
            metrics.recordBreakerTransition("closed")
            logger.notice("webhook circuit breaker closed: the endpoint answers again", metadata: ["webhook.subscription": "\(subscription)"])
        }
    }

    /// Attempts in flight: read by the leasing loop, written by finishing attempts (shared, hence atomic; a
    /// class so the attempts' tasks can hold it).
    private final class InFlightCount: Sendable {
        let value = Atomic<Int>(0)
    }

    /// Outcomes waiting for the recording task. Appended by the attempts' tasks and taken by the recording
    /// task, hence the lock; never more than the concurrency, since an attempt holds its slot until recorded.
    private final class FinishedAttempts: Sendable {
        let signal = WakeSignal()
        private let waiting = Mutex<[FinishedAttempt]>([])

        func append(_ attempt: FinishedAttempt) {
            waiting.withLock { $0.append(attempt) }
            signal.signal()
        }

        func take(max: Int) -> [FinishedAttempt] {
            waiting.withLock { waiting in
                let batch = Array(waiting.prefix(max))
                waiting.removeFirst(batch.count)
                return batch
            }
        }
    }

    private func refreshBacklogMetrics() async {
        do {
            metrics.recordWebhookBacklog(try await store.webhookBacklog(failingThreshold: configuration.failingThreshold))
        } catch {
            logger.debug("reading the webhook backlog failed", metadata: ["error": "\(error)"])
        }
    }
}
