import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

@testable import CallbackService

/// A walk's successes are one row (migration 0020), yet every reader shows each delivery on its own: the
/// history pages through walk rows and rows alike, a retry or a replay moves a delivery out into a row, the
/// job page lists them, and retention deletes walk rows before the events they refer to.
@Suite("Webhook walk successes")
struct WebhookWalkSuccessTests {
    typealias Walk = WebhookWalkTests

    /// Walks `jobs` new events for the one subscription and records them: `failing` of them answered 500
    /// (a pending row), the rest 200 (the walk row). Returns the walk's delivery ids, in feed order.
    static func walk(_ events: EventService, jobs: Int, failing: Set<Int> = [], token: Int64) async throws -> [Int64] {
        for _ in 0..<jobs { try await Walk.post(events, RequestIDForTests.jobID(), "Running") }
        _ = try await events.store.sequenceEvents()
        let batch = try #require(try await events.store.walkDeliveries(limit: 100, subscriptions: 10, lease: Walk.lease, token: token).first)
        try #require(batch.deliveries.count == jobs)
        let outcomes = batch.deliveries.enumerated().map { index, delivery in
            failing.contains(index)
                ? Walk.answered(delivery, .retry(afterMilliseconds: 3_600_000), status: 500) : Walk.answered(delivery, .succeeded, status: 200)
        }
        #expect(try await events.store.completeDeliveries(outcomes, advancing: [Walk.advance(batch)]).allSatisfy { $0 })
        return batch.deliveries.map(\.deliveryID)
    }

    /// A connection prepares each statement of a walk once: walks of other sizes, tokens and cursors, each
    /// recorded, prepare nothing more (the record once carried its cursor's position in its text, and was
    /// parsed and planned again on every walk).
    @Test func walks_OnOneConnection_PrepareTheirStatementsOnce() async throws {
        try await EventService.with(sequencer: nil, poolSize: 1) { events in
            _ = try await Walk.subscribe(events)
            _ = try await Self.walk(events, jobs: 2, token: 1)
            let prepared = events.store.statistics.statementsPrepared
            #expect(prepared > 0)
            for token: Int64 in 2...6 { _ = try await Self.walk(events, jobs: 1 + Int(token) % 3, token: token) }
            #expect(events.store.statistics.statementsPrepared == prepared)
            // What /metrics says of it.
            let page = String(decoding: ServiceMetrics().render(store: events.store.statistics, listener: nil), as: UTF8.self)
            #expect(page.split(separator: "\n").contains("db_statements_prepared_total \(prepared)"))
        }
    }

    /// Every page of the history, following its cursor.
    static func pages(_ events: EventService, _ subscription: String, status: WebhookDeliveryStatus?, limit: Int) async throws -> [[WebhookDelivery]] {
        var pages: [[WebhookDelivery]] = []
        var cursor: Int64?
        repeat {
            let page = try #require(try await events.store.deliveries(subscriptionID: subscription, status: status, before: cursor, limit: limit))
            pages.append(page.deliveries)
            cursor = page.nextCursor
        } while cursor != nil && pages.count < 20
        return pages
    }

    @Test func history_SeveralWalks_PagesThroughWalkRowsAndRowsNewestFirst_EachDeliveryOnce() async throws {
        try await EventService.with(sequencer: nil) { events in
            let subscription = try await Walk.subscribe(events)
            let first = try await Self.walk(events, jobs: 3, token: 1)
            let second = try await Self.walk(events, jobs: 3, failing: [1], token: 2)
            let third = try await Self.walk(events, jobs: 2, token: 3)
            #expect(try await Walk.scalar(events, "SELECT count(*) FROM webhook_walk_successes") == "3")
            let all = (first + second + third).sorted(by: >)

            for limit in [1, 2, 3, 8, 20] {
                let pages = try await Self.pages(events, subscription, status: nil, limit: limit)
                #expect(pages.flatMap { $0 }.map(\.deliveryID) == all, "limit \(limit)")
                #expect(pages.dropLast().allSatisfy { $0.count == limit }, "limit \(limit): only the last page is short")
            }
            let succeeded = try await Self.pages(events, subscription, status: .succeeded, limit: 2).flatMap { $0 }
            #expect(succeeded.map(\.deliveryID) == all.filter { $0 != second[1] })
            #expect(succeeded.allSatisfy { $0.attempts.count == 1 && $0.attempts[0].statusCode == 200 && $0.attempts[0].finishedAt != nil })
            let pending = try await Self.pages(events, subscription, status: .pending, limit: 2).flatMap { $0 }
            #expect(pending.map(\.deliveryID) == [second[1]])
            #expect(try await Self.pages(events, subscription, status: .failed, limit: 2).flatMap { $0 }.isEmpty)
        }
    }

