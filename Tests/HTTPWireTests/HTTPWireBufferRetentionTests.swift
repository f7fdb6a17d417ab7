import Testing

@testable import HTTPWire

/// What the parser keeps between requests: a kept-alive connection must not hold its largest request's
/// size for as long as it stays open (issue 10 §2: 64 idle connections after 1 MiB bodies held 128 MiB).
@Suite("HTTPWire buffer retention")
struct HTTPWireBufferRetentionTests {
    private static func request(body: [UInt8]) -> [UInt8] {
        Array("POST /v1/callbacks HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body
    }

    /// Feeds `bytes` in read-sized pieces, as the event loop does, and returns the bodies of the requests parsed.
    private static func feed(_ bytes: [UInt8], to parser: inout HTTPRequestParser) -> [[UInt8]] {
        var bodies: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + 65_536)
            var action = parser.feed(Array(bytes[offset..<end]))
            reading: while true {
                switch action {
                case .request(let request):
                    bodies.append(request.body)
                    action = parser.next()
                case .head, .sendContinue:
                    action = parser.next()
                case .needMoreData, .reject:
                    break reading
                }
            }
            offset = end
        }
        return bodies
    }

    @Test func parser_AfterALargeBody_KeepsNoLargeBuffer() {
        var parser = HTTPRequestParser()
        let large = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        #expect(Self.feed(Self.request(body: large), to: &parser) == [large])
        #expect(parser.bufferCapacity <= HTTPRequestParser.retainedBufferCapacity)

        // The connection goes on working.
        let small = Array("{}".utf8)
        #expect(Self.feed(Self.request(body: small), to: &parser) == [small])
    }

    @Test func parser_LargeBodyFollowedByAPipelinedRequest_KeepsTheRestAndParsesIt() {
        var parser = HTTPRequestParser()
        let large = [UInt8](repeating: UInt8(ascii: "b"), count: 300_000)
        let small = Array("{}".utf8)
        #expect(Self.feed(Self.request(body: large) + Self.request(body: small), to: &parser) == [large, small])
        #expect(parser.bufferCapacity <= HTTPRequestParser.retainedBufferCapacity)
    }
}
