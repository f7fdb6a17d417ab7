import Foundation
import PostgresLibPQ
import Testing

@testable import JobStore

/// The console's own statements walk indexes, on the same 20,000-job schema as ``ListPlanTests``: the
/// JobId prefix search is a range of the primary key, rejected callbacks walk the partial index of
/// callbacks not accepted, a callback's page is one statement over primary keys and the history's
/// callback index, and the overview is one statement whose figures come from partial indexes and whose
/// rates come from the rolled-up minutes plus the callbacks since the rollup's watermark, read through the
/// BRIN index on received_at.
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

            let lookup = try await ListPlanTests.explain(ConsoleSQL.callbackLookup(10_000, jobLimit: 1_000), on: service)
            ListPlanTests.expectIndexOnly(lookup, shape: "callback lookup")

            // The overview, one statement: open jobs and pending verifications from their partial indexes
            // (counted up to the cap), rates from the rolled-up minutes and, after the watermark, from the
            // BRIN index on received_at of the live window's partitions only; the rollup reads that index too.
            // Some jobs open and some callbacks awaiting verification, as in production (the loaded jobs are final).
            _ = try await service.query("UPDATE ci_jobs SET is_final = false WHERE state IN ('Running', 'Submitted', 'Pause')")
            _ = try await service.query("UPDATE ci_job_events SET verification = 'pending' WHERE job_id IN ('j00000100', 'j00000200', 'j00000300')")
            _ = try await service.query("ANALYZE ci_jobs")
            _ = try await service.query("ANALYZE ci_job_events")
            let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
            let window = ConsoleSQL.OverviewWindow(nowMicros: now, policy: ConsoleOverviewPolicy())
            let overview = try await ListPlanTests.explain(ConsoleSQL.overview(window, cap: 10_000), on: service)
            ListPlanTests.expectIndexOnly(overview, shape: "overview")
            let nodes = ListPlanTests.nodes(overview)
            let table = { (node: ListPlanTests.Node) in node.relation.flatMap(ListPlanTests.table(of:)) }
            let indexed = { (node: ListPlanTests.Node) in node.type.hasPrefix("Index") || node.type == "Bitmap Heap Scan" }
            #expect(nodes.contains { indexed($0) && table($0) == "ci_jobs" }, "open jobs from ci_jobs_open_idx: \(overview)")
            #expect(nodes.contains { indexed($0) && table($0) == "ci_job_events" }, "pending verifications from the pending index: \(overview)")
            #expect(
                nodes.contains { $0.type == "Bitmap Heap Scan" && table($0) == "ci_callbacks" },
                "callbacks since the watermark through the received_at index: \(overview)")
            var capped = ConsoleOverviewPolicy()
            capped.countCap = 100
            let counted = try await service.store.consoleOverview(policy: capped)
            #expect(counted.openJobs.counted == 101 && counted.openJobs.exceedsCap, "1,200 open jobs, counted up to the cap")
            #expect(counted.verificationPending.counted == 3 && !counted.verificationPending.exceedsCap)

            let rollup = try await ListPlanTests.explain(CallbackRateSQL.count(fromMicros: now - 3_600_000_000, toMicros: now), on: service)
            ListPlanTests.expectIndexOnly(rollup, shape: "rollup count")
            #expect(
                ListPlanTests.nodes(rollup).contains { $0.type == "Bitmap Index Scan" || $0.type.hasPrefix("Index") },
                "the rollup count reads the received_at index: \(rollup)")
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
