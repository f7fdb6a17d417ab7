import Foundation
import Testing

/// A job's stored JobsDetail is served compact, like the rest of the response, not in jsonb's spacing.
@Suite("Compact JobsDetail")
struct ServiceCompactDetailTests {
    @Test func job_StoredDetail_IsCompactJSONLikeTheRestOfTheResponse() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = #"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Tag":"ExtractDigitalWatermark","Message":"a, b: c","Operation":{"ExtractDigitalWatermark":{"Type":"Text","Message":"x y"}}}}"#
            #expect(try await service.post("/v1/callbacks", Array(body.utf8)).status == 200)
            for path in ["/v1/jobs/\(jobID)", "/v1/jobs?limit=1"] {
                let reply = try await service.get(path)
                #expect(reply.status == 200)
                #expect(!reply.text.contains(#"": "#) && !reply.text.contains(#"", ""#), "\(path): \(reply.text)")
                #expect(reply.text.contains(#""Message":"a, b: c""#), "spaces inside strings stay: \(reply.text)")
                #expect(reply.text.contains(#""Message":"x y""#))
            }
        }
    }
}
