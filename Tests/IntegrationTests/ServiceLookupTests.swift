import Foundation
import Testing

@Suite("Lookups")
struct ServiceLookupTests {
    private static func callback(jobID: String, state: String = "Success", tag: String = "ExtractDigitalWatermark", queue: String = "q1") -> [UInt8] {
        Array(
            """
            {"JobsDetail":{"JobId":"\(jobID)","State":"\(state)","Tag":"\(tag)","QueueId":"\(queue)",\
            "CreationTime":"2022-06-30T18:42:20+0800","EndTime":"-",\
            "Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1","Message":"m-\(jobID)"}}}}
            """.utf8)
    }

    @Test func job_showsCIFieldNames_RFC3339Times_andReceipt() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID: jobID))
            let reply = try await service.get("/v1/jobs/\(jobID)")
            #expect(reply.status == 200)
            #expect(reply.header("Content-Type")?.hasPrefix("application/json") == true)
            #expect(reply.header("X-Request-Id")?.isEmpty == false)
            let object = try reply.json()
            let detail = try #require(object["JobsDetail"] as? [String: Any])
            #expect(detail["JobId"] as? String == jobID)
            #expect(detail["QueueId"] as? String == "q1")
            #expect(detail["CreationTime"] as? String == "2022-06-30T18:42:20+08:00")
            #expect(detail["EndTime"] == nil, "'-' means not set")
            let receipt = try #require(object["Receipt"] as? [String: Any])
            #expect(receipt["CallbackCount"] as? Int == 1)
            #expect((receipt["FirstReceivedTime"] as? String)?.hasSuffix("Z") == true)
        }
    }

    @Test func job_asXML_whenTheClientAsksForIt() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID: jobID))
            let reply = try await service.get("/v1/jobs/\(jobID)", headers: ["Accept": "application/xml"])
            #expect(reply.status == 200)
            #expect(reply.header("Content-Type")?.hasPrefix("application/xml") == true)
            #expect(reply.text.contains("<Response><JobsDetail>"))
            #expect(reply.text.contains("<JobId>\(jobID)</JobId>"))
            #expect(reply.text.contains("<Message>m-\(jobID)</Message>"))
            let json = try await service.get("/v1/jobs/\(jobID)", headers: ["Accept": "application/json, application/xml;q=0.5"])
            #expect(json.header("Content-Type")?.hasPrefix("application/json") == true)
        }
    }

    @Test func unknownJob_is404NoSuchJob_onEveryJobRoute() async throws {
        try await ServiceHarness.with { service in
            for path in ["/v1/jobs/jnope", "/v1/jobs/jnope/watermark", "/v1/jobs/jnope/callbacks"] {
                let reply = try await service.get(path)
                #expect(reply.status == 404, "\(path)")
                let error = try #require(try reply.json()["Error"] as? [String: Any])
                #expect(error["Code"] as? String == "NoSuchJob")
            }
            let body = try await service.get("/v1/jobs/jnope/callbacks/1/body")
            #expect(body.status == 404)
        }
    }

    @Test func watermark_ofAnotherKindOfJob_is404WithItsOwnCode() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Array(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Tag":"Transcode"}}"#.utf8))
            let reply = try await service.get("/v1/jobs/\(jobID)/watermark")
            #expect(reply.status == 404)
            let error = try #require(try reply.json()["Error"] as? [String: Any])
            #expect(error["Code"] as? String == "NotWatermarkJob")
        }
    }

    @Test func routing_unknownRoute404_wrongMethod405WithAllow() async throws {
        try await ServiceHarness.with { service in
            let unknown = try await service.get("/v2/nothing")
            #expect(unknown.status == 404)
            #expect(try (unknown.json()["Error"] as? [String: Any])?["Code"] as? String == "NoSuchRoute")

            let wrong = try await service.request("DELETE", "/v1/jobs")
            #expect(wrong.status == 405)
            #expect(wrong.header("Allow") == "GET, HEAD")
            let getCallbacks = try await service.get("/v1/callbacks")
            #expect(getCallbacks.status == 405)
            #expect(getCallbacks.header("Allow") == "POST")
        }
    }

    @Test func list_filtersAndPagesThroughEveryJobOnce() async throws {
        try await ServiceHarness.with { service in
            var ids: [String] = []
            for index in 0..<5 {
                let jobID = RequestIDForTests.jobID()
                ids.append(jobID)
                _ = try await service.post("/v1/callbacks", Self.callback(jobID: jobID, state: index == 0 ? "Failed" : "Success", queue: index < 3 ? "qa" : "qb"))
            }
            _ = try await service.post("/v1/callbacks", Self.callback(jobID: RequestIDForTests.jobID(), tag: "Transcode"))

            var seen: [String] = []
            var cursor: String?
            var pages = 0
            repeat {
                let path = "/v1/jobs?tag=ExtractDigitalWatermark&limit=2" + (cursor.map { "&cursor=\($0)" } ?? "")
                let page = try await service.get(path).json()
                let jobs = try #require(page["Jobs"] as? [[String: Any]])
                #expect(jobs.count <= 2)
                seen += jobs.compactMap { ($0["JobsDetail"] as? [String: Any])?["JobId"] as? String }
                cursor = page["NextCursor"] as? String
                pages += 1
            } while cursor != nil && pages < 10
            #expect(pages == 3)
            #expect(seen == ids.reversed(), "newest first, each job once")

            let failed = try await service.get("/v1/jobs?state=Failed").json()
            #expect((failed["Jobs"] as? [Any])?.count == 1)
            let queueB = try await service.get("/v1/jobs?queueId=qb").json()
            #expect((queueB["Jobs"] as? [Any])?.count == 2)
            let future = try await service.get("/v1/jobs?since=2999-01-01T00:00:00Z").json()
            #expect((future["Jobs"] as? [Any])?.count == 0)
            let past = try await service.get("/v1/jobs?until=2000-01-01T00:00:00%2B08:00").json()
            #expect((past["Jobs"] as? [Any])?.count == 0)
        }
    }

    @Test func list_badParameters_are400NamingTheParameter() async throws {
        try await ServiceHarness.with { service in
            for (query, parameter) in [
                ("state=Done", "state"), ("limit=0", "limit"), ("limit=abc", "limit"), ("since=yesterday", "since"),
                ("cursor=%%%", "cursor"), ("colour=red", "colour"), ("tag=a&tag=b", "tag"),
            ] {
                let reply = try await service.get("/v1/jobs?\(query)")
                #expect(reply.status == 400, "\(query)")
                let error = try #require(try reply.json()["Error"] as? [String: Any])
                #expect(error["Code"] as? String == "InvalidParameter")
                #expect((error["Message"] as? String)?.contains("'\(parameter)'") == true, "\(query): \(error)")
            }
        }
    }

    @Test func health_andReadiness() async throws {
        try await ServiceHarness.with { service in
            let health = try await service.get("/healthz")
            #expect(health.status == 200)
            let ready = try await service.get("/readyz")
            #expect(ready.status == 200)
            #expect(try ready.json()["Status"] as? String == "ready")
        }
    }

    @Test func readiness_is503_whenTheSchemaIsNotMigrated() async throws {
        let service = try await ServiceHarness.start(schema: "t_unmigrated_" + RequestIDForTests.random(), migrate: false)
        let ready = try await service.get("/readyz")
        await service.stop()
        #expect(ready.status == 503)
        #expect(try (ready.json()["Error"] as? [String: Any])?["Code"] as? String == "NotReady")
    }

    @Test func requestID_isEchoedWhenGiven() async throws {
        try await ServiceHarness.with { service in
            let reply = try await service.get("/healthz", headers: ["X-Request-Id": "abc-123"])
            #expect(reply.header("X-Request-Id") == "abc-123")
        }
    }
}
