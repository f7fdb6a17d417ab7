import CIModel
import Foundation
import JobStore
import Logging
import ServiceLifecycle
import Synchronization
import TimeUnits

/// Sends webhook deliveries, in every replica at once.
///
/// Two ways in (migration 0018):
/// - **Walks**, the happy path. Each subscription has a cursor over the event feed; a walk leases it
///   (``JobStore/walkDeliveries(limit:subscriptions:lease:token:)``: `FOR UPDATE SKIP LOCKED`, so one replica walks a
///   subscription at a time), takes its next events, sends them as one batch, and records them with the
///   cursor's move in one statement (``JobStore/completeDeliveries(_:advancing:)``): the walk's successes
///   as one walk row (migration 0020), any other outcome as a row of its own, each written once. A job's
///   events in one walk go out one after another (waves), and one that did not succeed holds back the
///   job's later ones.
/// - **Leases of pending rows**: deliveries that failed and wait for a retry, that wait behind an older
///   delivery of their job, or that were retried or replayed (``JobStore/leaseDeliveries(limit:lease:)``,
///   each job's oldest first). Their outcomes are recorded in batches by one recording task.
///
/// Woken by the sequencer's `NOTIFY` (new events) and every ``WebhookDeliveryConfiguration/pollInterval``
/// (retries come due by time). Leased rows in flight are at most ``WebhookDeliveryConfiguration/concurrency``,
/// walked deliveries at most ``walkedInFlightLimit(concurrency:)``; the HTTP client sends at most the
/// concurrency at once.
public struct WebhookDeliveryWorker: Service {
    let store: JobStore
    let signal: WakeSignal
    let configuration: WebhookDeliveryConfiguration
    let metrics: ServiceMetrics
    let logger: Logger
    private let client: WebhookHTTPClient

    /// The worker's steps that talk to the database, as `/metrics` counts their failures
    /// (`webhook_worker_errors_total{step}`).
    public enum Step: String, Sendable, CaseIterable {
        /// Leasing subscriptions' cursors and taking their next events.
        case walk
        /// Leasing pending deliveries (retries, replays, deliveries waiting behind their job's older one).
        case lease
        /// Recording attempts, and moving walked cursors.
        case record
        /// Renewing the leases of walks and deliveries being sent.
        case renew
        /// Queuing again the walks whose lease ran out.
        case reclaim
        /// Reading the backlog for the pending-delivery gauges.
        case backlog
    }

    /// How often the backlog gauges are refreshed and lapsed walks reclaimed.
    static let backlogInterval: Duration = .seconds(5)

    /// Free attempt slots the worker waits for before it leases again, while attempts are in flight: a
    /// quarter of the concurrency.
    static func leaseBatch(concurrency: Int) -> Int { max(1, concurrency / 4) }

    /// Most events one walk takes per subscription: four of the client's rounds of concurrent requests. A
    /// subscription is walked by one walk at a time, and a walk's two statements cost about as much for
    /// 256 events as for 128, so a subscription far behind catches up faster with larger walks (a drain
    /// of 115,000 deliveries to two subscriptions: about 10,200 a second with two rounds, 11,200 to
    /// 12,100 with four). Under a steady load a walk takes what arrived since the last, far fewer.
    static func walkLimit(concurrency: Int) -> Int { max(1, concurrency * 4) }

    /// Most walked deliveries held (taken, not yet recorded) at once, however many subscriptions are
    /// behind: a walk takes only as many subscriptions as fit under it. Enough for walks of two
    /// subscriptions in flight while the next ones are taken.
    static func walkedInFlightLimit(concurrency: Int) -> Int { walkLimit(concurrency: concurrency) * 4 }

