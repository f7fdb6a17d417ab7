import HTTPListener
import HTTPWire
import Testing

/// A connection answered 408 lingers (up to 2 s) until its peer closes, so that a reset cannot destroy the
/// answer. At capacity it is still a place taken: when every place is held by such connections, a fresh
/// client must not be turned away with 503, since none of them has anything left to receive.
@Test(.timeLimit(.minutes(2)))
func listener_AtCapacityEveryPlaceLingeringAfter408_FreshClientIsAnswered() async throws {
    let places = 8
    let statistics = ListenerStatistics()
    try await withListenerServer(
        configure: {
            $0.eventLoopCount = 1
            $0.limits.maxConnections = places
            $0.limits.requestReadTimeout = .milliseconds(300)
        }, statistics: statistics
    ) { port in
        let outcome = try await listenerBlocking { () -> (timeouts: [Int], open: Int, fresh: Int) in
            // Peers that send half a head, read their 408 and then neither close nor send: they linger.
            let slow = try (0..<places).map { _ in try ListenerTestClient(port: port) }
            for client in slow { try client.send("GET /slow HTTP/1.1\r\nHost: test\r\n") }
            let timeouts = try slow.map { try $0.readResponse().status }
            let open = statistics.openConnections
            let fresh = try ListenerTestClient(port: port)
            try fresh.send("GET /fresh HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            let status = try fresh.readResponse().status
            withExtendedLifetime(slow) {}
            return (timeouts, open, status)
        }
        #expect(outcome.timeouts == Array(repeating: 408, count: places))
        #expect(outcome.open == places, "every place was held while the fresh client connected")
        #expect(outcome.fresh == 200, "the fresh client was answered \(outcome.fresh)")
    }
}
