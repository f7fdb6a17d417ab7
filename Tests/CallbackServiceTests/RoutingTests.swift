import CIModel
import Foundation
import HTTPWire
import JobStore
import Testing

@testable import CallbackService

@Suite("Routing and parameters")
struct RoutingTests {
    @Test(arguments: [
        (HTTPMethod.post, ["v1", "callbacks"], Route.Match.route(.ingestCallback(token: nil))),
        (.post, ["v1", "callbacks", "t0k"], .route(.ingestCallback(token: "t0k"))),
        (.get, ["metrics"], .route(.metrics)),
        (.get, ["openapi.yaml"], .route(.openAPI)),
        (.get, ["v1", "jobs"], .route(.listJobs)),
        (.head, ["v1", "jobs", "j1"], .route(.job(jobID: "j1"))),
        (.get, ["v1", "jobs", "j1", "watermark"], .route(.watermark(jobID: "j1"))),
        (.get, ["v1", "jobs", "j1", "callbacks"], .route(.jobCallbacks(jobID: "j1"))),
        (.get, ["v1", "jobs", "j1", "callbacks", "42", "body"], .route(.callbackBody(jobID: "j1", callbackID: 42))),
        (.get, ["healthz"], .route(.health)),
        (.get, ["readyz"], .route(.readiness)),
    ])
    func route_matchesEachEndpoint(method: HTTPMethod, segments: [String], expected: Route.Match) {
        #expect(Route.match(method: method, segments: segments) == expected)
    }

    @Test func route_wrongMethod_listsTheAllowedOnes() {
        #expect(Route.match(method: .get, segments: ["v1", "callbacks"]) == .methodNotAllowed(allowed: [.post]))
        #expect(Route.match(method: .get, segments: ["v1", "callbacks", "t"]) == .methodNotAllowed(allowed: [.post]))
        #expect(Route.match(method: .post, segments: ["v1", "jobs", "j1"]) == .methodNotAllowed(allowed: [.get, .head]))
    }

    @Test func route_unknownPathsAndBadCallbackIDs_areNotFound() {
        for segments in [["v2"], ["v1", "jobs", "j1", "nope"], ["v1", "jobs", "j1", "callbacks", "x", "body"], ["v1", "jobs", "j1", "callbacks", "0", "body"], []] {
            #expect(Route.match(method: .get, segments: segments) == .notFound, "\(segments)")
        }
    }

    @Test func loggablePath_hidesAnythingAfterTheCallbacksPrefix() {
        #expect(Route.loggablePath("/v1/callbacks/s3cret") == "/v1/callbacks/<redacted>")
        #expect(Route.loggablePath("/v1/callbacks/s3cret/more") == "/v1/callbacks/<redacted>")
        #expect(Route.loggablePath("/v1/callbacks") == "/v1/callbacks")
        #expect(Route.loggablePath("/v1/jobs/j1") == "/v1/jobs/j1")
    }

    @Test func access_probesOpen_callbacksByToken_jobsByBearer() {
        #expect(Route.health.access == .open)
        #expect(Route.metrics.access == .open)
        #expect(Route.ingestCallback(token: nil).access == .callbackToken)
        #expect(Route.job(jobID: "j").access == .apiToken)
        #expect(Route.callbackBody(jobID: "j", callbackID: 1).access == .apiToken)
    }

    @Test func routeNames_neverContainTheJobID() {
        #expect(Route.job(jobID: "jsecret").name == "get_job")
        #expect(Route.callbackBody(jobID: "jsecret", callbackID: 1).name == "get_callback_body")
    }

    @Test func accept_prefersXMLOnlyWhenRankedAboveJSON() {
        #expect(CallbackApplication.prefersXML("application/xml"))
        #expect(CallbackApplication.prefersXML("text/xml, application/json;q=0.5"))
        #expect(!CallbackApplication.prefersXML(nil))
        #expect(!CallbackApplication.prefersXML("*/*"))
        #expect(!CallbackApplication.prefersXML("application/json, application/xml"))
        #expect(!CallbackApplication.prefersXML("application/xml;q=0.2, */*"))
    }

    @Test func listQuery_parsesEveryParameter() throws {
        let cursor = JobListCursor(firstReceivedMicros: 1_700_000_000_123_456, jobID: "j9")
        let query = try CallbackApplication.jobListQuery([
            ("state", "Success"), ("tag", "ExtractDigitalWatermark"), ("queueId", "p1"),
            ("since", "2026-01-01T00:00:00Z"), ("until", "2026-01-02T08:00:00+08:00"), ("limit", "10"), ("cursor", cursor.token),
        ])
        #expect(query.state == .success)
        #expect(query.tag == "ExtractDigitalWatermark")
        #expect(query.queueID == "p1")
        #expect(query.since?.timeIntervalSince1970 == 1_767_225_600)
        #expect(query.until?.timeIntervalSince1970 == 1_767_312_000)
        #expect(query.limit == 10)
        #expect(query.cursor == cursor)
    }

    @Test(arguments: [
        ("state", "Finished"), ("limit", "501"), ("limit", "-1"), ("since", "tomorrow"), ("cursor", "not-a-cursor"), ("foo", "bar"),
    ])
    func listQuery_rejectsBadValues_namingTheParameter(name: String, value: String) {
        #expect {
            _ = try CallbackApplication.jobListQuery([(name, value)])
        } throws: { error in
            let error = error as? APIError
            return error?.status == .badRequest && error?.code == "InvalidParameter" && error?.message.contains("'\(name)'") == true
        }
    }

    @Test func cursor_roundTripsThroughItsToken_andRejectsGarbage() {
        let cursor = JobListCursor(firstReceivedMicros: 42, jobID: "j:with:colons")
        #expect(JobListCursor(token: cursor.token) == cursor)
        #expect(JobListCursor(token: "") == nil)
        #expect(JobListCursor(token: "bm9jb2xvbg") == nil)  // "nocolon"
    }

    @Test func requestID_keepsSaneCallerIDs_andReplacesOthers() {
        #expect(RequestID.from("abc-123_X.y:z") == "abc-123_X.y:z")
        #expect(RequestID.from("has space").count == 16)
        #expect(RequestID.from(String(repeating: "a", count: 129)).count == 16)
        #expect(RequestID.from(nil) != RequestID.from(nil))
    }

    @Test func requestID_generatedIDsAreDistinctSixteenHexDigits() {
        let ids = (0..<20_000).map { _ in RequestID.generate() }
        #expect(Set(ids).count == ids.count)
        #expect(ids.allSatisfy { $0.utf8.count == 16 && $0.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) } })
    }

    @Test func jobIDSegments_arePercentEncoded() {
        #expect(CallbackApplication.percentEncodedSegment("j1") == "j1")
        #expect(CallbackApplication.percentEncodedSegment("a/b c") == "a%2Fb%20c")
        #expect(CallbackApplication.percentEncodedSegment("水") == "%E6%B0%B4")
    }
}