    /// A retry takes the delivery out of its walk row, which keeps the others in order; the last one out
    /// deletes the walk row.
    @Test func retry_OfOneOfAWalksSuccesses_MovesItToARow_TheWalkRowKeepsTheOthers() async throws {
        try await EventService.with(sequencer: nil) { events in
            let subscription = try await Walk.subscribe(events)
            let ids = try await Self.walk(events, jobs: 3, token: 1)
            let before = try await Self.pages(events, subscription, status: nil, limit: 10).flatMap { $0 }

            #expect(try await events.store.retryDelivery(subscriptionID: subscription, deliveryID: ids[1]) == .queued)
            #expect(try await Walk.scalar(events, "SELECT delivery_ids::text || ' ' || status_codes::text FROM webhook_walk_successes") == "{\(ids[0]),\(ids[2])} {200,200}")
            #expect(try await Walk.scalar(events, Walk.everyDelivery) == "pending 1,succeeded 2")
            let after = try await Self.pages(events, subscription, status: nil, limit: 10).flatMap { $0 }
            #expect(after.map(\.deliveryID) == before.map(\.deliveryID))
            let retried = try #require(after.first { $0.deliveryID == ids[1] })
            let original = try #require(before.first { $0.deliveryID == ids[1] })
            #expect(retried.status == .pending && retried.attempts == original.attempts, "its first attempt stays listed")

            // A second retry of it finds its row; an id no walk gave is no delivery.
            #expect(try await events.store.retryDelivery(subscriptionID: subscription, deliveryID: ids[1]) == .queued)
            #expect(try await events.store.retryDelivery(subscriptionID: subscription, deliveryID: ids[2] + 1000) == .noSuchDelivery)
            #expect(try await events.store.retryDelivery(subscriptionID: "sub_none", deliveryID: ids[0]) == .noSuchDelivery)

            for id in [ids[0], ids[2]] { #expect(try await events.store.retryDelivery(subscriptionID: subscription, deliveryID: id) == .queued) }
            #expect(try await Walk.scalar(events, "SELECT count(*) FROM webhook_walk_successes") == "0", "the last one out deletes it")
            #expect(try await Walk.scalar(events, Walk.everyDelivery) == "pending 3")
        }
    }

    /// A replay that queued the event while its walk was in flight made a second delivery of it: a retry of
    /// the walk's success cannot make it a row (the subscription and event have one), names that delivery
    /// as the one to retry, and leaves it listed in its walk row instead of losing it.
    @Test func retry_OfAWalkedSuccessWhoseEventHasAnotherRow_NamesThatRow_AndKeepsItListed() async throws {
        try await EventService.with(sequencer: nil) { events in
            let subscription = try await Walk.subscribe(events)
            let ids = try await Self.walk(events, jobs: 2, token: 1)
            _ = try await events.service.query(
                """
                INSERT INTO webhook_deliveries (subscription_id, event_id, job_id, next_attempt_at, created_at)
                SELECT \(subscription), event_ids[1], job_ids[1], now() + interval '1 hour', now() FROM webhook_walk_successes
                """)

            let other = try #require((try await Walk.scalar(events, "SELECT delivery_id FROM webhook_deliveries")).flatMap { Int64($0) })
            #expect(try await events.store.retryDelivery(subscriptionID: subscription, deliveryID: ids[0]) == .superseded(by: other))
            let reply = try await events.service.request("POST", "/v1/subscriptions/\(subscription)/deliveries/\(ids[0])/retry")
            let error = try reply.json()["Error"] as? [String: Any]
            #expect(reply.status == 409 && error?["Code"] as? String == "DeliverySuperseded" && reply.text.contains("retry \(other)"), "\(reply.text)")
            #expect(try await Walk.scalar(events, "SELECT delivery_ids::text FROM webhook_walk_successes") == "{\(ids[0]),\(ids[1])}")
            let history = try await Self.pages(events, subscription, status: nil, limit: 10).flatMap { $0 }
            #expect(history.count == 3 && history.filter { $0.deliveryID == ids[0] }.map(\.status) == [.succeeded])
            // The other moves out as before.
            #expect(try await events.store.retryDelivery(subscriptionID: subscription, deliveryID: ids[1]) == .queued)
            #expect(try await Walk.scalar(events, "SELECT delivery_ids::text FROM webhook_walk_successes") == "{\(ids[0])}")
        }
    }

    /// A replay queues walked successes again as rows, each under its own id, its first attempt kept.
    @Test func replay_OfWalkedSuccesses_QueuesThemAgainAsRows_SameIDs() async throws {
        try await EventService.with(sequencer: nil) { events in
            let subscription = try await Walk.subscribe(events)
            let ids = try await Self.walk(events, jobs: 3, token: 1)
            let later = try await Self.walk(events, jobs: 2, token: 2)
            let queued = try await events.store.replay(subscriptionID: subscription, since: Date().addingTimeInterval(-3600), until: Date().addingTimeInterval(60))
            #expect(queued == 5)
            #expect(try await Walk.scalar(events, "SELECT count(*) FROM webhook_walk_successes") == "0")
            #expect(try await Walk.scalar(events, "SELECT string_agg(delivery_id::text, ',' ORDER BY delivery_id) FROM webhook_deliveries WHERE status = 'pending'")
                == (ids + later).map(String.init).joined(separator: ","))
            let history = try await Self.pages(events, subscription, status: nil, limit: 10).flatMap { $0 }
            #expect(history.count == 5 && history.allSatisfy { $0.attempts.count == 1 && $0.attempts[0].statusCode == 200 })
        }
    }

