import Foundation
import PostgresLibPQ
import Testing

@testable import JobStore

/// The console's own statements walk indexes, on the same 20,000-job schema as ``ListPlanTests``: the
/// JobId prefix search is a range of the primary key, rejected callbacks walk the partial index of
/// callbacks not accepted, and the overview's rates read the day through the BRIN index on received_at.
@Suite("Console plans")
struct ConsolePlanTests {
    @Test func consolePlans_prefixSearch_rejected_andRates_useIndexes() async throws {
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

            let day = Int64(Date().timeIntervalSince1970 * 1_000_000) - 86_400_000_000
            let rates = try await ListPlanTests.explain(ConsoleSQL.rates(sinceMicros: day, bucketSeconds: 60), on: service)
            ListPlanTests.expectIndexOnly(rates, shape: "rates")
        }
    }
}
