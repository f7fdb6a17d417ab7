import Foundation
import JobStore
import PostgresLibPQ
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The built `ci-callbackd`, run as an operator runs it: one file, copied alone into an empty folder,
/// started from `/` with nothing but its database in the environment. Its migrations and its OpenAPI
/// document must be inside it.
@Suite("Service binary")
struct ServiceBinaryTests {
    @Test(.timeLimit(.minutes(3)))
    func binary_CopiedAloneAndStartedFromRoot_MigratesBecomesReadyAndServes() async throws {
        let built = try Self.builtServiceBinary()
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
        let process = Process()
        process.executableURL = binary
        process.arguments = ["serve", "--host", "127.0.0.1", "--port", "\(port)"]
        process.currentDirectoryURL = URL(fileURLWithPath: "/")
        process.environment = ["DATABASE_URL": conninfo(testDatabaseURL, searchPath: schema)]
        let output = try FileHandle(forWritingTo: log)
        process.standardOutput = output
        process.standardError = output
        try process.run()
        defer {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
        }
        let serviceLog = { String(decoding: FileManager.default.contents(atPath: log.path) ?? Data(), as: UTF8.self) }
        let base = "http://127.0.0.1:\(port)"

        // Ready means migrated to the version compiled in: the embedded migrations ran.
        let deadline = ContinuousClock.now.advanced(by: .seconds(90))
        var readiness = try? await Self.fetch("GET", base + "/readyz")
        while readiness?.status != 200 {
            try #require(process.isRunning, "ci-callbackd exited (\(process.terminationStatus)) before it was ready:\n\(serviceLog())")
            try #require(ContinuousClock.now < deadline, "ci-callbackd not ready within 90 s:\n\(serviceLog())")
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
    }

    /// The `ci-callbackd` that `swift build` put beside this test runner (`CI_CALLBACKD_BINARY` names
    /// another). Missing is a failure, not a skip: the suite builds every product before it runs.
    static func builtServiceBinary() throws -> URL {
        if let explicit = ProcessInfo.processInfo.environment["CI_CALLBACKD_BINARY"], !explicit.isEmpty {
            return URL(fileURLWithPath: explicit)
        }
        var folders: [URL] = []
        if let runner = Bundle.main.executableURL {
            folders.append(runner.resolvingSymlinksInPath().deletingLastPathComponent())
        }
        // On macOS the tests load as an .xctest bundle in the products folder, run by a helper elsewhere.
        folders += Bundle.allBundles.filter { $0.bundlePath.hasSuffix(".xctest") }.map { $0.bundleURL.deletingLastPathComponent() }
        let candidates = folders.map { $0.appendingPathComponent("ci-callbackd") }
        return try #require(
            candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) },
            "no built ci-callbackd in \(folders.map(\.path)); run swift build (or set CI_CALLBACKD_BINARY)")
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
