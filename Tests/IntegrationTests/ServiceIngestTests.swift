import Foundation
import PostgresLibPQ
import Testing

/// Callbacks posted over a real socket to the real service, stored in a real PostgreSQL.
@Suite("Ingest")
struct ServiceIngestTests {
    private static func extractCallback(jobID: String, state: String, message: String? = "hello", format: String = "json") -> [UInt8] {
        if format == "xml" {
            return Array(
                """
                <Response><EventName>TaskFinish</EventName><JobsDetail><Code>Success</Code><JobId>\(jobID)</JobId>\
                <State>\(state)</State><Tag>ExtractDigitalWatermark</Tag><CreationTime>2022-06-30T18:42:20+0800</CreationTime>\
                <Input><BucketId>test-123456789</BucketId><Object>in/a.mp4</Object><Region>ap-chongqing</Region></Input>\
                <Operation><ExtractDigitalWatermark><Message>\(message ?? "")</Message><Type>Text</Type><Version>V1</Version>\
                </ExtractDigitalWatermark></Operation></JobsDetail></Response>
                """.utf8)
        }
        let watermark = message.map { #","Message":"\#($0)""# } ?? ""
        return Array(
            """
            {"EventName":"TaskFinish","JobsDetail":{"Code":"Success","JobId":"\(jobID)","State":"\(state)",\
            "Tag":"ExtractDigitalWatermark","CreationTime":"2022-06-30T18:42:20+0800",\
            "Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1"\(watermark)}}}}
            """.utf8)
    }

    @Test func everyVector_isStoredAndReadableThroughEveryLookup() async throws {
        let names = try Vectors.names()
        #expect(names.count >= 20, "expected the reference vectors in \(Vectors.directory.path)")
        try await ServiceHarness.with { service in
            for name in names {
                let body = try Vectors.bytes(name)
                let reply = try await service.post("/v1/callbacks", body, contentType: name.hasSuffix(".xml") ? "application/xml" : "application/json")
                #expect(reply.status == 200, "\(name): \(reply.text)")
                let answer = try reply.json()
                let callbackID = try #require(answer["CallbackId"] as? Int, "\(name)")
                let jobs: [[String: Any]] =
                    if let jobID = answer["JobId"] as? String { [["JobId": jobID]] } else { answer["Jobs"] as? [[String: Any]] ?? [] }
                for job in jobs {
                    let jobID = try #require(job["JobId"] as? String)
                    let lookup = try await service.get("/v1/jobs/\(jobID)")
                    #expect(lookup.status == 200, "\(name): \(lookup.text)")
                    let detail = try #require(try lookup.json()["JobsDetail"] as? [String: Any], "\(name)")
                    #expect(detail["JobId"] as? String == jobID)

                    let history = try await service.get("/v1/jobs/\(jobID)/callbacks")
                    let callbacks = try #require(try history.json()["Callbacks"] as? [[String: Any]])
                    #expect(callbacks.contains { $0["CallbackId"] as? Int == callbackID }, "\(name): history lacks callback \(callbackID)")
                    let raw = try await service.get("/v1/jobs/\(jobID)/callbacks/\(callbackID)/body")
                    #expect(raw.status == 200)
                    #expect(Array(raw.body) == body, "\(name): the raw body must come back byte for byte")
                }
            }
            let watermark = try await service.get("/v1/jobs/j515a494af86111ecb8546d80f2baf56f/watermark")
            #expect(watermark.status == 200)
            #expect(try watermark.json()["Message"] as? String == "123456789ab")
        }
    }

    @Test func watermarkLookup_returnsTheExtractedText_fromXMLAndJSON() async throws {
        try await ServiceHarness.with { service in
            for format in ["xml", "json"] {
                let jobID = RequestIDForTests.jobID()
                let reply = try await service.post("/v1/callbacks", Self.extractCallback(jobID: jobID, state: "Success", message: "水印-\(format)", format: format))
                #expect(reply.status == 200)
                #expect(try reply.json()["Duplicate"] as? Bool == false)
                let watermark = try await service.get("/v1/jobs/\(jobID)/watermark")
                let object = try watermark.json()
                #expect(object["JobId"] as? String == jobID)
                #expect(object["State"] as? String == "Success")
                #expect(object["Type"] as? String == "Text")
                #expect(object["Version"] as? String == "V1")
                #expect(object["Message"] as? String == "水印-\(format)")
            }
        }
    }

    @Test func redelivery_ofIdenticalBody_isADuplicateWithOneStoredRow() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = Self.extractCallback(jobID: jobID, state: "Success")
            let first = try await service.post("/v1/callbacks", body)
            let second = try await service.post("/v1/callbacks", body)
            #expect(try first.json()["Duplicate"] as? Bool == false)
            #expect(try second.json()["Duplicate"] as? Bool == true)
            #expect(try second.json()["JobId"] as? String == jobID)

            let rows = try await service.query("SELECT count(*) AS n, max(delivery_count) AS deliveries FROM ci_callbacks JOIN ci_callback_digests USING (body_sha256)")
            #expect(rows[0]["n"].int == 1)
            #expect(rows[0]["deliveries"].int == 2)
            let history = try await service.get("/v1/jobs/\(jobID)/callbacks")
            let callbacks = try #require(try history.json()["Callbacks"] as? [[String: Any]])
            #expect(callbacks.count == 1)
            #expect(callbacks.first?["DeliveryCount"] as? Int == 2)
        }
    }

    @Test func fiftyParallelIdenticalCallbacks_giveOneRowAndFiftyOKs() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = Self.extractCallback(jobID: jobID, state: "Success")
            let replies = try await withThrowingTaskGroup(of: ServiceHarness.Reply.self) { group in
                for _ in 0..<50 {
                    group.addTask { try await service.post("/v1/callbacks", body) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(replies.map(\.status) == Array(repeating: 200, count: 50))
            let fresh = try replies.filter { try $0.json()["Duplicate"] as? Bool == false }
            #expect(fresh.count == 1)
            let rows = try await service.query("SELECT count(*) AS n, sum(delivery_count) AS deliveries FROM ci_callbacks JOIN ci_callback_digests USING (body_sha256)")
            #expect(rows[0]["n"].int == 1)
            #expect(rows[0]["deliveries"].int == 50)
        }
    }

    @Test func lateRunning_afterSuccess_keepsSuccess_butIsInTheHistory() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.extractCallback(jobID: jobID, state: "Success"))
            let late = try await service.post("/v1/callbacks", Self.extractCallback(jobID: jobID, state: "Running", message: nil))
            #expect(late.status == 200)
            #expect(try late.json()["State"] as? String == "Running")
            #expect(try late.json()["CurrentState"] as? String == "Success")

            let job = try await service.get("/v1/jobs/\(jobID)")
            let detail = try #require(try job.json()["JobsDetail"] as? [String: Any])
            #expect(detail["State"] as? String == "Success")
            let watermark = try await service.get("/v1/jobs/\(jobID)/watermark")
            #expect(try watermark.json()["Message"] as? String == "hello")

            let history = try await service.get("/v1/jobs/\(jobID)/callbacks")
            let callbacks = try #require(try history.json()["Callbacks"] as? [[String: Any]])
            #expect(callbacks.map { $0["State"] as? String } == ["Success", "Running"])
            #expect(callbacks.map { $0["Applied"] as? Bool } == [true, false])
            let receipt = try #require(try job.json()["Receipt"] as? [String: Any])
            #expect(receipt["CallbackCount"] as? Int == 2)
        }
    }

    @Test func runningThenSuccess_movesForward() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.extractCallback(jobID: jobID, state: "Running", message: nil))
            let success = try await service.post("/v1/callbacks", Self.extractCallback(jobID: jobID, state: "Success"))
            #expect(try success.json()["CurrentState"] as? String == "Success")
            let watermark = try await service.get("/v1/jobs/\(jobID)/watermark")
            #expect(try watermark.json()["State"] as? String == "Success")
        }
    }

    @Test func malformedBodies_get400WithTheReason_andAreKept() async throws {
        try await ServiceHarness.with { service in
            let cases: [(body: String, reason: String)] = [
                ("<Response><JobsDetail><JobId>j1</JobId></Response>", "expected </JobsDetail>"),
                (#"{"JobsDetail":{"State":"Success"}}"#, "JobsDetail[0] has no JobId"),
                (#"{"JobsDetail":[{"JobId":"j1","State":"Success"},{"JobId":"j2"}]}"#, "JobsDetail[1] has no State"),
                ("hello", "neither XML nor JSON"),
                (
                    #"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><Response><JobsDetail><JobId>&b;</JobId><State>Success</State></JobsDetail></Response>"#,
                    "DOCTYPE"
                ),
            ]
            for (body, reason) in cases {
                let reply = try await service.post("/v1/callbacks", Array(body.utf8))
                #expect(reply.status == 400, "\(body)")
                let error = try #require(try reply.json()["Error"] as? [String: Any])
                #expect(error["Code"] as? String == "InvalidCallback")
                let message = try #require(error["Message"] as? String)
                #expect(message.contains(reason), "\(message) should mention \(reason)")
                #expect((error["RequestId"] as? String)?.isEmpty == false)
            }
            let rejected = try await service.query("SELECT count(*) AS n FROM ci_callbacks WHERE outcome = 'rejected' AND rejection_reason IS NOT NULL")
            #expect(rejected[0]["n"].int == cases.count)
            let jobs = try await service.query("SELECT count(*) AS n FROM ci_jobs")
            #expect(jobs[0]["n"].int == 0)
        }
    }

    @Test func workflowFinish_isStoredAndAnswered200WithNoJobs() async throws {
        try await ServiceHarness.with { service in
            for name in ["xml-workflow-finish.xml", "json-workflow-finish.json"] {
                let reply = try await service.post("/v1/callbacks", try Vectors.bytes(name))
                #expect(reply.status == 200)
                let answer = try reply.json()
                #expect((answer["Jobs"] as? [Any])?.isEmpty == true)
                #expect(answer["EventName"] as? String == "WorkflowFinish")
            }
            let rows = try await service.query("SELECT count(*) AS n FROM ci_callbacks WHERE outcome = 'no_jobs'")
            #expect(rows[0]["n"].int == 2)
        }
    }

    @Test func describeResponse_withSeveralJobs_storesEachJob() async throws {
        try await ServiceHarness.with { service in
            let reply = try await service.post("/v1/callbacks", try Vectors.bytes("xml-describe-jobs-list-response.xml"))
            #expect(reply.status == 200)
            let jobs = try #require(try reply.json()["Jobs"] as? [[String: Any]])
            #expect(jobs.count == 2)
            for job in jobs {
                let jobID = try #require(job["JobId"] as? String)
                #expect(try await service.get("/v1/jobs/\(jobID)").status == 200)
            }
        }
    }

    @Test func storedData_survivesAServiceRestart() async throws {
        let first = try await ServiceHarness.start()
        let jobID = RequestIDForTests.jobID()
        do {
            #expect(try await first.post("/v1/callbacks", Self.extractCallback(jobID: jobID, state: "Success")).status == 200)
            await first.stop()
            let second = try await ServiceHarness.start(schema: first.schema)
            let watermark = try await second.get("/v1/jobs/\(jobID)/watermark")
            #expect(watermark.status == 200)
            #expect(try watermark.json()["Message"] as? String == "hello")
            await second.stop()
        } catch {
            await first.stop()
            try? first.dropSchema()
            throw error
        }
        try first.dropSchema()
    }
}

extension ServiceIngestTests {
    @Test func outOfRangeNumbers_areKeptInTheDetail_butNeverFailTheCallback() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = #"{"JobsDetail":{"JobId":"\#(jobID)","State":"Running","Progress":99999999999,"Operation":{"JobLevel":"7"}}}"#
            let reply = try await service.post("/v1/callbacks", Array(body.utf8))
            #expect(reply.status == 200, "\(reply.text)")
            let detail = try #require(try await service.get("/v1/jobs/\(jobID)").json()["JobsDetail"] as? [String: Any])
            #expect(detail["Progress"] as? String == "99999999999")
        }
    }
}
