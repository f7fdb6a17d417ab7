import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

@testable import CallbackService

/// A service with the event sequencer and a delivery worker beside it, as `serve` runs them, on a fast
/// retry schedule.
struct WebhookService {
    let service: ServiceHarness
    let store: JobStore
    /// The delivery worker's metrics.
    let metrics: ServiceMetrics
    private let tasks: [Task<Void, Never>]

    static let fastDelivery: WebhookDeliveryConfiguration = {
        var configuration = WebhookDeliveryConfiguration()
        configuration.retrySchedule = [.milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(2), .seconds(2), .seconds(3)]
        configuration.timeout = .seconds(3)
        configuration.leaseMargin = .seconds(1)
        configuration.pollInterval = .milliseconds(100)
        configuration.breakerCoolDown = .milliseconds(200)
        configuration.breakerMaxCoolDown = .seconds(1)
        return configuration
    }()

    /// For a consumer that hangs (`/hang/…`): 2 POSTs at a time, each ended by a 2 s timeout, so a walk
    /// takes longer than its lease (2.5 s, renewed every third of it while sent); the breaker stays closed.
    static let slowSends: WebhookDeliveryConfiguration = {
        var configuration = fastDelivery
        configuration.concurrency = 2
        configuration.timeout = .seconds(2)
        configuration.leaseMargin = .milliseconds(500)
        configuration.breakerThreshold = 1000
        return configuration
    }()

    static func with<T>(
        delivery: WebhookDeliveryConfiguration = fastDelivery, _ body: (WebhookService) async throws -> T
    ) async throws -> T {
        let metrics = ServiceMetrics()
        let newEvents = WakeSignal()
        let newDeliveries = WakeSignal()
        let service = try await ServiceHarness.start(stateEventSignal: newEvents, signals: [JobStore.sequencedEventsChannel: newDeliveries])
        let store = service.store
        let sequencer = EventSequencer(
            store: store, signal: newEvents, configuration: EventSequencerConfiguration(), metrics: ServiceMetrics(), logger: serviceTestLogger)
        let worker = WebhookDeliveryWorker(store: store, signal: newDeliveries, configuration: delivery, metrics: metrics, logger: serviceTestLogger)
        let tasks = [Task { _ = try? await sequencer.run() }, Task { _ = try? await worker.run() }]
        let webhooks = WebhookService(service: service, store: store, metrics: metrics, tasks: tasks)
        do {
            let result = try await body(webhooks)
            await webhooks.stop()
            return result
        } catch {
            await webhooks.stop()
            throw error
        }
    }

    private func stop() async {
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        await service.stop()
        try? service.dropSchema()
    }

    /// The `/metrics` lines that start with `prefix` and are not 0 (the worker's counters exist from the
    /// start, at 0).
    func nonZeroSeries(_ prefix: String) -> [Substring] {
        String(decoding: metrics.render(store: store.statistics, listener: nil), as: UTF8.self)
            .split(separator: "\n").filter { $0.hasPrefix(prefix) && !$0.hasSuffix(" 0") }
    }

    /// Creates a subscription to `consumer`'s `path` and tells the consumer its secret.
    func subscribe(_ consumer: WebhookConsumer, _ path: String, tags: [String]? = nil, states: [String]? = nil) async throws -> String {
        var request: [String: Any] = ["Url": consumer.url(path)]
        if let tags { request["Tags"] = tags }
        if let states { request["States"] = states }
        let reply = try await service.request("POST", "/v1/subscriptions", body: Array(try JSONSerialization.data(withJSONObject: request)))
        #expect(reply.status == 201, "\(reply.text)")
        let json = try reply.json()
        let secret = try #require(json["Secret"] as? String)
        try consumer.setSecret(secret, for: path)
        return try #require(json["SubscriptionId"] as? String)
    }

    func post(_ jobID: String, _ state: String, tag: String = "ExtractDigitalWatermark") async throws {
        let status = try await service.post("/v1/callbacks", EventService.callback(jobID, state: state, tag: tag)).status
        #expect(status == 200)
    }

