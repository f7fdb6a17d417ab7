import Foundation
import HTTPListener
import HTTPWire
import TestSupport
import Testing

/// The request-body budget (`maxInflightBodyBytes`, issue 10 §2): bodies beyond it are refused with 503
/// instead of being buffered, smaller ones still pass, and what a request held comes back once it is answered.
@Suite("Body budget")
struct ListenerBodyBudgetTests {
    private static func post(_ bytes: Int) -> String {
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: \(bytes)\r\n\r\n" + String(repeating: "b", count: bytes)
    }

    @Test func bodyBudget_RequestBeyondWhatIsHeldGets503_SmallerPass_AndAnsweringReleases() async throws {
        let gate = ListenerTestGate()
        let statistics = ListenerStatistics()
        let responder: HTTPServer.Responder = { request in
            if request.body.count >= 60_000 { await gate.wait() }
            return HTTPResponse(status: .ok, body: Array("\(request.body.count)".utf8))
        }
        try await withListenerServer(configure: { $0.limits.maxInflightBodyBytes = 100_000 }, statistics: statistics, responder: responder) { port in
            defer { gate.open() }
            let held = try await listenerBlocking {
                let client = try ListenerTestClient(port: port, receiveTimeout: 20)
                try client.send(Self.post(60_000))
                return client
            }
            // The first body is in the responder (held at the gate), and still counted.
            #expect(try await eventually { statistics.bodyBytesInFlight == 60_000 })
            try await listenerBlocking {
                let refused = try ListenerTestClient(port: port)
                try refused.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n")
                let response = try refused.readResponse()
                #expect(response.status == 503)
                #expect(response.headers["Retry-After"] == "1")
                #expect(response.headers["Connection"] == "close")
                #expect(try refused.readsEOF())

                let small = try ListenerTestClient(port: port)
                try small.send(Self.post(30_000))
                let answer = try small.readResponse()
                #expect(answer.status == 200 && answer.bodyText == "30000")
            }
            gate.open()
            let first = try await listenerBlocking { try held.readResponse() }
            #expect(first.status == 200 && first.bodyText == "60000")
            #expect(try await eventually { statistics.bodyBytesInFlight == 0 })
            // Released: the same size fits again.
            let again = try await listenerBlocking {
                let client = try ListenerTestClient(port: port, receiveTimeout: 20)
                try client.send(Self.post(60_000))
                return try client.readResponse()
            }
            #expect(again.status == 200)
            #expect(try await eventually { statistics.bodyBytesInFlight == 0 })
        }
    }

    @Test func bodyBudget_ChunkedBodyIsRefusedOnceItsChunksPassTheBudget() async throws {
        let statistics = ListenerStatistics()
        try await withListenerServer(configure: { $0.limits.maxInflightBodyBytes = 10_000 }, statistics: statistics) { port in
            try await listenerBlocking {
                let client = try ListenerTestClient(port: port)
                let chunk = "1770\r\n" + String(repeating: "c", count: 6000) + "\r\n"  // 0x1770 = 6000
                try client.send("POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
                try client.send(chunk)
                let response = try client.readResponse()
                #expect(response.status == 503)
                #expect(try client.readsEOF())
            }
            #expect(try await eventually { statistics.bodyBytesInFlight == 0 })
        }
    }

    @Test func bodyBudget_ConnectionClosedMidBodyGivesItsReservationBack() async throws {
        let statistics = ListenerStatistics()
        try await withListenerServer(configure: { $0.limits.maxInflightBodyBytes = 100_000 }, statistics: statistics) { port in
            var client: ListenerTestClient? = try await listenerBlocking {
                let client = try ListenerTestClient(port: port)
                try client.send("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 90000\r\n\r\npartial")
                return client
            }
            #expect(try await eventually { statistics.bodyBytesInFlight == 90_000 })
            client = nil  // closes the socket
            #expect(client == nil)
            #expect(try await eventually { statistics.bodyBytesInFlight == 0 })
            let answer = try await listenerBlocking {
                let client = try ListenerTestClient(port: port)
                try client.send(Self.post(90_000))
                return try client.readResponse()
            }
            #expect(answer.status == 200)
        }
    }
}
