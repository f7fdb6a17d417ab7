import Foundation
import TestSupport
import Testing

/// A webhook attempt to a host whose name server never answers ends at `WEBHOOK_TIMEOUT`, not when the
/// resolver gives up. The service runs in a mount namespace of its own whose `/etc/resolv.conf` names a
/// loopback UDP socket that this test holds open and never answers (a silent name server, as when a
/// firewall drops DNS); glibc would wait 10 s for it.
@Suite("Webhook DNS timeout")
struct WebhookDNSTimeoutTests {
    /// Binding port 53 and `unshare -m` with `mount --bind` need root (as in `.ci/run`'s container).
    static func canFakeResolver() async -> Bool {
        guard geteuid() == 0 else { return false }
        return (try? await ChildProcess.run("/usr/bin/unshare", ["-m", "true"], within: .seconds(30)))?.status.succeeded ?? false
    }

    /// A UDP socket on `address`:53 that receives queries and never answers.
    static func silentNameServer(_ address: String) throws -> Int32 {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(socket >= 0)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = in_port_t(53).bigEndian
        inet_pton(AF_INET, address, &sin.sin_addr)
        let bound = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        try #require(bound == 0, "cannot bind \(address):53 (errno \(errno))")
        return socket
    }

    static func seconds(_ rfc3339: String) throws -> TimeInterval {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return try #require(formatter.date(from: rfc3339), "not a time: \(rfc3339)").timeIntervalSince1970
    }

    @Test(.enabled("needs root and unshare -m to give the service a silent name server") { await canFakeResolver() }, .timeLimit(.minutes(3)))
    func delivery_NameServerNeverAnswers_AttemptEndsAtWebhookTimeout() async throws {
        let nameServer = try Self.silentNameServer("127.0.0.78")
        defer { close(nameServer) }
        let resolvConf = FileManager.default.temporaryDirectory.appendingPathComponent("resolv-\(UUID().uuidString).conf")
        try Data("nameserver 127.0.0.78\noptions timeout:10 attempts:1\n".utf8).write(to: resolvConf)
        defer { try? FileManager.default.removeItem(at: resolvConf) }

        try await ServiceProcess.with(
            environment: ["WEBHOOK_TIMEOUT": "2s", "WEBHOOK_RETRY_SCHEDULE": "1h", "LOG_LEVEL": "warning"],
            launcher: ["/usr/bin/unshare", "-m", "/bin/sh", "-c", #"mount --bind "$RESOLV_CONF" /etc/resolv.conf && exec "$0" "$@""#]
                .map { $0.replacingOccurrences(of: "$RESOLV_CONF", with: resolvConf.path) }
        ) { service in
            let created = try await ServiceBinaryTests.fetch(
                "POST", service.base + "/v1/subscriptions", body: Data(#"{"Url":"http://hooks.example.com/ci"}"#.utf8), contentType: "application/json")
            #expect(created.status == 201, "\(created.text)")
            let subscription = try #require(
                (try JSONSerialization.jsonObject(with: Data(created.text.utf8)) as? [String: Any])?["SubscriptionId"] as? String)
            let jobID = RequestIDForTests.jobID()
            let callback = try await ServiceBinaryTests.fetch(
                "POST", service.base + "/v1/callbacks", body: Data(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success"}}"#.utf8),
                contentType: "application/json")
            #expect(callback.status == 200)

            var attempt: [String: Any] = [:]
            #expect(
                try await eventually(within: .seconds(60), every: .milliseconds(200)) {
                    let reply = try await ServiceBinaryTests.fetch("GET", service.base + "/v1/subscriptions/\(subscription)/deliveries")
                    let deliveries = (try JSONSerialization.jsonObject(with: Data(reply.text.utf8)) as? [String: Any])?["Deliveries"] as? [[String: Any]]
                    attempt = ((deliveries?.first?["Attempts"] as? [[String: Any]])?.first) ?? [:]
                    return attempt["FinishedTime"] is String
                })
            let took = try Self.seconds(try #require(attempt["FinishedTime"] as? String)) - (try Self.seconds(try #require(attempt["Time"] as? String)))
            // 2 s of WEBHOOK_TIMEOUT plus slack for a loaded machine; the silent name server would hold it 10 s.
            #expect(took < 6, "the attempt took \(took) s: \(attempt)")
            #expect((attempt["Error"] as? String)?.isEmpty == false)
        }
    }
}
