import Foundation
import HTTPWire
import PostgresLibPQ
import TestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Callbacks without a valid token are refused on their head, before their body is read (issue 15 §2):
/// the real binary, as an operator runs it, with `CALLBACK_TOKENS` set.
@Suite("Admission before the body")
struct ServiceAdmissionBinaryTests {
    @Test(.timeLimit(.minutes(3)))
    func admission_WrongTokenHeadsWithMebibyteBodies_Get401AndCloseWithoutGrowingMemory() async throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("ci-callbackd-admission-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let serviceLog = { String(decoding: FileManager.default.contents(atPath: log.path) ?? Data(), as: UTF8.self) }
        try await ServiceProcess.with(
            environment: ["CALLBACK_TOKENS": "the-right-token", "LOG_FORMAT": "json"], output: .file(log.path), log: serviceLog
        ) { service in
            let (pid, port, base) = (service.child.pid, service.port, service.base)

            let head = "POST /v1/callbacks/a-wrong-token HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
            /// `count` connections at once, each sending the head and no body; the answers, and whether each closed.
            let refuseAll: @Sendable (Int) async throws -> [(status: Int, code: String?, closed: Bool)] = { count in
                try await listenerBlocking {
                    let clients = try (0..<count).map { _ in try ListenerTestClient(port: port, receiveTimeout: 10) }
                    for client in clients { try client.send(head) }
                    return try clients.map { client in
                        let response = try client.readResponse()
                        let json = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
                        let code = (json?["Error"] as? [String: Any])?["Code"] as? String
                        let closed = try client.readsEOF()
                        return (response.status, code, response.headers["Connection"] == "close" && closed)
                    }
                }
            }
            // A first round makes what any refusal needs (a loop's buffers, metric handles) before RSS is read.
            _ = try await refuseAll(8)
            let before = try Self.residentBytes(of: pid)
            let answers = try await refuseAll(64)
            let after = try Self.residentBytes(of: pid)

            #expect(answers.count == 64)
            #expect(answers.allSatisfy { $0.status == 401 && $0.code == "Unauthorized" }, "\(answers.filter { $0.status != 401 }.prefix(3))")
            #expect(answers.allSatisfy { $0.closed }, "every connection is closed by the server after its 401")
            // Buffering the declared bodies would cost 64 MiB; the refusals themselves cost next to nothing.
            #expect(after - before < 16 << 20, "RSS grew from \(before >> 10) KiB to \(after >> 10) KiB")

            let metrics = try await ServiceBinaryTests.fetch("GET", base + "/metrics")
            #expect(metrics.text.contains(#"http_listener_refusals_total{reason="admission",status="401"} 72"#), "\(metrics.text)")
            #expect(metrics.text.contains(#"http_inflight_body_bytes 0"#))
            // Log lines reach the file from the service's log writer thread, a moment after the answer.
            #expect(try await eventually { serviceLog().contains(#""message":"http request refused""#) })
            #expect(!serviceLog().contains("a-wrong-token"), "the token is never logged")
        }
    }

    /// `VmRSS` of process `pid`, from /proc.
    static func residentBytes(of pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
        let kibibytes = try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
        return kibibytes << 10
    }
}
