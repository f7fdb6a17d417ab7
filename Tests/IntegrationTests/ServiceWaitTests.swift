import Foundation
import JobStore
import TestSupport
import Testing

/// `?wait=` lookups, woken by PostgreSQL NOTIFY.
@Suite("Waiting for a result")
struct ServiceWaitTests {
    private static func callback(_ jobID: String, state: String, message: String? = nil) -> [UInt8] {
        let watermark = message.map { #","Message":"\#($0)""# } ?? ""
        return Array(
            #"{"JobsDetail":{"JobId":"\#(jobID)","State":"\#(state)","Tag":"ExtractDigitalWatermark","Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1"\#(watermark)}}}}"#
                .utf8)
    }

    @Test func wait_answersAsSoonAsTheJobIsFinal_withTheResult() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, state: "Running")).status == 200)
            let started = ContinuousClock.now
            async let waited = service.get("/v1/jobs/\(jobID)/watermark?wait=25s")
            // The lookup has read `Running` and sleeps: only what the Success callback sets off can end it
            // before its deadline (a GET that started after the callback would prove nothing).
            let asleep = try await eventually { service.completionListener.sleepingWaiters(for: jobID) == 1 }
            try #require(asleep, "the lookup never began to wait")
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, state: "Success", message: "found")).status == 200)
            let reply = try await waited
            #expect(reply.status == 200)
            #expect(try reply.json()["State"] as? String == "Success")
            #expect(try reply.json()["Message"] as? String == "found")
            // Woken by the notification, not by the 25 s deadline (a generous bound, not a speed check).
            #expect(ContinuousClock.now - started < .seconds(20))
            #expect(service.completionListener.sleepingWaiters(for: jobID) == 0)
        }
    }

    @Test func wait_elapses_withTheCurrentState() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID, state: "Running"))
            let reply = try await service.get("/v1/jobs/\(jobID)?wait=300ms")
            #expect(reply.status == 200)
            #expect(try (reply.json()["JobsDetail"] as? [String: Any])?["State"] as? String == "Running")
        }
    }

    @Test func wait_onAFinalOrUnknownJob_answersAtOnce() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID, state: "Failed"))
            #expect(try await service.get("/v1/jobs/\(jobID)?wait=60s").status == 200)
            #expect(try await service.get("/v1/jobs/jnope?wait=60s").status == 404)
        }
    }

    @Test func wait_parameter_isValidated() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID, state: "Running"))
            for query in ["wait=forever", "wait=-1", "colour=red", "wait=1s&wait=2s"] {
                let reply = try await service.get("/v1/jobs/\(jobID)?\(query)")
                #expect(reply.status == 400, "\(query)")
                #expect(try (reply.json()["Error"] as? [String: Any])?["Code"] as? String == "InvalidParameter")
            }
        }
    }

    @Test func waiters_areBounded_beyondTheLimitIs503() async throws {
        let service = try await ServiceHarness.start(maxWaiters: 1)
        do {
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID, state: "Running"))
            async let first = service.get("/v1/jobs/\(jobID)?wait=25s")
            // The first lookup holds the only waiter slot (it is asleep) before the second asks.
            let asleep = try await eventually { service.completionListener.sleepingWaiters(for: jobID) == 1 }
            try #require(asleep, "the first lookup never began to wait")
            let second = try await service.get("/v1/jobs/\(jobID)?wait=3s")
            #expect(second.status == 503)
            #expect(try (second.json()["Error"] as? [String: Any])?["Code"] as? String == "TooManyWaiters")
            // The final state ends the first wait long before its deadline.
            _ = try await service.post("/v1/callbacks", Self.callback(jobID, state: "Success"))
            let firstReply = try await first
            #expect(firstReply.status == 200)
            #expect(try (firstReply.json()["JobsDetail"] as? [String: Any])?["State"] as? String == "Success")
        } catch {
            await service.stop()
            try? service.dropSchema()
            throw error
        }
        await service.stop()
        try service.dropSchema()
    }
}
