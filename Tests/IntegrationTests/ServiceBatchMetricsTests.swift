import Foundation
import Testing

/// The store's group commit is visible on `/metrics`: one store per process, so its series count all ingest.
@Suite("Batch metrics")
struct ServiceBatchMetricsTests {
    @Test func metrics_afterCallbacks_showBatchSizeHistogramQueueDepthsAndRetries() async throws {
        try await ServiceHarness.with { service in
            let callbacks = 3
            for _ in 0..<callbacks {
                let body = #"{"JobsDetail":{"JobId":"\#(RequestIDForTests.jobID())","State":"Running"}}"#
                #expect(try await service.post("/v1/callbacks", Array(body.utf8)).status == 200)
            }
            let page = try await service.get("/metrics").text
            // Sequential callbacks commit one per transaction: each lands in the first bucket.
            #expect(page.contains(#"db_ingest_batch_size_bucket{le="1.0"} \#(callbacks)"#), "\(Self.lines(page, "db_ingest_batch_size"))")
            #expect(page.contains(#"db_ingest_batch_size_bucket{le="64.0"} \#(callbacks)"#))
            #expect(page.contains("db_ingest_batch_size_count \(callbacks)"))
            #expect(page.contains(#"db_queue_depth{queue="ingest"} 0"#), "\(Self.lines(page, "db_queue_depth"))")
            #expect(page.contains(#"db_queue_depth{queue="lookup"} 0"#))
            #expect(page.contains("db_ingest_failed_batches_total 0"), "\(Self.lines(page, "db_ingest"))")
            #expect(page.contains("db_ingest_batch_retries_total 0"))
        }
    }

    private static func lines(_ page: String, _ prefix: String) -> String {
        page.split(separator: "\n").filter { $0.hasPrefix(prefix) }.joined(separator: "\n")
    }
}
