import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

/// The walk of a subscription's cursor (migration 0018), driven by hand: no delivery worker runs, so each
/// test sees the rows and the cursor between the walk and its record.
@Suite("Webhook walks")
struct WebhookWalkTests {
    static let lease: Duration = .seconds(60)

    static func subscribe(_ events: EventService, tags: [String]? = nil) async throws -> String {
        var request: [String: Any] = ["Url": "http://127.0.0.1:9/hooks"]
        if let tags { request["Tags"] = tags }
        let reply = try await events.service.request("POST", "/v1/subscriptions", body: Array(try JSONSerialization.data(withJSONObject: request)))
        #expect(reply.status == 201, "\(reply.text)")
        return try #require(try reply.json()["SubscriptionId"] as? String)
    }

    static func post(_ events: EventService, _ jobID: String, _ state: String, tag: String = "ExtractDigitalWatermark") async throws {
        #expect(try await events.service.post("/v1/callbacks", EventService.callback(jobID, state: state, tag: tag)).status == 200)
    }

    static func scalar(_ events: EventService, _ sql: String) async throws -> String? {
        try await events.service.query(SQLQuery(unsafeSQL: sql)).first?[0].string
    }

    static func answered(_ delivery: LeasedDelivery, _ completion: DeliveryCompletion, status: Int?) -> FinishedAttempt {
        let now = Date()
        return FinishedAttempt(
            delivery: delivery, completion: completion, statusCode: status, error: status == 200 ? nil : "HTTP \(status ?? 0)", startedAt: now,
            finishedAt: now)
    }

    static func advance(_ batch: WalkedBatch) -> CursorAdvance {
        CursorAdvance(subscriptionID: batch.subscriptionID, token: batch.token, walkedThrough: batch.walkedThrough)
    }

    /// Deliveries in `webhook_deliveries` rows and in walk rows (migration 0020), as `status count` by status.
    static let everyDelivery = """
        SELECT string_agg(status || ' ' || n, ',' ORDER BY status) FROM (
            SELECT status, count(*) AS n FROM (
                SELECT status FROM webhook_deliveries
                UNION ALL
                SELECT 'succeeded' FROM webhook_walk_successes, unnest(delivery_ids)) d
            GROUP BY status) s
        """

