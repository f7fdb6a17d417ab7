import Foundation
import PostgresLibPQ
import Testing

@testable import JobStore

/// The console's own statements walk indexes, on the same 20,000-job schema as ``ListPlanTests``: the
/// JobId prefix search is a range of the primary key, rejected callbacks walk the partial index of
/// callbacks not accepted, the overview's figures come from partial indexes, and its rates from the
/// rolled-up minutes plus the callbacks since the rollup's watermark, read through the BRIN index on received_at.
@Suite("Console plans", .serialized)
struct ConsolePlanTests {
    @Test func consolePlans_prefixSearch_rejected_overview_andRates_useIndexes() async throws {
        try await ListPlanTests.withLoadedSchema { service in
            let prefix = try await ListPlanTests.explain(ConsoleSQL.prefixSearch("j0001", limit: 50), on: service)
            ListPlanTests.expectIndexOnly(prefix, shape: "prefix search")
            #expect(
                ListPlanTests.nodes(prefix).contains { $0.type.hasPrefix("Index") && $0.relation == "ci_jobs" },
                "the primary key is walked: \(prefix)")

            let store = service.store
            let matches = try await store.jobIDs(withPrefix: "j0001000")
            #expect(matches == (10000...10009).map { "j000\($0)" })

            for query in [
                ConsoleSQL.rejected(reasonContains: nil, before: nil, limit: 50, previewBytes: 160),
                ConsoleSQL.rejected(reasonContains: "JobId", before: 1_000, limit: 50, previewBytes: 160),
            ] {
                ListPlanTests.expectIndexOnly(try await ListPlanTests.explain(query, on: service), shape: "rejected \(query.sql)")
            }

            let mentioning = try await ListPlanTests.explain(ConsoleSQL.jobsMentioning(10_000, limit: 50), on: service)
            ListPlanTests.expectIndexOnly(mentioning, shape: "jobs of a pruned callback")

            // The overview: open jobs from the partial index of open jobs; rates from the rolled-up minutes
            // and, after the watermark, from the BRIN index on received_at; the rollup reads that index too.
            for (name, query) in [("open jobs", ConsoleSQL.openJobs), ("longest silent open job", ConsoleSQL.longestSilentOpenJob)] {
                let plan = try await ListPlanTests.explain(query, on: service)
                ListPlanTests.expectIndexOnly(plan, shape: name)
                #expect(ListPlanTests.nodes(plan).contains { $0.type.contains("Index") && $0.relation == "ci_jobs" }, "\(name): \(plan)")
            }
            let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
            let day = now - 86_400_000_000
            let rolledUp = try await ListPlanTests.explain(CallbackRateSQL.rolledUp(sinceMicros: day, beforeMicros: now - 60_000_000, bucketSeconds: 60), on: service)
            #expect(
                !ListPlanTests.nodes(rolledUp).contains { $0.relation.flatMap(ListPlanTests.table(of:)) == "ci_callbacks" },
                "the rolled-up minutes are read without the callbacks: \(rolledUp)")
            for (name, query) in [
                ("rates since the watermark", CallbackRateSQL.received(sinceMicros: now - 120_000_000, bucketSeconds: 60)),
                ("rollup count", CallbackRateSQL.count(fromMicros: now - 3_600_000_000, toMicros: now)),
            ] {
                let plan = try await ListPlanTests.explain(query, on: service)
                ListPlanTests.expectIndexOnly(plan, shape: name)
                #expect(
                    ListPlanTests.nodes(plan).contains { $0.type == "Bitmap Index Scan" || $0.type.hasPrefix("Index") },
                    "\(name) reads the received_at index: \(plan)")
            }
        }
    }

    @Test func consolePlans_jobDeliveries_walkTheJobIndex() async throws {
        try await ListPlanTests.withLoadedSchema { service in
            _ = try await service.query(
                "INSERT INTO webhook_subscriptions (subscription_id, url, secret, created_at) VALUES ('sub_plan', 'https://h.example/x', 'whsec_p', now())")
            _ = try await service.query(
                """
                INSERT INTO webhook_deliveries (subscription_id, event_id, job_id, status, next_attempt_at, created_at)
                SELECT 'sub_plan', i, 'j' || lpad(i::text, 8, '0'), 'succeeded', now(), now() FROM generate_series(1, 20000) AS i
                """)
            _ = try await service.query("ANALYZE webhook_deliveries")
            let plan = try await ListPlanTests.explain(ConsoleDeliverySQL.forJob("j00010000", limit: 50), on: service)
            let deliveries = ListPlanTests.nodes(plan).filter { $0.relation == "webhook_deliveries" }
            #expect(!deliveries.isEmpty && deliveries.allSatisfy { $0.type != "Seq Scan" }, "deliveries by job walk an index: \(plan)")
            #expect(!ListPlanTests.nodes(plan).contains { $0.type == "Seq Scan" && $0.relation == "ci_job_state_events" && $0.rows > 1 })
        }
    }
}