    @Test func jobPage_ListsAJobsWalkedSuccessesWithItsRows() async throws {
        try await EventService.with(sequencer: nil) { events in
            _ = try await Walk.subscribe(events)
            let job = RequestIDForTests.jobID()
            try await Walk.post(events, job, "Running")
            _ = try await events.store.sequenceEvents()
            let batch = try #require(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Walk.lease, token: 1).first)
            try await events.store.completeDeliveries(batch.deliveries.map { Walk.answered($0, .succeeded, status: 202) }, advancing: [Walk.advance(batch)])
            _ = try await Self.walk(events, jobs: 2, token: 2)  // other jobs
            try await Walk.post(events, job, "Success")
            _ = try await events.store.sequenceEvents()
            let next = try #require(try await events.store.walkDeliveries(limit: 10, subscriptions: 10, lease: Walk.lease, token: 3).first)
            try await events.store.completeDeliveries(
                next.deliveries.map { Walk.answered($0, .retry(afterMilliseconds: 60_000), status: 503) }, advancing: [Walk.advance(next)])

            let listed = try await events.store.deliveries(forJob: job)
            #expect(listed.map(\.deliveryID) == [next.deliveries[0].deliveryID, batch.deliveries[0].deliveryID])
            #expect(listed.map(\.status) == [.pending, .succeeded] && listed.map(\.eventState) == ["Success", "Running"])
            #expect(listed[1].lastStatusCode == 202 && listed[1].attemptCount == 1 && listed[1].completedAt != nil && listed[1].lastError == nil)
        }
    }