    /// The longest the sender can take to end a POST given to it: every walked and leased POST held may be
    /// queued ahead of it, and the sender sends them a subscription's share of the concurrency at a time
    /// (``WebhookDeliveryConfiguration/subscriptionShare``), each ended by the timeout. A lease is
    /// renewed for this long at most (``LeasesHeld``): past it the sender is stuck, and the lease is left
    /// to run out so that another replica sends the deliveries.
    static func longestSend(_ configuration: WebhookDeliveryConfiguration) -> Duration {
        let concurrency = max(1, configuration.concurrency)
        let share = configuration.subscriptionShare
        let rounds = (walkedInFlightLimit(concurrency: concurrency) + concurrency) / share + 1
        return configuration.timeout * rounds
    }

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
        let walkedInFlight = InFlightCount()
        let leasesHeld = LeasesHeld()
        let finished = FinishedAttempts()
        let walkLimit = Self.walkLimit(concurrency: configuration.concurrency)
        let walkedLimit = Self.walkedInFlightLimit(concurrency: configuration.concurrency)
        let lease = configuration.timeout + configuration.leaseMargin
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { [signal = self.signal, interval = self.configuration.pollInterval] in await signal.signalEvery(interval) }
                group.addTask {
                    for await _ in finished.signal.wakeups {
                        while true {
                            let batch = finished.take(max: Self.recordingBatch)
                            if batch.isEmpty { break }
                            await self.record(batch)
                            leasesHeld.release(batch.map { RowLease(deliveryID: $0.delivery.deliveryID, attempt: $0.delivery.attempt) })
                            inFlight.value.subtract(batch.count, ordering: .relaxed)
                            // Free slots, and maybe these jobs' next deliveries: look again.
                            self.signal.signal()
                        }
                    }
                }
                group.addTask {
                    // The sender sends the concurrency at once, each POST up to the timeout, and queues the
                    // rest: a walk of more events than the concurrency, or a leased delivery queued behind
                    // one, takes longer than one lease. Leases held are renewed, a third of a lease before
                    // they would run out; otherwise they were reclaimed mid-send as if this replica had
                    // stopped, and sent again beside its own POSTs.
                    while !Task.isCancelled {
                        do {
                            try await Task.sleep(for: lease / 3)
                        } catch {
                            return
                        }
                        let (walks, rows) = leasesHeld.renewable(at: .now)
                        guard !walks.isEmpty || !rows.isEmpty else { continue }
                        do {
                            try await self.store.renewLeases(walks: walks, rows: rows, lease: lease)
                        } catch {
                            self.metrics.recordWorkerFailure(.renew)
                            self.logger.warning("renewing webhook leases failed", metadata: ["error": "\(error)"])
                        }
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        await self.reclaimLapsedWalks()
                        await self.refreshBacklogMetrics()
                        do {
                            try await Task.sleep(for: Self.backlogInterval)
                        } catch {
                            return
                        }
                    }
                }
                self.signal.signal()
                // Walks are spaced (walkSpacing); a wake-up that comes too early leaves one delayed wake-up
                // behind for the next walk's time.
                var nextWalk = ContinuousClock.now
                var walkWakeUpPending = false
                for await _ in self.signal.wakeups {
                    // Walks first: the events no attempt has been made for yet.
                    let walking = walkedInFlight.value.load(ordering: .relaxed)
                    let now = ContinuousClock.now
                    if walking + walkLimit <= walkedLimit, now < nextWalk, !walkWakeUpPending {
                        walkWakeUpPending = true
                        group.addTask { [signal = self.signal, nextWalk] in
                            try? await Task.sleep(until: nextWalk)
                            signal.signal()
                        }
                    }
                    if walking + walkLimit <= walkedLimit, now >= nextWalk {
                        nextWalk = now + self.configuration.walkSpacing
                        walkWakeUpPending = false
                        let batches: [WalkedBatch]
                        do {
                            // As many subscriptions as fit under the bound on walked deliveries held.
                            batches = try await self.store.walkDeliveries(
                                limit: walkLimit, subscriptions: (walkedLimit - walking) / walkLimit, lease: lease,
                                token: Int64.random(in: 1...Int64.max))
                        } catch {
                            self.metrics.recordWorkerFailure(.walk)
                            self.logger.warning("walking webhook subscriptions failed", metadata: ["error": "\(error)"])
                            batches = []
                        }
                        let bodies = Self.bodies(of: batches)
                        for batch in batches {
                            walkedInFlight.value.add(batch.deliveries.count, ordering: .relaxed)
                            self.metrics.recordWalkedDeliveries(batch.deliveries.count)
                            let walk = WalkLease(subscriptionID: batch.subscriptionID, token: batch.token)
                            leasesHeld.hold(walk, until: .now + Self.longestSend(self.configuration))
                            group.addTask {
                                await self.send(batch, bodies: bodies)
                                leasesHeld.release(walk)
                                walkedInFlight.value.subtract(batch.deliveries.count, ordering: .relaxed)
                                // The subscription's cursor is free again, maybe with more events above it.
                                self.signal.signal()
                            }
                        }
                    }

                    let busy = inFlight.value.load(ordering: .relaxed)
                    let free = self.configuration.concurrency - busy
                    // Leases go in batches: one costs the database about as much for one delivery as for
                    // sixteen, and leasing a single slot each time an attempt finished made the lease query
                    // the ceiling of the delivery rate (measured: about 50 deliveries/s under a backlog).
                    guard free > 0, busy == 0 || free >= Self.leaseBatch(concurrency: self.configuration.concurrency) else { continue }
                    let leased: [LeasedDelivery]
                    do {
                        leased = try await self.store.leaseDeliveries(limit: free, lease: lease)
                    } catch {
                        self.metrics.recordWorkerFailure(.lease)
                        self.logger.warning("leasing webhook deliveries failed", metadata: ["error": "\(error)"])
                        continue
                    }
                    leasesHeld.hold(leased.map { RowLease(deliveryID: $0.deliveryID, attempt: $0.attempt) }, until: .now + Self.longestSend(self.configuration))
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

    /// Sends a walk's deliveries and records them with the cursor's move. A job's events go out in waves,
    /// oldest first (``WalkWaves``): once one did not succeed, the job's later ones are not sent, and after
    /// a 410 none is (``DeliveryCompletion/waiting``: written pending, behind the older delivery).
    func send(_ batch: WalkedBatch, bodies: [Int64: [UInt8]] = [:]) async {
        var waves = WalkWaves(jobs: batch.deliveries.map(\.event.job.jobID))
        var outcomes = [FinishedAttempt?](repeating: nil, count: batch.deliveries.count)
        while let wave = waves.next() {
            for index in wave.held {
                let now = Date()
                outcomes[index] = FinishedAttempt(
                    delivery: batch.deliveries[index], completion: .waiting, statusCode: nil, error: nil, startedAt: now, finishedAt: now)
            }
            let attempts = await self.attempts(wave.sent.map { batch.deliveries[$0] }, bodies: bodies)
            for (index, attempt) in zip(wave.sent, attempts) {
                outcomes[index] = attempt
                waves.record(index, succeeded: attempt.completion == .succeeded, gone: attempt.completion == .gone)
            }
        }
        await record(
            outcomes.compactMap { $0 },
            advancing: [CursorAdvance(subscriptionID: batch.subscriptionID, token: batch.token, walkedThrough: batch.walkedThrough)])
    }

    /// The body of a delivery: `{"type":…,"timestamp":…,"data":…}`, `data` being the job's lookup body.
    static func body(of event: JobStateEvent) -> [UInt8] {
        var json = JSONWriter(reservingCapacity: 2048)
        json.beginObject()
        CallbackApplication.writeEventPayload(event, into: &json)
        json.endObject()
        return json.bytes
    }

    /// The body of each event of a walk, built once however many subscriptions take it (the signatures
    /// differ, the body does not).
    static func bodies(of batches: [WalkedBatch]) -> [Int64: [UInt8]] {
        var bodies: [Int64: [UInt8]] = [:]
        for delivery in batches.lazy.flatMap(\.deliveries) where bodies[delivery.event.eventID] == nil {
            bodies[delivery.event.eventID] = body(of: delivery.event)
        }
        return bodies
    }

    /// Sends one attempt; returns its outcome, to be recorded.
    func attempt(_ delivery: LeasedDelivery) async -> FinishedAttempt {
        await attempts([delivery])[0]
    }

    /// Sends attempts at once, as one batch of the client; returns their outcomes in order. `bodies` holds
    /// the bodies already built, by event.
    func attempts(_ deliveries: [LeasedDelivery], bodies: [Int64: [UInt8]] = [:]) async -> [FinishedAttempt] {
        guard !deliveries.isEmpty else { return [] }
        let startedAt = Date()
        let timestamp = Int64(startedAt.timeIntervalSince1970)
        let started = ContinuousClock.now
        // One decoding of a subscription's secret per batch, not per POST: a walk is one subscription's.
        var keys: [String: [UInt8]?] = [:]
        var requests: [WebhookHTTPClient.Request] = []
        var sent: [Int] = []
        var responses = [WebhookHTTPClient.Response?](repeating: nil, count: deliveries.count)
        for (index, delivery) in deliveries.enumerated() {
            let body = bodies[delivery.event.eventID] ?? Self.body(of: delivery.event)
            let id = delivery.event.publicID
            let key = keys[delivery.secret] ?? WebhookSigning.key(of: delivery.secret)
            keys[delivery.secret] = key
            guard let key else {
                responses[index] = .init(status: nil, retryAfterSeconds: nil, error: "the subscription's secret is not a whsec_ secret")
                continue
            }
            // Signed here, on the caller's task; the sender signs again only a POST that waited into a later second.
            requests.append(
                WebhookHTTPClient.Request(
                    subscriptionID: delivery.subscriptionID, url: delivery.url, headers: [("Content-Type", "application/json")],
                    signature: WebhookSignature(key: key, id: id, timestamp: timestamp, body: body), body: body,
                    skipsAfterEndpointFailure: delivery.walked))
            sent.append(index)
        }
        for (index, response) in zip(sent, await client.post(requests)) { responses[index] = response }
        let elapsed = started.duration(to: .now)
        metrics.recordSkippedDeliveries(responses.reduce(0) { $0 + ($1?.skipped == true ? 1 : 0) })
        return zip(deliveries, responses).map { delivery, response in
            let response = response ?? .init(status: nil, retryAfterSeconds: nil, error: "not sent")
            if response.skipped {
                // Not sent (an earlier POST of the walk found the endpoint unanswering): pending, no attempt,
                // due at once, behind the circuit breaker that the POSTs sent may have opened.
                let now = Date()
                return FinishedAttempt(delivery: delivery, completion: .waiting, statusCode: nil, error: nil, startedAt: now, finishedAt: now)
            }
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
            // The attempt's times are the POST's own: it may have waited in the sender's queue for its
            // subscription's turn long after the batch was given.
            let finishedAt = startedAt.addingTimeInterval(started.duration(to: response.endedAt ?? started + elapsed).inSeconds)
            let sentAt = max(startedAt, finishedAt.addingTimeInterval(-(response.elapsed ?? elapsed).inSeconds))
            return FinishedAttempt(
                delivery: delivery, completion: completion, statusCode: response.status, retryAfterSeconds: response.retryAfterSeconds, error: error,
                startedAt: sentAt, finishedAt: finishedAt)
        }
    }

    /// Counts and logs recorded attempts, by what became of their deliveries: only once recorded, since a
    /// circuit breaker that opens may hold back an attempt that was its delivery's last (not the dead
    /// letter, then).
    func report(_ attempts: [FinishedAttempt]) {
        for attempt in attempts {
            let outcome: ServiceMetrics.DeliveryOutcome
            switch attempt.completion {
            case .succeeded: outcome = .succeeded
            case .retry: outcome = .retried
            case .heldBack: outcome = .held
            case .failed: outcome = .failed
            case .gone: outcome = .gone
            case .waiting: continue  // not sent: no attempt
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
                    "webhook.outcome": "\(outcome.rawValue)", "http.status": "\(attempt.statusCode.map(String.init) ?? "-")",
                    "webhook.duration_ms": "\(CallbackApplication.milliseconds(elapsed))",
                ]
                if let error { metadata["error"] = "\(error)" }
                return metadata
            }
            switch attempt.completion {
            case .succeeded, .retry, .heldBack, .waiting: logger.debug("webhook attempt", metadata: metadata(error: attempt.error ?? "-"))
            case .failed: logger.warning("webhook delivery failed for good", metadata: metadata(error: attempt.error ?? "-"))
            case .gone: logger.warning("webhook endpoint answered 410 Gone; subscription disabled", metadata: metadata(error: nil))
            }
        }
    }

