import Foundation
import PostgresLibPQ
import Testing

/// Logging never blocks a request: the real binary, its standard error a pipe that nobody reads (a log
/// shipper that stopped), keeps answering, and the lines it could not write are counted, not waited for.
@Suite("Service log back-pressure")
struct ServiceLogBackpressureTests {
    @Test(.timeLimit(.minutes(3)))
    func service_StandardErrorNeverRead_AnswersEveryRequestAndCountsDroppedLines() async throws {
        let binary = try ServiceBinaryTests.builtServiceBinary()
        let schema = "t_" + RequestIDForTests.random()
        let admin = try PostgresConnection.connect(testDatabaseURL)
        defer {
            _ = try? admin.execute(simpleSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
            admin.close()
        }
        try admin.execute(simpleSQL: "CREATE SCHEMA \(schema)")

        let port = try freeLoopbackPort()
        let unread = Pipe()  // Kept open and never read: once its 64 KiB fill up, every write(2) to it would block.
        let process = Process()
        process.executableURL = binary
        process.arguments = ["serve", "--host", "127.0.0.1", "--port", "\(port)"]
        process.environment = [
            "DATABASE_URL": conninfo(testDatabaseURL, searchPath: schema),
            "LOG_FORMAT": "json", "LOG_BUFFER_BYTES": "16k",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = unread
        try process.run()
        defer {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
            _ = unread
        }
        let base = "http://127.0.0.1:\(port)"
        let deadline = ContinuousClock.now.advanced(by: .seconds(90))
        while (try? await ServiceBinaryTests.fetch("GET", base + "/readyz"))?.status != 200 {
            try #require(process.isRunning, "ci-callbackd exited (\(process.terminationStatus)) before it was ready")
            try #require(ContinuousClock.now < deadline, "ci-callbackd not ready within 90 s")
            try await Task.sleep(for: .milliseconds(100))
        }

        // Each request logs an access line of ~300 bytes: 600 of them overflow the pipe and the 16 KiB buffer
        // several times over. A request blocked by logging would hang here until the time limit.
        let requests = 600
        for index in 0..<requests {
            let reply = try await ServiceBinaryTests.fetch("GET", base + "/healthz")
            try #require(reply.status == 200, "request \(index) answered \(reply.status)")
        }
        let metrics = try await ServiceBinaryTests.fetch("GET", base + "/metrics")
        let dropped = metrics.text.split(separator: "\n").first { $0.hasPrefix("log_lines_dropped_total ") }
        let count = try #require(dropped.flatMap { Int($0.split(separator: " ")[1]) }, "\(metrics.text)")
        #expect(count > 0, "LOG_BUFFER_BYTES=16k holds far less than \(requests) lines: lines beyond it are dropped and counted")
        #expect(process.isRunning)
    }
}
