import HTTPWire

/// Everything a ``HTTPRequestParser`` says about a byte stream, independent of how it was split.
///
/// `.sendContinue` is left out on purpose: it is due only while no body byte has arrived, so it
/// legitimately depends on the split.
public struct ParserOutcome: Equatable, CustomStringConvertible {
    /// How the stream ended.
    public enum End: Equatable {
        /// The parser wants more bytes; `partial` is ``HTTPRequestParser/hasPartialRequest``.
        case needMoreData(partial: Bool)
        /// The parser refused the stream.
        case rejected(status: Int, reason: String)
    }

    /// Every complete request, in order.
    public var requests: [HTTPRequest]
    /// How the stream ended.
    public var end: End

    public var description: String {
        "\(requests.count) request(s) [\(requests.map { "\($0.method) \($0.target) body=\($0.body.count)" }.joined(separator: ", "))], end \(end)"
    }

    /// Feeds `bytes` to a fresh parser in pieces cut at `cuts` (sorted offsets), draining pipelined
    /// requests after each piece as the listener does.
    public static func run(_ bytes: [UInt8], cuts: [Int], limits: HTTPParserLimits) -> ParserOutcome {
        var parser = HTTPRequestParser(limits: limits)
        var requests: [HTTPRequest] = []
        var head: HTTPRequestHead?
        var start = 0
        for cut in cuts + [bytes.count] where cut >= start {
            var action = parser.feed(Array(bytes[start..<cut]))
            start = cut
            drain: while true {
                switch action {
                case .needMoreData:
                    break drain
                case .head(let reported):
                    invariant(head == nil, "a second head before the first request completed")
                    head = reported
                    action = parser.next()
                case .sendContinue:
                    action = parser.next()
                case .request(let request):
                    invariant(
                        head.map { HTTPRequest(head: $0, body: request.body) } == request,
                        "a request must be announced by a head with the same method, target, version and headers")
                    head = nil
                    requests.append(request)
                    action = parser.next()
                case .reject(let status, let reason):
                    invariant(parser.isFailed, "a rejecting parser must report isFailed")
                    invariant(parser.next() == action, "a failed parser must repeat its rejection")
                    return ParserOutcome(requests: requests, end: .rejected(status: status.code, reason: reason))
                }
            }
        }
        return ParserOutcome(requests: requests, end: .needMoreData(partial: parser.hasPartialRequest))
    }
}