    /// The happy path writes nothing until the consumer has answered, and then one walk row for the walk's
    /// successes: while the walk is in flight the history shows its attempts from the cursor, and no second
    /// walk takes its events.
    @Test func walk_SentEvents_RecordedAsOneWalkRow_AndTheCursorMovesPastThem() async throws {
        try await EventService.with(sequencer: nil) { events in
            let subscription = try await Self.subscribe(events)
            let jobs = (0..<3).map { _ in RequestIDForTests.jobID() }
            for job in jobs { try await Self.post(events, job, "Running") }
            _ = try await events.store.sequenceEvents()

            let walked = try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 7)
            let batch = try #require(walked.first)
            #expect(walked.count == 1 && batch.subscriptionID == subscription)
            #expect(batch.deliveries.map(\.event.job.jobID) == jobs)
            #expect(batch.deliveries.allSatisfy { $0.walked && $0.attempt == 1 && $0.scheduleAttempt == 1 })
            #expect(try await Self.scalar(events, "SELECT count(*) FROM webhook_deliveries") == "0")
            #expect(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 8).isEmpty, "the cursor is leased")

            let inFlight = try #require(try await events.store.deliveries(subscriptionID: subscription, status: .pending, before: nil, limit: 10))
            #expect(Set(inFlight.deliveries.map(\.deliveryID)) == Set(batch.deliveries.map(\.deliveryID)))
            #expect(inFlight.deliveries.allSatisfy { $0.attempts.count == 1 && $0.attempts[0].finishedAt == nil })

            let recorded = try await events.store.completeDeliveries(
                batch.deliveries.map { Self.answered($0, .succeeded, status: 200) }, advancing: [Self.advance(batch)])
            #expect(recorded == [true, true, true])
            #expect(try await Self.scalar(events, "SELECT count(*) FROM webhook_deliveries") == "0")
            #expect(
                try await Self.scalar(
                    events,
                    """
                    SELECT count(*) || ' ' || min(delivery_ids::text) || ' ' || min(status_codes::text) || ' ' || min(job_ids::text)
                    FROM webhook_walk_successes
                    """)
                    == "1 {\(batch.deliveries.map { String($0.deliveryID) }.joined(separator: ","))} {200,200,200} {\(jobs.joined(separator: ","))}")
            #expect(try await Self.scalar(events, "SELECT count(*) FROM webhook_attempts") == "0", "a walked success is its walk row alone")
            #expect(
                try await Self.scalar(events, "SELECT (position = \(batch.walkedThrough) AND leased_until IS NULL)::text FROM webhook_cursors")
                    == "true")
            let history = try #require(try await events.store.deliveries(subscriptionID: subscription, status: nil, before: nil, limit: 10))
            #expect(history.deliveries.map(\.status) == [.succeeded, .succeeded, .succeeded])
            #expect(history.deliveries.map(\.deliveryID) == batch.deliveries.map(\.deliveryID).reversed(), "newest first")
            #expect(history.deliveries.map(\.jobID) == jobs.reversed())
            for delivery in history.deliveries {
                let attempt = try #require(delivery.attempts.first)
                #expect(delivery.attempts.count == 1 && attempt.attempt == 1 && attempt.statusCode == 200 && attempt.error == nil)
                #expect(attempt.startedAt == delivery.createdAt && attempt.finishedAt == delivery.completedAt && attempt.finishedAt != nil)
            }
            #expect(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 9).isEmpty, "nothing new above the cursor")
        }
    }

    /// A walked success has no attempt row (migration 0019): a retry writes its first attempt down before it
    /// starts the delivery over, so the history keeps it beside the second.
    @Test func retry_OfAWalkedSuccess_KeepsItsFirstAttemptInTheHistory() async throws {
        try await EventService.with(sequencer: nil) { events in
            let subscription = try await Self.subscribe(events)
            try await Self.post(events, RequestIDForTests.jobID(), "Running")
            _ = try await events.store.sequenceEvents()
            let batch = try #require(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 11).first)
            let delivery = batch.deliveries[0]
            try await events.store.completeDeliveries([Self.answered(delivery, .succeeded, status: 204)], advancing: [Self.advance(batch)])
            let before = try #require(try await events.store.deliveries(subscriptionID: subscription, status: nil, before: nil, limit: 10))
            let first = try #require(before.deliveries.first?.attempts.first)

            #expect(try await events.store.retryDelivery(subscriptionID: subscription, deliveryID: delivery.deliveryID) == .queued)
            let leased = try await events.store.leaseDeliveries(limit: 10, lease: Self.lease)
            #expect(leased.map(\.deliveryID) == [delivery.deliveryID] && leased.first?.attempt == 2)
            try await events.store.completeDeliveries(leased.map { Self.answered($0, .succeeded, status: 200) })

            let after = try #require(try await events.store.deliveries(subscriptionID: subscription, status: nil, before: nil, limit: 10))
            let attempts = try #require(after.deliveries.first?.attempts)
            #expect(attempts.map(\.attempt) == [1, 2] && attempts.map(\.statusCode) == [204, 200])
            #expect(attempts[0] == first)
        }
    }

    /// Deliveries have no foreign key on their subscription (migrations 0019, 0020): deleting the
    /// subscription deletes them, rows and walk rows, with their attempts, and its cursor.
    @Test func deletingASubscription_DeletesItsDeliveriesAttemptsAndCursor() async throws {
        try await EventService.with(sequencer: nil) { events in
            let subscription = try await Self.subscribe(events)
            let kept = try await Self.subscribe(events)
            for _ in 0..<2 { try await Self.post(events, RequestIDForTests.jobID(), "Running") }
            _ = try await events.store.sequenceEvents()
            let batches = try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 12)
            try #require(batches.count == 2)
            // Each event is read once for both subscriptions (its job columns on its first row only).
            #expect(batches[0].deliveries.map(\.event) == batches[1].deliveries.map(\.event))
            #expect(batches.allSatisfy { $0.deliveries.allSatisfy { !$0.event.job.jobID.isEmpty } })
            for batch in batches {
                // One success (no attempt row) and one failure (an attempt row) each.
                try await events.store.completeDeliveries(
                    [Self.answered(batch.deliveries[0], .succeeded, status: 200), Self.answered(batch.deliveries[1], .retry(afterMilliseconds: 60_000), status: 500)],
                    advancing: [Self.advance(batch)])
            }
            #expect(try await Self.scalar(events, Self.everyDelivery) == "pending 2,succeeded 2")
            #expect(try await Self.scalar(events, "SELECT count(*) FROM webhook_attempts") == "2")

            #expect(try await events.store.deleteSubscription(subscription))
            #expect(try await Self.scalar(events, Self.everyDelivery) == "pending 1,succeeded 1")
            #expect(
                try await Self.scalar(
                    events,
                    "SELECT string_agg(DISTINCT subscription_id, ',') FROM (SELECT subscription_id FROM webhook_deliveries UNION ALL SELECT subscription_id FROM webhook_walk_successes) d"
                ) == kept)
            #expect(try await Self.scalar(events, "SELECT count(*) FROM webhook_attempts") == "1")
            #expect(try await Self.scalar(events, "SELECT string_agg(subscription_id, ',') FROM webhook_cursors") == kept)
            #expect(try await events.store.deleteSubscription(subscription) == false)
        }
    }

    /// A walk leases at most the subscriptions asked for, however many are behind (its memory is bounded by
    /// that), those walked least recently first: each subscription behind gets its turn.
    @Test func walk_ManySubscriptionsBehind_TakesTheLimit_LeastRecentlyWalkedFirst() async throws {
        try await EventService.with(sequencer: nil) { events in
            var subscriptions: [String] = []
            for _ in 0..<3 { subscriptions.append(try await Self.subscribe(events)) }
            subscriptions.sort()
            try await Self.post(events, RequestIDForTests.jobID(), "Running")
            _ = try await events.store.sequenceEvents()

            let first = try await events.store.walkDeliveries(limit: 10, subscriptions: 2, lease: Self.lease, token: 21)
            #expect(first.map(\.subscriptionID) == Array(subscriptions.prefix(2)))
            for batch in first {
                try await events.store.completeDeliveries(
                    batch.deliveries.map { Self.answered($0, .succeeded, status: 200) }, advancing: [Self.advance(batch)])
            }
            try await Self.post(events, RequestIDForTests.jobID(), "Running")
            _ = try await events.store.sequenceEvents()

            // The third, never walked, goes first now; then the first of the two walked together.
            let second = try await events.store.walkDeliveries(limit: 10, subscriptions: 2, lease: Self.lease, token: 22)
            #expect(Set(second.map(\.subscriptionID)) == [subscriptions[2], subscriptions[0]])
            #expect(second.first { $0.subscriptionID == subscriptions[2] }?.deliveries.count == 2)
            #expect(second.first { $0.subscriptionID == subscriptions[0] }?.deliveries.count == 1)
        }
    }

    /// Per-job order across walks: while a job's older delivery waits for a retry, its newer event is not
    /// sent by a walk; it is written pending, behind the older one, and other jobs' events go on.
    @Test func walk_EventWhoseJobHasAnOlderPendingDelivery_IsQueuedBehindItUnsent() async throws {
        try await EventService.with(sequencer: nil) { events in
            _ = try await Self.subscribe(events)
            let slow = RequestIDForTests.jobID()
            let other = RequestIDForTests.jobID()
            try await Self.post(events, slow, "Running")
            _ = try await events.store.sequenceEvents()
            let first = try #require(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 1).first)
            try await events.store.completeDeliveries(
                [Self.answered(first.deliveries[0], .retry(afterMilliseconds: 60_000), status: 500)], advancing: [Self.advance(first)])

            try await Self.post(events, slow, "Success")
            try await Self.post(events, other, "Running")
            _ = try await events.store.sequenceEvents()
            let second = try #require(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 2).first)
            #expect(second.deliveries.map(\.event.job.jobID) == [other])
            let rows = try await Self.scalar(
                events,
                "SELECT string_agg(e.state || ' ' || d.status || ' ' || d.attempt_count, ',' ORDER BY d.event_id) FROM webhook_deliveries d JOIN ci_job_state_events e USING (event_id) WHERE d.job_id = '\(slow)'"
            )
            #expect(rows == "Running pending 1,Success pending 0")
        }
    }

    /// A walk whose replica stopped: once its lease runs out, its events become pending deliveries whose
    /// first attempt is recorded as cut short, and the cursor moves past them. The stopped replica's late
    /// record, if it comes, writes nothing twice.
    @Test func walk_LeaseRanOut_ReclaimedAsPendingWithACutShortAttempt_LateRecordChangesNothing() async throws {
        try await EventService.with(sequencer: nil) { events in
            let subscription = try await Self.subscribe(events)
            try await Self.post(events, RequestIDForTests.jobID(), "Running")
            _ = try await events.store.sequenceEvents()
            let batch = try #require(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: .milliseconds(1), token: 3).first)
            #expect(try await eventually { try await events.store.reclaimLapsedWalks() == 1 })

            let history = try #require(try await events.store.deliveries(subscriptionID: subscription, status: .pending, before: nil, limit: 10))
            #expect(history.deliveries.map(\.deliveryID) == [batch.deliveries[0].deliveryID])
            #expect(history.deliveries[0].attemptCount == 1)
            #expect(history.deliveries[0].attempts.count == 1 && history.deliveries[0].attempts[0].error?.contains("the lease ran out") == true)
            #expect(
                try await Self.scalar(events, "SELECT (position = \(batch.walkedThrough) AND leased_until IS NULL)::text FROM webhook_cursors")
                    == "true")

            let late = try await events.store.completeDeliveries(
                [Self.answered(batch.deliveries[0], .succeeded, status: 200)], advancing: [Self.advance(batch)])
            #expect(late == [false])
            #expect(try await Self.scalar(events, "SELECT status FROM webhook_deliveries") == "pending")
            // The lease of pending rows now sends it, as attempt 2.
            let leased = try await events.store.leaseDeliveries(limit: 10, lease: Self.lease)
            #expect(leased.map(\.deliveryID) == [batch.deliveries[0].deliveryID] && leased.first?.attempt == 2)
        }
    }

    /// A subscription's filters: a walk reads a bounded window of the feed and moves past events it does
    /// not match, sending none of them.
    @Test func walk_FilteredSubscription_MovesPastUnmatchedEventsWithoutSending() async throws {
        try await EventService.with(sequencer: nil) { events in
            _ = try await Self.subscribe(events, tags: ["Animation"])
            for _ in 0..<5 { try await Self.post(events, RequestIDForTests.jobID(), "Running") }
            let wanted = RequestIDForTests.jobID()
            try await Self.post(events, wanted, "Running", tag: "Animation")
            _ = try await events.store.sequenceEvents()
            let batch = try #require(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 4).first)
            #expect(batch.deliveries.map(\.event.job.jobID) == [wanted])
            try await events.store.completeDeliveries(
                batch.deliveries.map { Self.answered($0, .succeeded, status: 200) }, advancing: [Self.advance(batch)])
            for _ in 0..<3 { try await Self.post(events, RequestIDForTests.jobID(), "Running") }
            _ = try await events.store.sequenceEvents()
            // Nothing matches: the walk moves the cursor at once and leases nothing.
            #expect(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 5).isEmpty)
            #expect(
                try await Self.scalar(events, "SELECT (position = (SELECT max(feed_position) FROM ci_event_feed) AND leased_until IS NULL)::text FROM webhook_cursors")
                    == "true")
            #expect(try await Self.scalar(events, Self.everyDelivery) == "succeeded 1")
        }
    }

    /// Retention keeps an old event its subscription has not walked yet (it is still to be sent), and takes
    /// one that no subscription matches, whatever the cursors.
    @Test func retention_OldEventNotYetWalked_KeptForItsSubscription_UnmatchedOneGoes() async throws {
        try await EventService.with(sequencer: nil) { events in
            _ = try await Self.subscribe(events, tags: ["Animation"])
            let wanted = RequestIDForTests.jobID()
            try await Self.post(events, wanted, "Running", tag: "Animation")
            try await Self.post(events, RequestIDForTests.jobID(), "Running")
            _ = try await events.store.sequenceEvents()
            let report = try await RetentionTests.runner(events.service).run(now: EventRetentionTests.monthAhead)
            #expect(report.eventsDeleted == 1, "\(report)")
            #expect(try await Self.scalar(events, "SELECT string_agg(job_id, ',') FROM ci_job_state_events") == wanted)
            let batch = try #require(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Self.lease, token: 6).first)
            #expect(batch.deliveries.map(\.event.job.jobID) == [wanted])
        }
    }
}