    /// A walk whose every delivery succeeded is recorded by its own lean statement
    /// (``WebhookWalkSuccessSQL/recording(_:advancing:)``); after failures it still clears the
    /// subscription's failing flag and makes its deliveries waiting for a later retry due at once.
    @Test func walkOfSuccesses_AfterAFailure_ClearsTheFailingFlag_AndMakesWaitingRetriesDue() async throws {
        try await EventService.with(sequencer: nil) { events in
            _ = try await Walk.subscribe(events)
            let first = try await Self.walk(events, jobs: 2, failing: [1], token: 1)
            #expect(try await Walk.scalar(events, "SELECT (consecutive_failures = 1 AND failing_since IS NOT NULL)::text FROM webhook_subscriptions") == "true")
            #expect(try await Walk.scalar(events, "SELECT (next_attempt_at > now() + interval '30 minutes')::text FROM webhook_deliveries") == "true")

            let second = try await Self.walk(events, jobs: 3, token: 2)
            #expect(try await Walk.scalar(events, "SELECT (consecutive_failures = 0 AND failing_since IS NULL)::text FROM webhook_subscriptions") == "true")
            #expect(
                try await Walk.scalar(events, "SELECT (delivery_id = \(first[1]) AND next_attempt_at <= now())::text FROM webhook_deliveries") == "true")
            #expect(
                try await Walk.scalar(events, "SELECT delivery_ids::text FROM webhook_walk_successes ORDER BY last_delivery_id DESC LIMIT 1")
                    == "{\(second.map(String.init).joined(separator: ","))}")
        }
    }

    /// A walk's arrays too large for their page's share are compressed, with lz4 where the server has it
    /// (migration 0021): pglz, the default, was about a tenth of the database's CPU while delivering. Both
    /// the walk in flight on its cursor and, once recorded, its walk row.
    @Test func walkArrays_LargeEnoughToCompress_AreCompressedWithLZ4() async throws {
        try await EventService.with(sequencer: nil) { events in
            _ = try await Walk.subscribe(events)
            for _ in 0..<300 { try await Walk.post(events, RequestIDForTests.jobID(), "Running") }
            _ = try await events.store.sequenceEvents()
            let batch = try #require(try await events.store.walkDeliveries(limit: 300, subscriptions: 10, lease: Walk.lease, token: 1).first)
            try #require(batch.deliveries.count == 300)
            let expected = try await Walk.scalar(events, "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'") == "t" ? "lz4" : "pglz"
            func methods(_ table: String, _ columns: [String]) async throws -> String? {
                try await Walk.scalar(
                    events,
                    "SELECT string_agg(DISTINCT m, ',') FROM \(table) w, unnest(ARRAY[\(columns.map { "pg_column_compression(w.\($0))" }.joined(separator: ", "))]) m")
            }
            #expect(try await methods("webhook_cursors", ["walk_events", "walk_deliveries"]) == expected)

            let outcomes = batch.deliveries.map { Walk.answered($0, .succeeded, status: 200) }
            #expect(try await events.store.completeDeliveries(outcomes, advancing: [Walk.advance(batch)]).allSatisfy { $0 })
            let arrays = ["delivery_ids", "event_ids", "job_ids", "status_codes", "started_at", "finished_at"]
            #expect(try await methods("webhook_walk_successes", arrays) == expected)
        }
    }

    /// Retention deletes walk rows recorded before the cutoff, then the events no kept walk row covers.
    @Test func retention_DeletesOldWalkRows_AndKeepsTheEventsOfKeptOnes() async throws {
        try await EventService.with(sequencer: nil) { events in
            _ = try await Walk.subscribe(events)
            _ = try await Self.walk(events, jobs: 3, token: 1)
            let kept = try await Self.walk(events, jobs: 2, token: 2)
            // The second walk row is recorded after the cutoff of a run a month ahead.
            _ = try await events.service.query(
                "UPDATE webhook_walk_successes SET recorded_at = now() + interval '60 days' WHERE first_delivery_id = \(kept[0])")

            let dry = try await RetentionTests.runner(events.service).run(now: EventRetentionTests.monthAhead, dryRun: true)
            #expect(dry.deliveriesDeleted == 3 && dry.eventsDeleted == 3, "\(dry)")
            let report = try await RetentionTests.runner(events.service).run(now: EventRetentionTests.monthAhead)
            #expect(report.deliveriesDeleted == 3 && report.eventsDeleted == 3, "\(report)")
            #expect(try await Walk.scalar(events, "SELECT delivery_ids::text FROM webhook_walk_successes") == "{\(kept.map(String.init).joined(separator: ","))}")
            #expect(
                try await Walk.scalar(events, "SELECT count(*) FROM ci_job_state_events e JOIN webhook_walk_successes w ON e.event_id = ANY (w.event_ids)")
                    == "2")
        }
    }
}
