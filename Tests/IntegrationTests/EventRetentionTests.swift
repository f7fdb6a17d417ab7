import CallbackService
import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

/// Retention of the outbox, deliveries and attempts (`CALLBACK_RETENTION`), against a real service,
/// consumer and PostgreSQL: runs are given a clock 31 days ahead instead of waiting for a month.
@Suite("Event retention", .serialized)
struct EventRetentionTests {
    static let monthAhead = Date().addingTimeInterval(31 * 86_400)

    /// One retry an hour: a failing consumer's deliveries stay pending for the whole test.
    static let slowRetries: WebhookDeliveryConfiguration = {
        var configuration = WebhookService.fastDelivery
        configuration.retrySchedule = [.seconds(3600)]
        return configuration
    }()

    static func count(_ webhooks: WebhookService, _ table: String) async throws -> Int {
        try await webhooks.service.query("SELECT count(*)::int AS n FROM \(unsafeRaw: table)")[0]["n"].int ?? -1
    }

    /// Events of delivered and unsubscribed jobs go with their finished deliveries and attempts; a job whose
    /// deliveries are still pending keeps its events, and those deliveries can still be retried.
    @Test(.timeLimit(.minutes(3)))
    func eventRetention_OldEventsAndFinishedDeliveriesGo_PendingDeliveriesKeepTheirEvents() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with(delivery: Self.slowRetries) { webhooks in
            let delivered = try await webhooks.subscribe(consumer, "/ok/delivered", tags: ["ExtractDigitalWatermark"])
            let failing = try await webhooks.subscribe(consumer, "/fail/100/failing", tags: ["Animation"])
            let (a, b, c) = (RequestIDForTests.jobID(), RequestIDForTests.jobID(), RequestIDForTests.jobID())
            for (job, tag) in [(a, "ExtractDigitalWatermark"), (b, "Animation"), (c, "Unsubscribed")] {
                try await webhooks.post(job, "Running", tag: tag)
                try await webhooks.post(job, "Success", tag: tag)
            }
            #expect(try await eventually { consumer.deliveries(path: "/ok/delivered").count == 2 })
            #expect(try await eventually { consumer.deliveries(path: "/fail/100/failing").count == 1 })
            #expect(try await eventually { try await webhooks.deliveries(delivered, status: "succeeded").count == 2 })

            // Retention deletes only positioned events; the unsubscribed job's last event may still await
            // its sequencer round, since nothing above waits for it.
            #expect(try await eventually { try await Self.count(webhooks, "ci_event_feed") == 6 })
            let dry = try await RetentionTests.runner(webhooks.service).run(now: Self.monthAhead, dryRun: true)
            #expect(dry.deliveriesDeleted == 2 && dry.eventsDeleted == 4, "\(dry)")
            #expect(try await Self.count(webhooks, "ci_job_state_events") == 6)

            let report = try await RetentionTests.runner(webhooks.service).run(now: Self.monthAhead)
            #expect(report.deliveriesDeleted == 2 && report.eventsDeleted == 4, "\(report)")
            let kept = try await webhooks.service.query("SELECT job_id FROM ci_job_state_events ORDER BY event_id").compactMap { $0["job_id"].string }
            #expect(kept == [b, b])
            #expect(try await Self.count(webhooks, "webhook_attempts") == 1)  // the pending delivery's first attempt
            #expect(try await webhooks.deliveries(delivered).isEmpty)

            // The pending deliveries stay listed and retryable: their events are there to send.
            let pending = try await webhooks.deliveries(failing, status: "pending")
            #expect(pending.count == 2)
            let first = try #require(pending.last?["DeliveryId"] as? String)
            #expect(try await webhooks.service.request("POST", "/v1/subscriptions/\(failing)/deliveries/\(first)/retry").status == 202)
            #expect(try await eventually { consumer.deliveries(path: "/fail/100/failing").count == 2 })

            // A second run finds nothing more.
            let again = try await RetentionTests.runner(webhooks.service).run(now: Self.monthAhead)
            #expect(again.deliveriesDeleted == 0 && again.eventsDeleted == 0, "\(again)")
        }
    }

    /// A cursor from before the deleted events is answered 410 CursorExpired instead of skipping them; the
    /// feed without a cursor starts above what was deleted, and events after the run get positions above it
    /// even when the newest positioned event was deleted.
    @Test(.timeLimit(.minutes(3)))
    func eventFeed_CursorBelowDeletedEvents_Answers410_NewEventsFollowTheHorizon() async throws {
        try await WebhookService.with(delivery: Self.slowRetries) { webhooks in
            let service = webhooks.service
            for _ in 0..<3 { try await webhooks.post(RequestIDForTests.jobID(), "Success") }
            #expect(try await eventually { try await webhooks.feed().count == 3 })
            let early = try #require(try await service.get("/v1/events?limit=1").json()["NextCursor"] as? String)
            let end = try #require(try await service.get("/v1/events?limit=10").json()["NextCursor"] as? String)

            // Old rows instead of a clock a month ahead: that run would drop today's body partition too, and the
            // callback posted below would have nowhere to go.
            _ = try await service.query("UPDATE ci_job_state_events SET created_at = created_at - interval '31 days'")
            let report = try await RetentionTests.runner(service).run()
            #expect(report.eventsDeleted == 3, "\(report)")

            let expired = try await service.get("/v1/events?after=\(early)")
            #expect(expired.status == 410, "\(expired.text)")
            let error = try #require(try expired.json()["Error"] as? [String: Any])
            #expect(error["Code"] as? String == "CursorExpired")
            #expect((error["Message"] as? String)?.contains("retention") == true)
            #expect(error["RequestId"] is String)
            #expect(try await service.get("/v1/events?after=\(early)&wait=1s").status == 410)

            // The cursor at the end missed nothing: it goes on. So does a reader without a cursor.
            #expect(try await service.get("/v1/events?after=\(end)").status == 200)
            let fresh = try await service.get("/v1/events")
            #expect(fresh.status == 200)
            #expect((try fresh.json()["Events"] as? [Any])?.isEmpty == true)
            let start = try #require(try fresh.json()["NextCursor"] as? String)

            let job = RequestIDForTests.jobID()
            try await webhooks.post(job, "Success")
            for cursor in [end, start] {
                var events: [[String: Any]] = []
                #expect(
                    try await eventually {
                        events = try await service.get("/v1/events?after=\(cursor)").json()["Events"] as? [[String: Any]] ?? []
                        return !events.isEmpty
                    })
                #expect(events.count == 1)
                #expect(((events.first?["data"] as? [String: Any])?["JobsDetail"] as? [String: Any])?["JobId"] as? String == job)
            }
        }
    }

    /// A subscription disabled by 410 Gone never sends its pending deliveries: they go after the retention
    /// and their events with them.
    @Test(.timeLimit(.minutes(3)))
    func eventRetention_DisabledSubscription_PendingDeliveriesGo() async throws {
        let consumer = try WebhookConsumer()
        defer { consumer.stop() }
        try await consumer.start()
        try await WebhookService.with(delivery: Self.slowRetries) { webhooks in
            let subscription = try await webhooks.subscribe(consumer, "/gone/retention")
            let job = RequestIDForTests.jobID()
            try await webhooks.post(job, "Running")
            try await webhooks.post(job, "Success")
            #expect(try await eventually { try await webhooks.service.get("/v1/subscriptions/\(subscription)").json()["Disabled"] as? Bool == true })
            // A replay queues only events in the feed: wait until the sequencer has positioned both.
            #expect(
                try await eventually {
                    let events = try await webhooks.service.get("/v1/events").json()["Events"] as? [[String: Any]] ?? []
                    return events.filter { (($0["data"] as? [String: Any])?["JobsDetail"] as? [String: Any])?["JobId"] as? String == job }.count == 2
                })
            // Whether the second event was queued before the 410 depends on timing; a replay queues both, pending
            // for a subscription that will never send them.
            let since = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-3600))
            let replay = try await webhooks.service.request(
                "POST", "/v1/subscriptions/\(subscription)/replay", body: Array(#"{"Since":"\#(since)"}"#.utf8))
            #expect(try replay.json()["Queued"] as? Int == 2, "\(replay.text)")
            #expect(try await webhooks.deliveries(subscription, status: "pending").count == 2)

            let report = try await RetentionTests.runner(webhooks.service).run(now: Self.monthAhead)
            #expect(report.deliveriesDeleted == 2 && report.eventsDeleted == 2, "\(report)")
            #expect(try await webhooks.deliveries(subscription).isEmpty)
        }
    }

    /// `CALLBACK_RETENTION=forever` keeps events and deliveries too.
    @Test(.timeLimit(.minutes(3)))
    func eventRetention_CallbackRetentionForever_KeepsEvents() async throws {
        try await WebhookService.with(delivery: Self.slowRetries) { webhooks in
            try await webhooks.post(RequestIDForTests.jobID(), "Success")
            #expect(try await eventually { try await webhooks.feed().count == 1 })
            var policy = RetentionPolicy()
            policy.callbackRetention = nil
            let report = try await RetentionTests.runner(webhooks.service, policy: policy).run(now: Self.monthAhead)
            #expect(report.eventsDeleted == 0 && report.deliveriesDeleted == 0, "\(report)")
            #expect(try await Self.count(webhooks, "ci_job_state_events") == 1)
        }
    }
}
