import CallbackService
import Foundation
import PostgresLibPQ
import Testing

/// Tokens, address rules and metrics, through the real listener.
@Suite("Access and metrics")
struct ServiceSecurityTests {
    private static let policy = AccessPolicy(callbackTokens: ["old-token", "new-token"], apiTokens: ["reader-1"])

    private static func callback(_ jobID: String) -> [UInt8] {
        Array(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Tag":"ExtractDigitalWatermark"}}"#.utf8)
    }

    @Test func callbackTokens_acceptEitherRotatedToken_inPathOrQuery_andRefuseOthersAlike() async throws {
        try await ServiceHarness.with(accessPolicy: Self.policy) { service in
            let missing = try await service.post("/v1/callbacks", Self.callback(RequestIDForTests.jobID()))
            let wrong = try await service.post("/v1/callbacks/not-a-token", Self.callback(RequestIDForTests.jobID()))
            let wrongQuery = try await service.post("/v1/callbacks?token=old-tokenX", Self.callback(RequestIDForTests.jobID()))
            for refused in [missing, wrong, wrongQuery] {
                #expect(refused.status == 401)
                let error = try #require(try refused.json()["Error"] as? [String: Any])
                #expect(error["Code"] as? String == "Unauthorized")
                #expect(error["Message"] as? String == "a valid callback token is required in the path or the token parameter")
            }
            let stored = try await service.query("SELECT count(*) AS n FROM ci_callbacks")
            #expect(stored[0]["n"].int == 0, "refused callbacks are not stored")

            let viaPath = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks/old-token", Self.callback(viaPath)).status == 200)
            let viaQuery = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks?token=new-token", Self.callback(viaQuery)).status == 200)
            let authorized = ["Authorization": "Bearer reader-1"]
            #expect(try await service.get("/v1/jobs/\(viaPath)", headers: authorized).status == 200)
            #expect(try await service.get("/v1/jobs/\(viaQuery)", headers: authorized).status == 200)
        }
    }

    @Test func apiTokens_guardEveryJobRoute_withWWWAuthenticate_butNotProbes() async throws {
        try await ServiceHarness.with(accessPolicy: Self.policy) { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks/new-token", Self.callback(jobID))
            for path in ["/v1/jobs", "/v1/jobs/\(jobID)", "/v1/jobs/\(jobID)/watermark", "/v1/jobs/\(jobID)/callbacks"] {
                for headers in [[:], ["Authorization": "Bearer nope"], ["Authorization": "Basic cmVhZGVyLTE="]] {
                    let reply = try await service.get(path, headers: headers)
                    #expect(reply.status == 401, "\(path) \(headers)")
                    #expect(reply.header("WWW-Authenticate") == #"Bearer realm="ci-callbackd""#)
                }
                #expect(try await service.get(path, headers: ["Authorization": "Bearer reader-1"]).status == 200, "\(path)")
                #expect(try await service.get(path, headers: ["Authorization": "bearer reader-1"]).status == 200, "scheme is case-insensitive")
            }
            for open in ["/healthz", "/readyz", "/metrics", "/openapi.yaml"] {
                #expect(try await service.get(open).status == 200, "\(open) stays open")
            }
        }
    }

    @Test func callbackAllowList_refusesOtherAddresses_andTrustsOnlyConfiguredProxies() async throws {
        let loopbackOnly = AccessPolicy(callbackAllowList: [try #require(IPAddressRange("127.0.0.0/8"))])
        try await ServiceHarness.with(accessPolicy: loopbackOnly) { service in
            #expect(try await service.post("/v1/callbacks", Self.callback(RequestIDForTests.jobID())).status == 200)
            // The peer (127.0.0.1) is no trusted proxy, so a forged header changes nothing.
            let forged = try await service.request(
                "POST", "/v1/callbacks", body: Self.callback(RequestIDForTests.jobID()), headers: ["X-Forwarded-For": "203.0.113.9"])
            #expect(forged.status == 200)
        }
        let behindProxy = AccessPolicy(
            callbackAllowList: [try #require(IPAddressRange("198.51.100.0/24"))],
            trustedProxies: [try #require(IPAddressRange("127.0.0.1"))]
        )
        try await ServiceHarness.with(accessPolicy: behindProxy) { service in
            let allowed = try await service.request(
                "POST", "/v1/callbacks", body: Self.callback(RequestIDForTests.jobID()), headers: ["X-Forwarded-For": "203.0.113.9, 198.51.100.7"])
            #expect(allowed.status == 200)
            let refused = try await service.request(
                "POST", "/v1/callbacks", body: Self.callback(RequestIDForTests.jobID()), headers: ["X-Forwarded-For": "203.0.113.9"])
            #expect(refused.status == 403)
            #expect(try (refused.json()["Error"] as? [String: Any])?["Code"] as? String == "Forbidden")
        }
    }

    @Test func metrics_unknownMethodTokensShareOneLabel() async throws {
        try await ServiceHarness.with { service in
            for method in ["BREW", "X-ANYTHING-1", "X-ANYTHING-2"] {
                let reply = try await service.request(method, "/v1/jobs/j1")
                #expect(reply.status >= 400)
            }
            let text = try await service.get("/metrics").text
            #expect(text.contains(#"method="OTHER""#))
            #expect(!text.contains("BREW") && !text.contains("X-ANYTHING"), "a client's method token must not become a label value")
        }
    }

    @Test func metrics_countRequestsCallbacksAndCommits_afterTraffic() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID))
            _ = try await service.post("/v1/callbacks", Self.callback(jobID))
            _ = try await service.post("/v1/callbacks", Array("<nope".utf8))
            _ = try await service.get("/v1/jobs/\(jobID)")
            let text = try await service.get("/metrics").text
            for line in [
                #"http_requests_total{route="ingest_callback",method="POST",status="200"} 2"#,
                #"http_requests_total{route="ingest_callback",method="POST",status="400"} 1"#,
                #"http_requests_total{route="get_job",method="GET",status="200"} 1"#,
                #"ci_callbacks_total{format="JSON",outcome="accepted"} 1"#,
                #"ci_callbacks_total{format="JSON",outcome="duplicate"} 1"#,
                #"ci_callbacks_total{format="XML",outcome="rejected"} 1"#,
                #"ci_callback_jobs_total{state="Success"} 1"#,
                "db_commit_duration_seconds_count 2",
                #"db_pool_connections{state="size"} 4"#,
                "http_open_connections ",
                "log_lines_dropped_total 0",
                #"ci_callbackd_build_info{version="#,
                #"http_request_duration_seconds_bucket{route="get_job",le="#,
            ] {
                #expect(text.contains(line), "metrics lack \(line)")
            }
        }
    }
}
