import Foundation
import PostgresLibPQ
import Testing

/// The built `ci-callbackd`, run as an operator runs it: `serve` on a free loopback port over a fresh
/// schema of the test database, ready (migrated) when ``start(environment:output:)`` returns.
final class ServiceProcess {
    let process: Process
    let schema: String
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }
    private let admin: PostgresConnection

    private init(process: Process, schema: String, port: Int, admin: PostgresConnection) {
        self.process = process
        self.schema = schema
        self.port = port
        self.admin = admin
    }

    /// - Parameters:
    ///   - environment: Settings besides `DATABASE_URL`.
    ///   - output: Standard output and standard error (a `FileHandle` or a `Pipe`).
    ///   - log: What the service logged so far, for failure messages.
    ///   - launcher: A command that runs the binary (its path and arguments follow), e.g. `unshare` with a
    ///     shell that prepares the process's mount namespace and then `exec`s it (same process id).
    static func start(
        environment: [String: String] = [:], output: Any = FileHandle.nullDevice, log: @escaping () -> String = { "" },
        launcher: [String] = []
    ) async throws -> ServiceProcess {
        let schema = "t_" + RequestIDForTests.random()
        let admin = try PostgresConnection.connect(testDatabaseURL)
        try admin.execute(simpleSQL: "CREATE SCHEMA \(schema)")
        let port = try freeLoopbackPort()
        let process = Process()
        let binary = try ServiceBinaryTests.builtServiceBinary()
        let arguments = ["serve", "--host", "127.0.0.1", "--port", "\(port)"]
        if let command = launcher.first {
            process.executableURL = URL(fileURLWithPath: command)
            process.arguments = Array(launcher.dropFirst()) + [binary.path] + arguments
        } else {
            process.executableURL = binary
            process.arguments = arguments
        }
        process.environment = environment.merging(["DATABASE_URL": conninfo(testDatabaseURL, searchPath: schema)]) { $1 }
        process.standardOutput = output
        process.standardError = output
        let service = ServiceProcess(process: process, schema: schema, port: port, admin: admin)
        do {
            try process.run()
            let ready = try await eventually(within: .seconds(90), every: .milliseconds(100)) {
                try #require(process.isRunning, "ci-callbackd exited before it was ready:\n\(log())")
                return (try? await ServiceBinaryTests.fetch("GET", service.base + "/readyz"))?.status == 200
            }
            try #require(ready, "ci-callbackd not ready within 90 s:\n\(log())")
        } catch {
            service.stop()
            throw error
        }
        return service
    }

    /// Stops the service and drops its schema.
    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        _ = try? admin.execute(simpleSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
        admin.close()
    }
}
