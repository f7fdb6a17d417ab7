import Foundation
import TestSupport
import Testing

/// The database goes away and comes back while the service keeps running.
///
/// Uses a cluster of its own (scripts/pg-cluster, `.pgdata-outage/`), because stopping the shared one
/// would fail every other test running in parallel.
@Suite("Database outage")
struct ServiceOutageTests {
    private static let directory = repositoryRoot.appendingPathComponent(".pgdata-outage").path
    /// Picked once per test process, so several checkouts can run the suite at the same time.
    private static let port: String = {
        guard let port = try? freeLoopbackPort() else { return "54339" }
        return String(port)
    }()

    /// Runs `scripts/pg-cluster COMMAND DIR PORT` and returns what it printed.
    @discardableResult
    private static func cluster(_ command: String) async throws -> String {
        let script = repositoryRoot.appendingPathComponent("scripts/pg-cluster").path
        let output = try await ChildProcess.succeed(script, [command, directory, port], within: .seconds(300))
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func callback(_ jobID: String) -> [UInt8] {
        Array(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Tag":"ExtractDigitalWatermark"}}"#.utf8)
    }

    @Test func databaseDown_gives503WithRetryAfter_andRecoversWithoutRestart() async throws {
        let databaseURL = try await Self.cluster("start")
        let service = try await ServiceHarness.start(databaseURL: databaseURL)
        do {
            let before = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks", Self.callback(before)).status == 200)

            try await Self.cluster("stop")
            let during = RequestIDForTests.jobID()
            let refused = try await service.post("/v1/callbacks", Self.callback(during))
            #expect(refused.status == 503)
            #expect(refused.header("Retry-After") == "5")
            let error = try #require(try refused.json()["Error"] as? [String: Any])
            #expect(error["Code"] as? String == "DatabaseUnavailable")
            #expect(try await service.get("/readyz").status == 503)
            #expect(try await service.get("/healthz").status == 200, "the process itself is alive")

            try await Self.cluster("start")
            let after = try await service.post("/v1/callbacks", Self.callback(during))
            #expect(after.status == 200, "the same callback, retried, is accepted: \(after.text)")
            #expect(try after.json()["Duplicate"] as? Bool == false)
            #expect(try await service.get("/v1/jobs/\(before)").status == 200)
            #expect(try await service.get("/v1/jobs/\(during)").status == 200)
            #expect(try await service.get("/readyz").status == 200)
        } catch {
            await service.stop()
            try? service.dropSchema(databaseURL: databaseURL)
            throw error
        }
        await service.stop()
        try service.dropSchema(databaseURL: databaseURL)
        try await Self.cluster("stop")
    }
}
