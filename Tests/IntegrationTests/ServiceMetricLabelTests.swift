import Foundation
import Testing

/// Label values fed from input are bounded: a sender cannot grow the number of series on `/metrics`.
@Suite("Metric labels")
struct ServiceMetricLabelTests {
    /// The series (`name{labels}`) of a Prometheus text page.
    private static func series(_ page: String) -> Set<String> {
        var result: Set<String> = []
        for line in page.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            result.insert(String(line[..<space]))
        }
        return result
    }

    @Test func thousandUnknownStates_addOneOtherSeries_notAThousand() async throws {
        try await ServiceHarness.with { service in
            // Every series an accepted callback and a scrape create exist before the count is taken.
            let warm = #"{"JobsDetail":{"JobId":"\#(RequestIDForTests.jobID())","State":"Running"}}"#
            #expect(try await service.post("/v1/callbacks", Array(warm.utf8)).status == 200)
            _ = try await service.get("/metrics")
            let before = Self.series(try await service.get("/metrics").text)

            try await withThrowingTaskGroup(of: Int.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for k in stride(from: worker, to: 1_000, by: 8) {
                            let body = #"{"JobsDetail":{"JobId":"\#(RequestIDForTests.jobID())","State":"Evil\#(k)"}}"#
                            let reply = try await service.post("/v1/callbacks", Array(body.utf8))
                            #expect(reply.status == 200, "\(reply.text)")
                        }
                        return 0
                    }
                }
                try await group.waitForAll()
            }
            let page = try await service.get("/metrics").text
            let after = Self.series(page)
            let added = after.subtracting(before)
            #expect(added == [#"ci_callback_jobs_total{state="other"}"#], "new series: \(added.sorted().prefix(5)) (\(added.count) in all)")
            #expect(page.contains(#"ci_callback_jobs_total{state="other"} 1000"#))
            #expect(page.contains(#"ci_callback_jobs_total{state="Running"} 1"#))
        }
    }
}
