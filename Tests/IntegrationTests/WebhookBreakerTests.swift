import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing
import TimeUnits

@testable import CallbackService

/// The circuit breaker per subscription, against a real consumer (PyPI's `standardwebhooks`) over real
/// sockets: an endpoint that is down is probed, not hammered, and its deliveries wait for it instead of
/// using up their retry schedule.
@Suite("Webhook circuit breaker", .serialized)
struct WebhookBreakerTests {
    static let events = 300

    /// The fast test schedule gives up on a delivery about 10 s after its first attempt; the consumer stays
    /// down for longer than that while 300 events are produced.
    @Test(.timeLimit(.minutes(5)))
    func breaker_ConsumerDownWhileEventsArrive_FewAttemptsNoneFailed_AllDeliveredInOrderOnceBack() async throws {
        var delivery = WebhookService.fastDelivery
        delivery.breakerThreshold = 5
        delivery.breakerCoolDown = .milliseconds(200)
        delivery.breakerMaxCoolDown = .seconds(1)
        // Once the consumer is back, 300 deliveries reach one Python process: on a loaded machine an answer
        // can take longer than the fast schedule's 3 s, and a request the sender gave up on may still be
        // read and logged by the consumer after the retry and the job's next state (at least once: a
        // consumer can see that). Waiting longer, with fewer at once, keeps the log in sending order.
        delivery.timeout = .seconds(30)
        delivery.concurrency = 16
        let schedule = delivery.retrySchedule.reduce(Duration.zero, +)
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with(delivery: delivery) { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/ok/breaker")
            await consumer.kill()
            let jobs = (0..<Self.events / 2).map { _ in RequestIDForTests.jobID() }
            for job in jobs {
                try await webhooks.post(job, "Running")
                try await webhooks.post(job, "Success")
            }
            // Every event waits: as a pending row once attempted, or above the subscription's cursor while
            // the breaker keeps walks off it.
            #expect(
                try await eventually(within: .seconds(60)) {
                    try await webhooks.store.webhookBacklog(failingThreshold: 5).first?.pending == Self.events
                })
            // Open, and for longer than the whole retry schedule: without the breaker, every delivery
            // attempted by now would be failed.
            let openSeconds = schedule.inSeconds + 3
            #expect(
                try await eventually(within: .seconds(120), every: .milliseconds(200)) {
                    let rows = try await webhooks.service.query(
                        """
                        SELECT coalesce(extract(epoch FROM now() - breaker_since), 0)::float8 FROM webhook_subscriptions
                        WHERE subscription_id = \(subscription) AND breaker_state <> 'closed'
                        """)
                    return rows.first.flatMap { $0[0].string }.flatMap(Double.init).map { $0 > openSeconds } ?? false
                })
            let state = try await webhooks.service.get("/v1/subscriptions/\(subscription)").json()
            let breaker = try #require(state["CircuitBreaker"] as? [String: Any])
            #expect(["open", "half-open"].contains(breaker["State"] as? String), "\(breaker)")
            #expect(breaker["Since"] is String && breaker["NextProbeTime"] is String)
            let attemptsWhileDown = try await Self.count(webhooks, "webhook_attempts")
            #expect(attemptsWhileDown < Self.events / 3, "attempts made while the consumer was down: \(attemptsWhileDown)")
            #expect(try await Self.count(webhooks, "webhook_deliveries WHERE status = 'failed'") == 0)
            #expect(consumer.deliveries(path: "/ok/breaker").isEmpty)

            try await consumer.start(port: consumer.port)
            #expect(
                try await eventually(within: .seconds(120), every: .milliseconds(200)) {
                    Set(consumer.deliveries(path: "/ok/breaker").filter { $0.status == "200" }.map(\.id)).count == Self.events
                })
            let received = consumer.deliveries(path: "/ok/breaker")
            #expect(received.allSatisfy { $0.verified })
            for job in jobs {
                let states = received.filter { $0.job == job }.map(\.state)
                #expect(states.first == "Running" && states.last == "Success" && states.firstIndex(of: "Success") == states.count - 1, "\(job): \(states)")
            }
            #expect(
                try await eventually(within: .seconds(60)) {
                    // Rows, and walks' successes (migration 0020).
                    try await Self.count(webhooks, "webhook_deliveries WHERE status = 'succeeded'")
                        + Self.count(webhooks, "webhook_walk_successes, unnest(delivery_ids)") == Self.events
                })
            #expect(try await Self.count(webhooks, "webhook_deliveries WHERE status = 'failed'") == 0)
            let closed = try await webhooks.service.get("/v1/subscriptions/\(subscription)").json()
            #expect((closed["CircuitBreaker"] as? [String: Any])?["State"] as? String == "closed", "\(closed)")
            #expect(closed["ConsecutiveFailures"] as? Int == 0)
        }
    }

    /// A failure on a delivery's last scheduled attempt that opens the breaker holds the delivery back:
    /// it is not the dead letter, so neither the metrics nor the log may call it failed.
    @Test(.timeLimit(.minutes(3)))
    func breaker_OpeningOnTheLastScheduledAttempt_HoldsTheDeliveryBack_AndCountsItHeldNotFailed() async throws {
        var delivery = WebhookService.fastDelivery
        delivery.retrySchedule = []  // one attempt: the first is the last
        delivery.breakerThreshold = 1
        delivery.breakerCoolDown = .seconds(60)
        delivery.breakerMaxCoolDown = .seconds(60)
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with(delivery: delivery) { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/ok/last")
            await consumer.kill()
            try await webhooks.post(RequestIDForTests.jobID(), "Success")
            #expect(try await eventually { try await Self.count(webhooks, "webhook_attempts") == 1 })
            #expect(try await Self.count(webhooks, "webhook_deliveries WHERE status = 'pending'") == 1)
            #expect(try await Self.count(webhooks, "webhook_deliveries WHERE status = 'failed'") == 0)
            let breaker = try await webhooks.service.get("/v1/subscriptions/\(subscription)").json()["CircuitBreaker"] as? [String: Any]
            #expect(breaker?["State"] as? String == "open", "\(String(describing: breaker))")
            // Every outcome's series exists from the start, at 0.
            let counted = webhooks.nonZeroSeries("webhook_deliveries_total")
            #expect(counted == [#"webhook_deliveries_total{outcome="held"} 1"#], "\(counted)")
        }
    }

    static func count(_ webhooks: WebhookService, _ relation: String) async throws -> Int {
        let rows = try await webhooks.service.query(SQLQuery(unsafeSQL: "SELECT count(*)::int8 FROM \(relation)"))
        return Int(rows.first?[0].string ?? "") ?? -1
    }
}
