import Foundation
import PostgresLibPQ
import TestSupport
import Testing

/// The built `ci-callbackd`, run as an operator runs it: `serve` on a free loopback port over a fresh
/// schema of the test database, ready (migrated) when ``start(environment:output:log:launcher:)`` returns.
final class ServiceProcess {
    let child: ChildProcess
    let schema: String
    let port: Int
    var base: String { "http://127.0.0.1:\(port)" }
    private let admin: PostgresConnection

    private init(child: ChildProcess, schema: String, port: Int, admin: PostgresConnection) {
        self.child = child
        self.schema = schema
        self.port = port
        self.admin = admin
    }

    /// Runs `body` with a started service, and stops it (and drops its schema) however `body` ends.
    static func with<T>(
        environment: [String: String] = [:], output: ChildProcess.Output = .discard, log: @escaping () -> String = { "" },
        launcher: [String] = [], _ body: (ServiceProcess) async throws -> T
    ) async throws -> T {
        let service = try await start(environment: environment, output: output, log: log, launcher: launcher)
        do {
            let result = try await body(service)
            await service.stop()
            return result
        } catch {
            await service.stop()
            throw error
        }
    }

    /// - Parameters:
    ///   - environment: Settings besides `DATABASE_URL`.
    ///   - output: Where standard output and standard error go.
    ///   - log: What the service logged so far, for failure messages.
    ///   - launcher: A command that runs the binary (its path and arguments follow), e.g. `unshare` with a
    ///     shell that prepares the process's mount namespace and then `exec`s it (same process id).
    static func start(
        environment: [String: String] = [:], output: ChildProcess.Output = .discard, log: @escaping () -> String = { "" },
        launcher: [String] = []
    ) async throws -> ServiceProcess {
        let schema = "t_" + RequestIDForTests.random()
        let admin = try PostgresConnection.connect(testDatabaseURL)
        try admin.execute(simpleSQL: "CREATE SCHEMA \(schema)")
        let port = try freeLoopbackPort()
        let command = launcher + [try builtServiceBinary().path, "serve", "--host", "127.0.0.1", "--port", "\(port)"]
        let child: ChildProcess
        do {
            child = try ChildProcess(
                command[0], Array(command.dropFirst()),
                environment: environment.merging(["DATABASE_URL": conninfo(testDatabaseURL, searchPath: schema)]) { $1 }, standardOutput: output)
        } catch {
            _ = try? admin.execute(simpleSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
            admin.close()
            throw error
        }
        let service = ServiceProcess(child: child, schema: schema, port: port, admin: admin)
        do {
            // Generous: every service of the suite migrates its own schema under the one migration lock
            // of the database, so a service started while dozens of others migrate waits its turn (more
            // than 90 s was seen at load 10-15 on 2 cores).
            let ready = try await eventually(within: .seconds(240), every: .milliseconds(100)) {
                try #require(child.isRunning, "ci-callbackd exited before it was ready:\n\(log())")
                return (try? await ServiceBinaryTests.fetch("GET", service.base + "/readyz"))?.status == 200
            }
            try #require(ready, "ci-callbackd not ready within 240 s:\n\(log())")
        } catch {
            await service.stop()
            throw error
        }
        return service
    }

    /// Stops the service (SIGTERM, waited for off the cooperative pool) and drops its schema.
    func stop() async {
        await child.stop()
        _ = try? admin.execute(simpleSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
        admin.close()
    }
}
