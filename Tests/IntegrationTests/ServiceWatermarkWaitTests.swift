import Foundation
import Testing

/// `/watermark?wait=` on a job that can never have watermark text.
@Suite("Waiting on another kind of job")
struct ServiceWatermarkWaitTests {
    @Test func watermarkWait_OnAnotherKindOfJob_Answers404AtOnce() async throws {
        try await ServiceHarness.with { service in
            let transcode = RequestIDForTests.jobID()
            let untagged = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks", Array(#"{"JobsDetail":{"JobId":"\#(transcode)","State":"Running","Tag":"Transcode"}}"#.utf8)).status == 200)
            #expect(try await service.post("/v1/callbacks", Array(#"{"JobsDetail":{"JobId":"\#(untagged)","State":"Running"}}"#.utf8)).status == 200)
            for (jobID, kind) in [(transcode, "its Tag is Transcode"), (untagged, "none of its callbacks named a Tag")] {
                let started = ContinuousClock.now
                // The job is not final, so before the fix this waited the whole 60 s, then said 404.
                let reply = try await service.get("/v1/jobs/\(jobID)/watermark?wait=60s")
                #expect(ContinuousClock.now - started < .seconds(30), "waited before refusing")
                #expect(reply.status == 404)
                let error = try #require(try reply.json()["Error"] as? [String: Any])
                #expect(error["Code"] as? String == "NotWatermarkJob")
                #expect(
                    error["Message"] as? String
                        == "job \(jobID) is not an ExtractDigitalWatermark job (\(kind)), so it has no watermark text")
            }
        }
    }
}
