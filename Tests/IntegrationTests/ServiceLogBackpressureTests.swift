import Foundation
import TestSupport
import Testing

/// Logging never blocks a request: the real binary, its standard error a pipe that nobody reads (a log
/// shipper that stopped), keeps answering, and the lines it could not write are counted, not waited for.
@Suite("Service log back-pressure")
struct ServiceLogBackpressureTests {
    @Test(.timeLimit(.minutes(3)))
    func service_StandardErrorNeverRead_AnswersEveryRequestAndCountsDroppedLines() async throws {
        // Kept open and never read: once its 64 KiB fill up, every write(2) to it would block.
        var unread: [Int32] = [-1, -1]
        try #require(pipe(&unread) == 0)
        defer { unread.forEach { close($0) } }
        try await ServiceProcess.with(environment: ["LOG_FORMAT": "json", "LOG_BUFFER_BYTES": "16k"], output: .descriptor(unread[1])) { service in
            let base = service.base

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
            #expect(service.child.isRunning)
        }
    }
}