    /// Records a batch of outcomes, and moves the cursors of the walks it finishes (`advancing`), trying
    /// once more after a failure (two replicas recording failures of one subscription may deadlock on its
    /// row; the database picks one to fail). If that fails too, the leases run out and the attempts are
    /// sent again (same webhook-id): at least once.
    ///
    /// Attempts that may move their subscription's circuit breaker (a failure, a probe, or any outcome on
    /// a breaker that was not closed and clean when leased) are recorded under the breaker's row lock,
    /// through ``applyBreakers(_:stored:now:configuration:)``; a batch of successes on healthy
    /// subscriptions takes no lock. A breaker another replica opened after this one leased is closed
    /// again only by its probe: one cool-down late at worst.
    func record(_ batch: [FinishedAttempt], advancing cursors: [CursorAdvance] = []) async {
        let moving = Self.subscriptionsMovingBreakers(batch)
        // The attempts as recorded: the transition below may hold some back. Shared with that closure,
        // which the store runs on its connection's thread, hence the lock.
        let recorded = Mutex(batch)
        defer { report(recorded.withLock { $0 }) }
        for attempt in 1...2 {
            do {
                if moving.isEmpty {
                    try await store.completeDeliveries(batch, advancing: cursors)
                } else {
                    try await store.completeDeliveries(batch, advancing: cursors, movingBreakersOf: moving) {
                        [configuration = self.configuration, logger = self.logger, metrics = self.metrics] stored, now in
                        // Deliveries not sent (waiting behind their job's older one) tell the breaker nothing.
                        let sent = batch.indices.filter { batch[$0].completion != .waiting }
                        let inputs = sent.map {
                            BreakerInput(subscription: batch[$0].delivery.subscriptionID, probe: batch[$0].delivery.probe, signal: Self.signal(of: batch[$0]))
                        }
                        let applied = Self.applyBreakers(inputs, stored: stored, now: now, configuration: configuration)
                        for (subscription, action) in applied.actions { Self.report(action, subscription: subscription, logger: logger, metrics: metrics) }
                        var attempts = batch
                        for (index, holds) in zip(sent, applied.holds) where holds {
                            switch attempts[index].completion {
                            case .retry, .failed: attempts[index].completion = .heldBack
                            case .succeeded, .gone, .heldBack, .waiting: break
                            }
                        }
                        recorded.withLock { $0 = attempts }
                        return (attempts, applied.breakers)
                    }
                }
                return
            } catch {
                metrics.recordWorkerFailure(.record)
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
                attempt.completion != .waiting
                    && (attempt.delivery.probe || !attempt.delivery.breakerUntouched || Self.signal(of: attempt) != .answered)
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

    /// The leases this replica holds while it sends, each with the time until which it is renewed
    /// (``longestSend(_:)`` from when it was taken): walks until sent and recorded, leased deliveries until
    /// recorded. Written by the walks' tasks, the leasing loop and the recording task, read by the renewing
    /// task, hence the lock.
    private final class LeasesHeld: Sendable {
        private struct Held {
            var walks: [WalkLease: ContinuousClock.Instant] = [:]
            var rows: [RowLease: ContinuousClock.Instant] = [:]
        }
        private let held = Mutex(Held())

        func hold(_ walk: WalkLease, until deadline: ContinuousClock.Instant) { held.withLock { $0.walks[walk] = deadline } }

        func hold(_ rows: [RowLease], until deadline: ContinuousClock.Instant) {
            held.withLock { held in
                for row in rows { held.rows[row] = deadline }
            }
        }

        func release(_ walk: WalkLease) { _ = held.withLock { $0.walks.removeValue(forKey: walk) } }

        func release(_ rows: [RowLease]) {
            held.withLock { held in
                for row in rows { held.rows.removeValue(forKey: row) }
            }
        }

        /// The leases still renewed at `now`.
        func renewable(at now: ContinuousClock.Instant) -> (walks: [WalkLease], rows: [RowLease]) {
            held.withLock { held in
                (held.walks.filter { $0.value > now }.map(\.key), held.rows.filter { $0.value > now }.map(\.key))
            }
        }
    }

    /// The order of a walk's sends, a state machine with no I/O. Wave `k` holds each job's `k`-th delivery
    /// (indices into the walk, in feed order), so a job's deliveries go out one after another and different
    /// jobs' together. A delivery is held back when an earlier one of its job did not succeed, and every
    /// later one is once an endpoint answered 410 (the subscription is disabled).
    struct WalkWaves: Sendable, Hashable {
        /// One wave: the deliveries to send, and those held back.
        struct Wave: Sendable, Hashable {
            var sent: [Int]
            var held: [Int]
        }

        private let jobs: [String]
        private(set) var waves: [[Int]] = []
        private var nextWave = 0
        private var stoppedJobs: Set<String> = []
        private var gone = false

        init(jobs: [String]) {
            self.jobs = jobs
            var seen: [String: Int] = [:]
            for (index, job) in jobs.enumerated() {
                let wave = seen[job, default: 0]
                seen[job] = wave + 1
                if wave == waves.count { waves.append([]) }
                waves[wave].append(index)
            }
        }

        /// The next wave, once the outcomes of the one before are recorded; nil when every delivery has had
        /// its turn.
        mutating func next() -> Wave? {
            guard nextWave < waves.count else { return nil }
            defer { nextWave += 1 }
            var wave = Wave(sent: [], held: [])
            for index in waves[nextWave] {
                if gone || stoppedJobs.contains(jobs[index]) { wave.held.append(index) } else { wave.sent.append(index) }
            }
            return wave
        }

        /// The outcome of a sent delivery.
        mutating func record(_ index: Int, succeeded: Bool, gone: Bool) {
            if !succeeded { stoppedJobs.insert(jobs[index]) }
            if gone { self.gone = true }
        }
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

    private func reclaimLapsedWalks() async {
        do {
            let queued = try await store.reclaimLapsedWalks()
            if queued > 0 {
                logger.warning(
                    "webhook walks whose lease ran out were queued again: the replica sending them stopped, or could not reach the database",
                    metadata: ["webhook.deliveries": "\(queued)"])
                signal.signal()
            }
        } catch {
            metrics.recordWorkerFailure(.reclaim)
            logger.debug("reclaiming lapsed webhook walks failed", metadata: ["error": "\(error)"])
        }
    }

    private func refreshBacklogMetrics() async {
        do {
            metrics.recordWebhookBacklog(try await store.webhookBacklog(failingThreshold: configuration.failingThreshold))
        } catch {
            metrics.recordWorkerFailure(.backlog)
            logger.debug("reading the webhook backlog failed", metadata: ["error": "\(error)"])
        }
    }
}