    /// Replays the subscription's last hour: every event of the feed it matches is queued again, all at
    /// once. Returns how many the service says it queued.
    func replayLastHour(_ subscriptionID: String) async throws -> Int? {
        let since = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-3600))
        let reply = try await service.request("POST", "/v1/subscriptions/\(subscriptionID)/replay", body: Array(#"{"Since":"\#(since)"}"#.utf8))
        #expect(reply.status == 202, "\(reply.text)")
        return try reply.json()["Queued"] as? Int
    }

    /// The whole feed, one page.
    func feed() async throws -> [FeedEvent] {
        let json = try await service.get("/v1/events?limit=1000").json()
        return try (try #require(json["Events"] as? [[String: Any]])).map(FeedEvent.init)
    }

    func deliveries(_ subscriptionID: String, status: String? = nil) async throws -> [[String: Any]] {
        let reply = try await service.get("/v1/subscriptions/\(subscriptionID)/deliveries" + (status.map { "?status=\($0)" } ?? ""))
        #expect(reply.status == 200, "\(reply.text)")
        return try #require(try reply.json()["Deliveries"] as? [[String: Any]])
    }
}

@Suite("Webhook delivery", .serialized)
struct WebhookDeliveryTests {
    @Test(.timeLimit(.minutes(3)))
    func delivery_EveryAppliedChange_VerifiedByStandardWebhooks_FilteredAndInOrder() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with { webhooks in
            let all = try await webhooks.subscribe(consumer, "/ok/all")
            _ = try await webhooks.subscribe(consumer, "/ok/final", states: ["Success", "Failed"])
            _ = try await webhooks.subscribe(consumer, "/ok/other-tag", tags: ["Animation"])
            let jobs = (0..<3).map { _ in RequestIDForTests.jobID() }
            for job in jobs {
                try await webhooks.post(job, "Submitted")
                try await webhooks.post(job, "Running")
                try await webhooks.post(job, "Running")  // the same body again: a duplicate, no event
                try await webhooks.post(job, "Success")
            }
            #expect(try await eventually { consumer.deliveries(path: "/ok/all").count == 9 && consumer.deliveries(path: "/ok/final").count == 3 })
            let received = consumer.deliveries()
            #expect(received.allSatisfy { $0.verified })
            #expect(received.allSatisfy { $0.status == "200" })
            #expect(consumer.deliveries(path: "/ok/other-tag").isEmpty)
            for job in jobs {
                #expect(consumer.deliveries(path: "/ok/all").filter { $0.job == job }.map(\.state) == ["Submitted", "Running", "Success"])
                #expect(consumer.deliveries(path: "/ok/final").filter { $0.job == job }.map(\.state) == ["Success"])
            }
            // The pushed body is the feed's event: the same id, type, timestamp and data.
            let feed = try await webhooks.feed()
            for delivery in consumer.deliveries(path: "/ok/all") {
                let pushed = try FeedEvent(try #require(try JSONSerialization.jsonObject(with: Data(delivery.body.utf8)) as? [String: Any]))
                let event = try #require(feed.first { $0.id == delivery.id })
                #expect(pushed.data == event.data)
                #expect(pushed.timestamp == event.timestamp && pushed.type == "job.state_changed")
            }
            // The consumer logs its answer before the service records it: wait for the records.
            #expect(try await eventually { try await webhooks.deliveries(all, status: "succeeded").count == 9 })
            let history = try await webhooks.deliveries(all, status: "succeeded")
            #expect(history.count == 9)
            #expect(history.allSatisfy { (($0["Attempts"] as? [[String: Any]])?.first?["StatusCode"] as? Int) == 200 })
        }
    }

    /// A consumer that answers 500 gets the same webhook-id again, and a newer state of the job is held
    /// back until the older one is delivered: never an older state after a newer one.
    @Test(.timeLimit(.minutes(3)))
    func delivery_ConsumerFails_SameIDRetried_NewerStateWaitsForOlder() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/fail/3/order")
            let job = RequestIDForTests.jobID()
            try await webhooks.post(job, "Running")
            #expect(try await eventually { !consumer.deliveries(path: "/fail/3/order").isEmpty })
            try await webhooks.post(job, "Success")
            #expect(try await eventually { consumer.deliveries(path: "/fail/3/order").filter { $0.status == "200" }.count == 2 })
            let received = consumer.deliveries(path: "/fail/3/order")
            #expect(received.allSatisfy { $0.verified })
            // Running: three 500s then 200, all one webhook-id; only then Success (three 500s, then 200).
            #expect(received.map(\.state) == ["Running", "Running", "Running", "Running", "Success", "Success", "Success", "Success"])
            #expect(Set(received.prefix(4).map(\.id)).count == 1 && Set(received.suffix(4).map(\.id)).count == 1)
            #expect(received.map(\.status) == ["500", "500", "500", "200", "500", "500", "500", "200"])
            // Timestamps are renewed per attempt, never older than an earlier attempt's.
            #expect(zip(received, received.dropFirst()).allSatisfy { $0.timestamp <= $1.timestamp })
            // The consumer logs its answer before the service records it: wait for the record.
            #expect(try await eventually { try await webhooks.deliveries(subscription, status: "succeeded").count == 2 })
            let history = try await webhooks.deliveries(subscription)
            #expect(history.map { $0["Status"] as? String } == ["succeeded", "succeeded"])
            #expect(history.allSatisfy { (($0["Attempts"] as? [[String: Any]]) ?? []).map { $0["StatusCode"] as? Int } == [500, 500, 500, 200] })
            // Six consecutive failures flagged the subscription failing; the success cleared it.
            let state = try await webhooks.service.get("/v1/subscriptions/\(subscription)").json()
            #expect(state["Failing"] as? Bool == false && state["ConsecutiveFailures"] as? Int == 0)
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func delivery_410Gone_DisablesTheSubscription() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/gone/x")
            try await webhooks.post(RequestIDForTests.jobID(), "Running")
            #expect(try await eventually { try await webhooks.service.get("/v1/subscriptions/\(subscription)").json()["Disabled"] as? Bool == true })
            #expect(try await webhooks.deliveries(subscription, status: "failed").count == 1)
            try await webhooks.post(RequestIDForTests.jobID(), "Running")
            try await webhooks.store.sequenceEvents()
            // Nothing more is queued or sent.
            #expect(try await webhooks.deliveries(subscription).count == 1)
            #expect(consumer.deliveries(path: "/gone/x").count == 1)
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func delivery_429WithRetryAfter_WaitsAsAsked() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with { webhooks in
            _ = try await webhooks.subscribe(consumer, "/retry-after/2/x")
            try await webhooks.post(RequestIDForTests.jobID(), "Running")
            #expect(try await eventually { consumer.deliveries(path: "/retry-after/2/x").count == 2 })
            let received = consumer.deliveries(path: "/retry-after/2/x")
            #expect(received.map(\.status) == ["429", "200"])
            // The schedule alone would retry after 200 ms; Retry-After asked for 2 s.
            #expect(received[1].timestamp - received[0].timestamp >= 2)
        }
    }

    /// After the last attempt the delivery is the dead letter (`failed`, still listed); the retry route
    /// sends it again with a fresh schedule.
    @Test(.timeLimit(.minutes(3)))
    func delivery_LastAttemptFails_DeadLetterListed_RetryRouteSendsAgain() async throws {
        var delivery = WebhookService.fastDelivery
        delivery.retrySchedule = [.milliseconds(100), .milliseconds(100)]
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with(delivery: delivery) { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/fail/3/dead")
            try await webhooks.post(RequestIDForTests.jobID(), "Running")
            #expect(try await eventually { try await webhooks.deliveries(subscription, status: "failed").count == 1 })
            let dead = try #require(try await webhooks.deliveries(subscription, status: "failed").first)
            #expect(dead["AttemptCount"] as? Int == 3)
            #expect(try await webhooks.deliveries(subscription, status: "pending").isEmpty)
            let id = try #require(dead["DeliveryId"] as? String)
            let retry = try await webhooks.service.request("POST", "/v1/subscriptions/\(subscription)/deliveries/\(id)/retry")
            #expect(retry.status == 202)
            #expect(try await eventually { try await webhooks.deliveries(subscription, status: "succeeded").count == 1 })
            #expect(consumer.deliveries(path: "/fail/3/dead").map(\.status) == ["500", "500", "500", "200"])
            #expect(try await webhooks.service.request("POST", "/v1/subscriptions/\(subscription)/deliveries/999999/retry").status == 404)
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func replay_Window_SendsEveryMatchingEventAgain_InOrder() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/ok/replay")
            let jobs = [RequestIDForTests.jobID(), RequestIDForTests.jobID()]
            for job in jobs {
                try await webhooks.post(job, "Running")
                try await webhooks.post(job, "Success")
            }
            #expect(try await eventually { consumer.deliveries(path: "/ok/replay").count == 4 })
            // The consumer logs its answer before the service records it; a delivery still pending (its
            // attempt not yet recorded) is not sent again by a replay: wait for the records.
            #expect(try await eventually { try await webhooks.deliveries(subscription, status: "succeeded").count == 4 })
            let since = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-3600))
            let reply = try await webhooks.service.request(
                "POST", "/v1/subscriptions/\(subscription)/replay", body: Array(#"{"Since":"\#(since)"}"#.utf8))
            #expect(reply.status == 202, "\(reply.text)")
            #expect(try reply.json()["Queued"] as? Int == 4)
            #expect(try await eventually { consumer.deliveries(path: "/ok/replay").count == 8 })
            let received = consumer.deliveries(path: "/ok/replay")
            #expect(received.allSatisfy { $0.verified })
            #expect(Set(received.prefix(4).map(\.id)) == Set(received.suffix(4).map(\.id)))
            for job in jobs {
                #expect(received.suffix(4).filter { $0.job == job }.map(\.state) == ["Running", "Success"])
            }
            let bad = try await webhooks.service.request(
                "POST", "/v1/subscriptions/\(subscription)/replay", body: Array(#"{"Since":"2026-01-02T00:00:00Z","Until":"2026-01-01T00:00:00Z"}"#.utf8))
            #expect(bad.status == 400)
            #expect(try await webhooks.service.request("POST", "/v1/subscriptions/sub_none/replay", body: Array(#"{"Since":"\#(since)"}"#.utf8)).status == 404)
        }
    }

    /// The consumer is killed, changes keep coming, and it comes back on the same port: every event arrives,
    /// verified, each job's in order.
    /// Once an endpoint answers again, the deliveries that failed while it was down do not wait for their
    /// next retry (here a minute away; hours, later in the default schedule): the first success makes
    /// every pending delivery of the subscription due.
    @Test(.timeLimit(.minutes(3)))
    func delivery_EndpointBack_FirstSuccessMakesEveryWaitingRetryDue() async throws {
        var delivery = WebhookService.fastDelivery
        delivery.retrySchedule = [.seconds(60), .seconds(60)]
        delivery.jitter = 0
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with(delivery: delivery) { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/ok/back")
            await consumer.kill()
            let jobs = (0..<3).map { _ in RequestIDForTests.jobID() }
            for job in jobs { try await webhooks.post(job, "Success") }
            // Each has failed once and waits a minute for its retry.
            #expect(
                try await eventually {
                    let pending = try await webhooks.deliveries(subscription, status: "pending")
                    return pending.count == 3 && pending.allSatisfy { ($0["Attempts"] as? [[String: Any]])?.count == 1 }
                })
            try await consumer.start(port: consumer.port)
            let later = RequestIDForTests.jobID()
            try await webhooks.post(later, "Success")
            #expect(try await eventually(within: .seconds(20)) { consumer.deliveries(path: "/ok/back").count == 4 })
            #expect(Set(consumer.deliveries(path: "/ok/back").compactMap(\.job)) == Set(jobs + [later]))
        }
    }

    /// A walk of more events than the concurrency, to a consumer that never answers, takes several rounds
    /// of timeouts to send, longer than one lease. Its lease is renewed while it is sent, so the walk is
    /// recorded as it happened (a timeout each, then the retry schedule) instead of being reclaimed
    /// mid-send as if the replica had stopped ("the lease ran out") and sent again beside its own POSTs.
    @Test(.timeLimit(.minutes(3)))
    func delivery_HangingConsumer_WalkLongerThanALease_KeepsItsLease_RecordsEachTimeout() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        // 10 events: walks of up to 8, 4 rounds of 2 s, against a lease of 2.5 s and a reclaim every 5 s.
        try await WebhookService.with(delivery: WebhookService.slowSends) { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/hang/x")
            for _ in 0..<10 { try await webhooks.post(RequestIDForTests.jobID(), "Running") }
            // Every event delivered: its first attempt hung, a retry answered 200.
            #expect(try await eventually(within: .seconds(120)) { Set(consumer.deliveries(path: "/hang/x").filter { $0.status == "200" }.map(\.id)).count == 10 })
            let attempts = try await webhooks.deliveries(subscription).flatMap { try #require($0["Attempts"] as? [[String: Any]]) }
            let errors = attempts.compactMap { $0["Error"] as? String }
            #expect(!errors.isEmpty)
            #expect(errors.allSatisfy { !$0.contains("lease ran out") }, "\(errors)")
        }
    }

    /// An attempt's `Time` and its `webhook-timestamp` are when its POST was sent, not when it was handed
    /// to the sender: one that waits for its subscription's turn behind a hanging POST shows the wait, and
    /// is signed for the second it goes out (a wait of several timeouts could otherwise put it outside a
    /// consumer's tolerance, 5 minutes in `standardwebhooks`).
    @Test(.timeLimit(.minutes(3)))
    func delivery_QueuedBehindItsSubscriptionsShare_AttemptTimeAndTimestampAreWhenItWasSent() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        // One slot for the subscription: the second POST waits for the first one's 2 s timeout.
        try await WebhookService.with(delivery: WebhookService.slowSends) { webhooks in
            for _ in 0..<2 { try await webhooks.post(RequestIDForTests.jobID(), "Running") }
            #expect(try await eventually { try await webhooks.feed().count == 2 })
            // A replay hands both to the sender at once (a walk as the events arrive could take one at a time).
            let subscription = try await webhooks.subscribe(consumer, "/hang/queued")
            #expect(try await webhooks.replayLastHour(subscription) == 2)
            let parser = ISO8601DateFormatter()
            parser.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            var firstAttempts: [Date] = []
            #expect(
                try await eventually(within: .seconds(30)) {
                    // Recorded ones only: until then the history shows an attempt from its lease.
                    firstAttempts = try await webhooks.deliveries(subscription).compactMap { delivery in
                        let first = (delivery["Attempts"] as? [[String: Any]])?.first { $0["Attempt"] as? Int == 1 && $0["FinishedTime"] is String }
                        return (first?["Time"] as? String).flatMap(parser.date)
                    }
                    return firstAttempts.count == 2
                })
            // Sent one after the other: the second after the first's 2 s timeout.
            let gap = (firstAttempts.max() ?? .distantPast).timeIntervalSince(firstAttempts.min() ?? .distantPast)
            #expect(gap >= 1.5, "first attempts sent \(gap) s apart")
            let received = consumer.deliveries(path: "/hang/queued").prefix(2)
            #expect(received.count == 2 && received.allSatisfy(\.verified))
            let stamps = received.map(\.timestamp)
            #expect((stamps.max() ?? 0) - (stamps.min() ?? 0) >= 1, "webhook-timestamps \(stamps) of POSTs sent \(gap) s apart")
            await consumer.kill()
        }
    }

    /// A walk to a consumer that hangs ends after one timeout, not one per round of the subscription's
    /// share: the first POST's timeout gives up the walk's other POSTs, unsent. They are written pending
    /// with no attempt (none of their schedule used), behind the circuit breaker the timeout opened, and
    /// counted for `/metrics` as skipped, not as attempts.
    @Test(.timeLimit(.minutes(3)))
    func delivery_WalkToAConsumerThatHangs_EndsAfterOneTimeout_ItsOtherEventsWaitUnsentWithNoAttempt() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        var delivery = WebhookService.slowSends  // one slot for the subscription, 2 s timeout
        delivery.breakerThreshold = 1
        delivery.breakerCoolDown = .seconds(120)
        delivery.breakerMaxCoolDown = .seconds(120)
        try await WebhookService.with(delivery: delivery) { webhooks in
            for _ in 0..<6 { try await webhooks.post(RequestIDForTests.jobID(), "Running") }
            #expect(try await eventually { try await webhooks.feed().count == 6 })
            let subscription = try await webhooks.subscribe(consumer, "/hang/walk")
            // Rows of the subscription's deliveries `d` (joined to `join`, if any) that meet `condition`.
            func count(_ condition: String, join: String = "") async throws -> Int {
                let rows = try await webhooks.service.query(
                    SQLQuery(
                        unsafeSQL: "SELECT count(*)::int8 FROM webhook_deliveries d \(join) WHERE d.subscription_id = $1 AND \(condition)",
                        binds: [.text(subscription)]))
                return Int(rows.first?[0].string ?? "") ?? -1
            }
            // One walk takes all six: the cursor goes back to before them.
            let started = ContinuousClock.now
            _ = try await webhooks.service.query(
                SQLQuery(unsafeSQL: "UPDATE webhook_cursors SET position = 0 WHERE subscription_id = $1", binds: [.text(subscription)]))

            #expect(try await eventually(within: .seconds(30)) { try await count("true") == 6 })
            let recorded = started.duration(to: .now)
            #expect(recorded < .seconds(5), "the walk was recorded \(recorded) after it began: one 2 s timeout, not six")
            #expect(try await count("status = 'pending' AND attempt_count = 0") == 5, "five not sent: no attempt used")
            #expect(try await count("status = 'pending' AND attempt_count = 1 AND last_error IS NOT NULL") == 1, "the one sent timed out")
            #expect(try await count("true", join: "JOIN webhook_attempts a USING (delivery_id)") == 1, "one attempt row")
            #expect(consumer.deliveries(path: "/hang/walk").count == 1, "only the first was POSTed")
            // Counted once recorded, which is just after the rows are visible: wait for it.
            var counted: [Substring] = []
            #expect(
                try await eventually {
                    counted = webhooks.nonZeroSeries("webhook_deliveries_")
                    return counted.contains { $0.hasPrefix("webhook_deliveries_total{") }
                })
            #expect(counted.filter { $0.hasPrefix("webhook_deliveries_total{") }.count == 1, "one attempt counted: \(counted)")
            #expect(counted.contains("webhook_deliveries_skipped_total 5"), "five skipped: \(counted)")
            let breaker = try await webhooks.service.get("/v1/subscriptions/\(subscription)").json()["CircuitBreaker"] as? [String: Any]
            #expect(breaker?["State"] as? String == "open", "\(String(describing: breaker))")
            await consumer.kill()
        }
    }

    /// The database refuses the worker's statements while a walk is sent to a consumer that hangs: each
    /// step that failed is counted for `/metrics`, the walk's lease runs out instead of being renewed, and
    /// once the statements work again every event is delivered.
    @Test(.timeLimit(.minutes(3)))
    func delivery_DatabaseRefusesTheWorkerMidWalk_CountsTheFailedSteps_ThenDeliversEverything() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        // One walk of 4 events, 2 rounds of 2 s, whose lease of 2.5 s is renewed every 0.8 s.
        try await WebhookService.with(delivery: WebhookService.slowSends) { webhooks in
            _ = try await webhooks.subscribe(consumer, "/hang/refused")
            for _ in 0..<4 { try await webhooks.post(RequestIDForTests.jobID(), "Running") }
            #expect(try await eventually { !consumer.deliveries(path: "/hang/refused").isEmpty })
            _ = try await webhooks.service.query("ALTER TABLE webhook_cursors RENAME COLUMN walk_token TO walk_token_refused")
            func failed(_ step: WebhookDeliveryWorker.Step) -> Bool {
                !webhooks.nonZeroSeries("webhook_worker_errors_total{step=\"\(step.rawValue)\"} ").isEmpty
            }
            #expect(try await eventually(within: .seconds(30)) { [WebhookDeliveryWorker.Step.renew, .record, .walk, .reclaim].allSatisfy(failed) })
            _ = try await webhooks.service.query("ALTER TABLE webhook_cursors RENAME COLUMN walk_token_refused TO walk_token")
            #expect(
                try await eventually(within: .seconds(60)) {
                    Set(consumer.deliveries(path: "/hang/refused").filter { $0.status == "200" }.map(\.id)).count == 4
                })
        }
    }

    /// A consumer that never answers holds at most half of the sender's slots: while its walk hangs,
    /// another subscription's deliveries go out, instead of waiting for the hanging POSTs' timeouts.
    @Test(.timeLimit(.minutes(3)))
    func delivery_OneConsumerHangs_AnotherSubscriptionsDeliveriesGoOutMeanwhile() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        var delivery = WebhookService.fastDelivery
        // 2 slots, one each; a hanging POST holds its slot for 30 s.
        delivery.concurrency = 2
        delivery.timeout = .seconds(30)
        delivery.breakerThreshold = 1000
        try await WebhookService.with(delivery: delivery) { webhooks in
            _ = try await webhooks.subscribe(consumer, "/ok/moving", states: ["Success"])
            for _ in 0..<4 { try await webhooks.post(RequestIDForTests.jobID(), "Running") }
            #expect(try await eventually { try await webhooks.feed().count == 4 })
            // A replay hands the hanging subscription all 4 events at once (a walk as the events arrive could
            // take them one at a time): enough to fill every slot.
            let stuck = try await webhooks.subscribe(consumer, "/hang/stuck", states: ["Running"])
            #expect(try await webhooks.replayLastHour(stuck) == 4)
            #expect(try await eventually { !consumer.deliveries(path: "/hang/stuck").isEmpty })
            for _ in 0..<4 { try await webhooks.post(RequestIDForTests.jobID(), "Success") }
            #expect(try await eventually(within: .seconds(20)) { consumer.deliveries(path: "/ok/moving").count == 4 })
            // Meanwhile the hanging subscription held one slot: its first POST, still hanging.
            #expect(consumer.deliveries(path: "/hang/stuck").map(\.status) == ["hung"])
            // Its other POSTs fail at once from here on, so the worker stops without waiting for timeouts.
            await consumer.kill()
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func delivery_ConsumerDownThenBack_EverythingArrivesInOrder() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/ok/outage")
            await consumer.kill()
            let jobs = (0..<5).map { _ in RequestIDForTests.jobID() }
            for job in jobs {
                try await webhooks.post(job, "Running")
                try await webhooks.post(job, "Success")
            }
            // Attempts fail while it is down (connection refused), and are recorded.
            #expect(
                try await eventually {
                    try await webhooks.deliveries(subscription).contains { (($0["Attempts"] as? [[String: Any]]) ?? []).contains { $0["Error"] is String } }
                })
            try await consumer.start(port: consumer.port)
            #expect(try await eventually(within: .seconds(60)) { consumer.deliveries(path: "/ok/outage").count == 10 })
            let received = consumer.deliveries(path: "/ok/outage")
            #expect(received.allSatisfy { $0.verified })
            for job in jobs {
                #expect(received.filter { $0.job == job }.map(\.state) == ["Running", "Success"])
            }
        }
    }

    @Test func subscriptions_CreateListGetDelete_AndBadInput() async throws {
        try await WebhookService.with { webhooks in
            let service = webhooks.service
            let created = try await service.request(
                "POST", "/v1/subscriptions",
                body: Array(#"{"Url":"https://consumer.example/hooks","Tags":["ExtractDigitalWatermark"],"States":["Success","Failed"],"Description":"d"}"#.utf8))
            #expect(created.status == 201)
            let json = try created.json()
            let id = try #require(json["SubscriptionId"] as? String)
            #expect((json["Secret"] as? String)?.hasPrefix("whsec_") == true)
            #expect(json["States"] as? [String] == ["Failed", "Success"])
            #expect(json["CreatedTime"] is String)
            let one = try await service.get("/v1/subscriptions/\(id)").json()
            #expect(one["Url"] as? String == "https://consumer.example/hooks" && one["Secret"] == nil)
            let list = try await service.get("/v1/subscriptions").json()
            #expect((list["Subscriptions"] as? [[String: Any]])?.map { $0["SubscriptionId"] as? String } == [id])
            #expect(try await service.request("DELETE", "/v1/subscriptions/\(id)").status == 204)
            #expect(try await service.get("/v1/subscriptions/\(id)").status == 404)
            #expect(try await service.request("DELETE", "/v1/subscriptions/\(id)").status == 404)
            for body in [#"{"Url":"gopher://x/"}"#, #"{"Url":"https://x/","States":["Nope"]}"#, "not json", #"{"Url":"https://x/","Extra":1}"#] {
                let reply = try await service.request("POST", "/v1/subscriptions", body: Array(body.utf8))
                #expect(reply.status == 400, "\(body)")
                #expect((try reply.json()["Error"] as? [String: Any])?["Code"] is String)
            }
            #expect(try await service.get("/v1/subscriptions/\(id)/deliveries?status=lost").status == 400)
        }
    }
}

