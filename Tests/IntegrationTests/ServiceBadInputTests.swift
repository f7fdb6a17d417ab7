import Foundation
import PostgresLibPQ
import Testing

/// Bad input through the real service into PostgreSQL: each case gets a specific 4xx (and the body is kept
/// as `rejected`) or a correct 200, never a 500, and nothing is lost. These are the cases a fault run and a
/// mutation fuzz found answered 500 (issue 10 §3).
@Suite("Bad input")
struct ServiceBadInputTests {
    /// Posts `body`, expects 400 InvalidCallback whose message contains `reason`, and the body kept as rejected.
    private func expectRejected(
        _ body: [UInt8], reason: String, service: ServiceHarness, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let reply = try await service.post("/v1/callbacks", body)
        #expect(reply.status == 400, "\(reply.text.prefix(300))", sourceLocation: sourceLocation)
        let error = try #require(try reply.json()["Error"] as? [String: Any], sourceLocation: sourceLocation)
        #expect(error["Code"] as? String == "InvalidCallback", sourceLocation: sourceLocation)
        let message = error["Message"] as? String ?? ""
        #expect(message.contains(reason), "\(message) should mention \(reason)", sourceLocation: sourceLocation)
        let kept = try await service.query(
            "SELECT count(*) AS n FROM ci_callbacks WHERE outcome = 'rejected' AND body_sha256 = sha256(\(Array(body.prefix(64 * 1024))))")
        #expect(kept[0]["n"].int == 1, "the rejected body must be kept", sourceLocation: sourceLocation)
    }

    private func jobCount(_ service: ServiceHarness) async throws -> Int {
        try await service.query("SELECT count(*) AS n FROM ci_jobs")[0]["n"].int ?? -1
    }

    @Test func longJobIds_get400NamingTheLimit_andTheBodyIsKept() async throws {
        try await ServiceHarness.with { service in
            for size in [129, 2_800, 9_000] {
                let jobID = String(repeating: "j", count: size)
                try await expectRejected(
                    Array(#"{"EventName":"TaskFinish","JobsDetail":{"JobId":"\#(jobID)","State":"Success"}}"#.utf8),
                    reason: "JobsDetail[0].JobId is \(size) bytes; the limit is 128", service: service)
                try await expectRejected(
                    Array("<Response><JobsDetail><JobId>\(jobID)</JobId><State>Running</State></JobsDetail></Response>".utf8),
                    reason: "JobsDetail[0].JobId is \(size) bytes; the limit is 128", service: service)
            }
            let longQueue = String(repeating: "q", count: 3_000)
            try await expectRejected(
                Array(#"{"JobsDetail":{"JobId":"j1","State":"Running","QueueId":"\#(longQueue)"}}"#.utf8),
                reason: "JobsDetail[0].QueueId is 3000 bytes; the limit is 128", service: service)
            try await expectRejected(
                Array(#"{"JobsDetail":{"JobId":"j1","State":"\#(String(repeating: "S", count: 3_000))"}}"#.utf8),
                reason: "JobsDetail[0].State is 3000 bytes; the limit is 32", service: service)
            #expect(try await jobCount(service) == 0)
        }
    }

    @Test func outOfRangeOffsetsAndYears_areStored200_withTheTimeUnknown() async throws {
        try await ServiceHarness.with { service in
            for text in ["2022-06-30T18:42:20+1800", "2022-06-30T18:42:20-16:00", "2022-06-30T18:42:20+18:00", "0000-01-01T00:00:00Z"] {
                let jobID = RequestIDForTests.jobID()
                let body = #"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","CreationTime":"\#(text)","EndTime":"2022-06-30T18:42:54+0800"}}"#
                let reply = try await service.post("/v1/callbacks", Array(body.utf8))
                #expect(reply.status == 200, "\(text): \(reply.text)")
                let detail = try #require(try await service.get("/v1/jobs/\(jobID)").json()["JobsDetail"] as? [String: Any])
                #expect(detail["CreationTime"] as? String == text, "kept as received")
                #expect(detail["EndTime"] as? String == "2022-06-30T18:42:54+08:00")
                let row = try await service.query("SELECT creation_time IS NULL AS unknown FROM ci_jobs WHERE job_id = \(jobID)")
                #expect(row[0]["unknown"].bool == true)
            }
            // The edges PostgreSQL accepts are kept as times.
            for text in ["2022-06-30T18:42:20+1559", "0001-01-01T00:00:00+15:59", "9999-12-31T23:59:59-15:59"] {
                let jobID = RequestIDForTests.jobID()
                let reply = try await service.post(
                    "/v1/callbacks", Array(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","CreationTime":"\#(text)"}}"#.utf8))
                #expect(reply.status == 200, "\(text): \(reply.text)")
                let row = try await service.query("SELECT creation_time IS NOT NULL AS known FROM ci_jobs WHERE job_id = \(jobID)")
                #expect(row[0]["known"].bool == true, "\(text)")
            }
        }
    }

    @Test func duplicateKeys_get400_andNoJobIsStoredUnderEitherValue() async throws {
        try await ServiceHarness.with { service in
            try await expectRejected(
                Array(#"{"JobsDetail":{"JobId":"dup-a","JobId":"dup-b","State":"Success","State":"Running"}}"#.utf8),
                reason: #"duplicate key "JobId""#, service: service)
            try await expectRejected(
                Array(#"{"JobsDetail":{"JobId":["dup-a","dup-b"],"State":"Success"}}"#.utf8),
                reason: "JobsDetail[0] has more than one JobId", service: service)
            try await expectRejected(
                Array("<Response><JobsDetail><JobId>dup-a</JobId><JobId>dup-b</JobId><State>Success</State></JobsDetail></Response>".utf8),
                reason: "JobsDetail[0] has more than one JobId", service: service)
            for jobID in ["dup-a", "dup-b"] {
                #expect(try await service.get("/v1/jobs/\(jobID)").status == 404)
            }
            #expect(try await jobCount(service) == 0)
        }
    }

    @Test func bodiesThatAreNotCICallbacks_get400_andAreKept() async throws {
        try await ServiceHarness.with { service in
            try await expectRejected(Array("{}".utf8), reason: "not a CI callback", service: service)
            try await expectRejected(Array("<x/>".utf8), reason: "not a CI callback", service: service)
            try await expectRejected(Array(#"{"EventName":"TaskFinish","JobsDetail":[]}"#.utf8), reason: "not a CI callback", service: service)
            try await expectRejected(
                Array("<\(String(repeating: "x", count: 900 * 1024))/>".utf8), reason: "a name longer than 256 bytes", service: service)
            let rows = try await service.query("SELECT count(*) AS n FROM ci_callbacks WHERE outcome = 'no_jobs'")
            #expect(rows[0]["n"].int == 0)
            // WorkflowFinish is still a callback.
            #expect(try await service.post("/v1/callbacks", try Vectors.bytes("json-workflow-finish.json")).status == 200)
        }
    }
}
