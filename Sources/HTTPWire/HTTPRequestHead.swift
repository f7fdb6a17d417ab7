/// A request's head, reported by ``HTTPRequestParser`` as soon as it is complete and before any body
/// byte is read, so a caller can refuse the request (authentication, a memory budget) without buffering
/// its body.
public struct HTTPRequestHead: HTTPRequestHeadFields, Equatable {
    /// How the body is framed, as the head announced it.
    public enum Body: Sendable, Hashable {
        /// `Content-Length` bytes (0 when the request has no body).
        case length(Int)
        /// `Transfer-Encoding: chunked`: the size is known only as chunks arrive.
        case chunked
    }

    public var method: HTTPMethod
    public var target: String
    public var version: HTTPVersion
    public var headers: HTTPHeaders
    /// The body's framing, already checked against the parser's body limit when it is a length.
    public var body: Body
    public var remoteAddress: String

    /// Creates a head.
    /// - Parameters:
    ///   - method: The request method.
    ///   - target: The raw request-target.
    ///   - version: The protocol version.
    ///   - headers: The header fields.
    ///   - body: The announced body framing.
    ///   - remoteAddress: The peer address text, `""` when there is no peer.
    public init(
        method: HTTPMethod, target: String, version: HTTPVersion = .http1_1, headers: HTTPHeaders = [:], body: Body = .length(0),
        remoteAddress: String = ""
    ) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.remoteAddress = remoteAddress
    }
}
