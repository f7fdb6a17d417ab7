import CIClient
import CIModel
import COSSigning
import CallbackService
import Foundation
import HTTPListener
import HTTPWire
import Logging
import Synchronization
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// CI's callback and CI's answer to the submit race to the store. The loop tests see whichever order
/// happens; here a CI of our own fixes the order in which the callback wins.
@Suite("Submit answer overtaken by the callback")
struct SubmitRaceTests {
    @Test func submit_CallbackStoredBeforeTheAnswer_AnswersTheLaterState() async throws {
        let answer = try Vectors.bytes("xml-extract-submitted-response.xml")
        let jobID = try #require(try CallbackDecoder.decode(answer).jobs.first?.jobID)
        // The reference Success callback, re-addressed to the job the answer names.
        let successJobID = try #require(try CallbackDecoder.decode(Vectors.bytes("xml-extract-success.xml")).jobs.first?.jobID)
        let callback = Array(
            String(decoding: try Vectors.bytes("xml-extract-success.xml"), as: UTF8.self)
                .replacingOccurrences(of: successJobID, with: jobID).utf8)

        // This CI posts the job's Success callback and answers the submit only once the service has
        // answered the callback 200, which it does after the COMMIT: the callback is stored first.
        let serviceURL = Mutex<String?>(nil)
        let callbackStatus = Mutex<Int?>(nil)
        let ci = HTTPServer(
            configuration: Self.loopbackConfiguration, logger: Logger(label: "submit-race-ci") { _ in SwiftLogNoOpLogHandler() }
        ) { request in
            guard request.path == "/jobs", let base = serviceURL.withLock({ $0 }) else { return HTTPResponse(status: .notFound) }
            var post = URLRequest(url: URL(string: base + "/v1/callbacks")!)
            post.httpMethod = "POST"
            post.httpBody = Data(callback)
            post.setValue("application/xml", forHTTPHeaderField: "Content-Type")
            let status = ((try? await URLSession.shared.data(for: post))?.1 as? HTTPURLResponse)?.statusCode
            callbackStatus.withLock { $0 = status }
            return HTTPResponse(status: .ok, headers: ["Content-Type": "application/xml"], body: answer)
        }
        let ciRun = Task { try await ci.run() }
        let ciPort = try await ci.waitUntilListening()

        let service = try await ServiceHarness.start(submitter: singleAttemptSubmitter(ciPort: ciPort))
        serviceURL.withLock { $0 = service.baseURL }
        do {
            let reply = try await service.post(
                "/v1/watermark-extractions", Array(#"{"Object":"input/demo.mp4"}"#.utf8), contentType: "application/json")
            #expect(callbackStatus.withLock { $0 } == 200, "the callback was not stored before CI answered")
            #expect(reply.status == 201)
            let body = try reply.json()
            #expect(body["JobId"] as? String == jobID)
            #expect(body["State"] as? String == "Success", "the stored, later state; not CI's Submitted")

            let history = try #require(try await service.get("/v1/jobs/\(jobID)/callbacks").json()["Callbacks"] as? [[String: Any]])
            #expect(history.map { $0["Source"] as? String } == ["callback", "submit"])
            #expect(history.map { $0["State"] as? String } == ["Success", "Submitted"])
            #expect(history.map { $0["Applied"] as? Bool } == [true, false], "a final state is never replaced by an older one")
            let job = try await service.get("/v1/jobs/\(jobID)/watermark").json()
            #expect(job["State"] as? String == "Success")
        } catch {
            await service.stop()
            try? service.dropSchema()
            ciRun.cancel()
            _ = try? await ciRun.value
            throw error
        }
        await service.stop()
        try service.dropSchema()
        ciRun.cancel()
        _ = try? await ciRun.value
    }

    private static var loopbackConfiguration: HTTPServerConfiguration {
        var configuration = HTTPServerConfiguration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.eventLoopCount = 1
        return configuration
    }
}
