import Foundation
import HTTPWire
import JobStore
import Logging
import PostgresLibPQ
import Synchronization
import Testing

@testable import CallbackService

/// Every request gets one access line, and every line logged for a request carries its id.
@Suite("Request logging")
struct RequestLogTests {
    @Test func respond_logsOneAccessLinePerRequest_andEveryLineCarriesTheRequestID() async throws {
        let lines = Mutex<[[UInt8]]>([])
        let logger = Logger(label: "test") { label in
            ServiceLogHandler(label: label, format: .json) { line in lines.withLock { $0.append(line) } }
        }
        // Nothing listens on port 1: a lookup fails with the database unavailable, which logs a warning.
        var poolConfiguration = PostgresPool.Configuration(conninfo: "postgresql://postgres@127.0.0.1:1/none")
        poolConfiguration.size = 1
        let pool = PostgresPool(configuration: poolConfiguration, logger: Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() })
        let application = CallbackApplication(store: JobStore(pool: pool, logger: logger), configuration: .init(requiredSchemaVersion: 1), logger: logger)

        let health = await application.respond(to: HTTPRequest(method: .get, target: "/healthz", headers: ["X-Request-Id": "req-1"]))
        let lookup = await application.respond(to: HTTPRequest(method: .get, target: "/v1/jobs/j1", headers: ["X-Request-Id": "req-2"]))
        await pool.close()
        #expect(health.status.code == 200)
        #expect(lookup.status.code == 503)

        let objects = try lines.withLock { $0 }.map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
        }
        let summary = objects.map { [$0["request.id"] as? String ?? "-", $0["message"] as? String ?? "-", $0["http.status"] as? String ?? "-"] }
        #expect(summary == [["req-1", "request", "200"], ["req-2", "database unavailable", "-"], ["req-2", "request", "503"]])
    }
}
