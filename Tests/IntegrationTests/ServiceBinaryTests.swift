import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The built `ci-callbackd`, run as an operator runs it: one file, copied alone into an empty folder,
/// started from `/` with nothing but its database in the environment. Its migrations and its OpenAPI
/// document must be inside it.
@Suite("Service binary")
struct ServiceBinaryTests {
    @Test(.timeLimit(.minutes(6)))
    func binary_CopiedAloneAndStartedFromRoot_MigratesBecomesReadyAndServes() async throws {
        let built = try builtServiceBinary()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ci-callbackd-alone-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let binary = folder.appendingPathComponent("ci-callbackd")
        try FileManager.default.copyItem(at: built, to: binary)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["ci-callbackd"])

        let schema = "t_" + RequestIDForTests.random()
        let admin = try PostgresConnection.connect(testDatabaseURL)
        defer {
            _ = try? admin.execute(simpleSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
            admin.close()
        }
        try admin.execute(simpleSQL: "CREATE SCHEMA \(schema)")

        let port = try freeLoopbackPort()
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("ci-callbackd-alone-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let process = try ChildProcess(
            binary.path, ["serve", "--host", "127.0.0.1", "--port", "\(port)"],
            environment: ["DATABASE_URL": conninfo(testDatabaseURL, searchPath: schema)],
            workingDirectory: "/", standardOutput: .file(log.path))
        // On a failure: the reaping thread collects it once it has stopped. On success it is stopped below.
        defer { process.terminate() }
        let serviceLog = { String(decoding: FileManager.default.contents(atPath: log.path) ?? Data(), as: UTF8.self) }
        let base = "http://127.0.0.1:\(port)"

        // Ready means migrated to the version compiled in: the embedded migrations ran.
        // Generous: it waits its turn at the database's one migration lock behind the rest of the suite's services.
        let deadline = ContinuousClock.now.advanced(by: .seconds(240))
        var readiness = try? await Self.fetch("GET", base + "/readyz")
        while readiness?.status != 200 {
            try #require(process.isRunning, "ci-callbackd exited (\(process.exitStatus.map { "\($0)" } ?? "")) before it was ready:\n\(serviceLog())")
            try #require(ContinuousClock.now < deadline, "ci-callbackd not ready within 240 s:\n\(serviceLog())")
            try await Task.sleep(for: .milliseconds(100))
            readiness = try? await Self.fetch("GET", base + "/readyz")
        }
        let version = try admin.query("SELECT max(version) AS version FROM \(unsafeRaw: schema).schema_migrations")
        #expect(version.first?["version"].int == (try MigrationSet.embedded().latestVersion))

        let jobID = RequestIDForTests.jobID()
        let callback = #"""
            {"EventName":"TaskFinish","JobsDetail":{"JobId":"\#(jobID)","State":"Success","Tag":"ExtractDigitalWatermark",\#
            "Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1","Message":"one file"}}}}
            """#
        let stored = try await Self.fetch("POST", base + "/v1/callbacks", body: Data(callback.utf8), contentType: "application/json")
        #expect(stored.status == 200, "\(stored.text)")
        let watermark = try await Self.fetch("GET", base + "/v1/jobs/\(jobID)/watermark")
        #expect(watermark.status == 200)
        #expect(watermark.text.contains(#""Message":"one file""#), "\(watermark.text)")

        let document = try await Self.fetch("GET", base + "/openapi.yaml")
        #expect(document.status == 200)
        #expect(document.text.hasPrefix("openapi: 3.1.0\n"))
        await process.stop()
    }

    struct Reply {
        var status: Int
        var text: String
    }

    static func fetch(_ method: String, _ url: String, body: Data? = nil, contentType: String? = nil) async throws -> Reply {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.timeoutInterval = 30
        request.httpBody = body
        if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return Reply(status: try #require(response as? HTTPURLResponse).statusCode, text: String(decoding: data, as: UTF8.self))
    }
}
