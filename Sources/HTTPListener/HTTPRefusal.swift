import HTTPWire

/// A request or connection the listener refused by itself, instead of handing it to the responder.
///
/// The application decides how a refusal reads (``HTTPServerHooks/errorResponse``) and what is recorded
/// about it (``HTTPServerHooks/refusalObserver``); the listener only decides that it happens.
public struct HTTPRefusal: Sendable, Hashable {
    /// Why, from a fixed set, so it can label a metric without letting a client grow the series.
    public enum Reason: String, Sendable, Hashable, CaseIterable {
        /// 400: the request could not be framed or parsed.
        case malformed
        /// 414: the request line exceeds the head limit.
        case uriTooLong = "uri_too_long"
        /// 431: the header section (or a chunked body's trailers) exceeds its limit.
        case headersTooLarge = "headers_too_large"
        /// 413: the body exceeds `maxBodyBytes`.
        case bodyTooLarge = "body_too_large"
        /// 417: an `Expect` other than `100-continue`.
        case expectationFailed = "expectation_failed"
        /// 501: a transfer coding other than `chunked`.
        case unsupportedTransferCoding = "unsupported_transfer_coding"
        /// 505: an HTTP version other than 1.0 and 1.1.
        case versionNotSupported = "version_not_supported"
        /// 408: a started request did not arrive whole within `requestReadTimeout`.
        case requestTimeout = "request_timeout"
        /// 503: a connection beyond `maxConnections`.
        case atCapacity = "at_capacity"
        /// A connection beyond `maxConnections` closed without an answer: too many were already being refused.
        case atCapacityUnanswered = "at_capacity_unanswered"
        /// 503: a connection from a peer holding `maxConnectionsPerPeer` connections, all of them busy.
        case peerLimit = "peer_limit"
        /// 503: an idle or slow connection closed to make room for a new one (at `maxConnections`, or at
        /// its peer's `maxConnectionsPerPeer`).
        case evicted
        /// 503: the request arrived after shutdown began.
        case shuttingDown = "shutting_down"
        /// The application's admission refused the request's head (its status, typically 401 or 403).
        case admission
        /// 503: the body would take the request-body bytes in flight past `maxInflightBodyBytes`.
        case bodyBudget = "body_budget"

        /// The reason for a parser rejection with `status`.
        init(parserRejection status: HTTPStatus) {
            switch status.code {
            case 413: self = .bodyTooLarge
            case 414: self = .uriTooLong
            case 417: self = .expectationFailed
            case 431: self = .headersTooLarge
            case 501: self = .unsupportedTransferCoding
            case 505: self = .versionNotSupported
            default: self = .malformed
            }
        }
    }

    public var reason: Reason
    /// The status answered; nil when the connection was closed without an answer.
    public var status: HTTPStatus?
    /// What was wrong, for people. Never carries header values or body bytes.
    public var message: String
    /// The peer's address as text.
    public var remoteAddress: String
    /// Seconds a client should wait before trying again, sent as `Retry-After` (at capacity, over budget).
    public var retryAfterSeconds: Int?

    /// Creates a refusal.
    public init(reason: Reason, status: HTTPStatus?, message: String, remoteAddress: String, retryAfterSeconds: Int? = nil) {
        self.reason = reason
        self.status = status
        self.message = message
        self.remoteAddress = remoteAddress
        self.retryAfterSeconds = retryAfterSeconds
    }

    /// The listener's own answer when the application supplies none: plain HTTP, the status and the
    /// message as text.
    public static func plainResponse(_ refusal: HTTPRefusal) -> HTTPResponse {
        HTTPResponse(
            status: refusal.status ?? .serviceUnavailable, headers: ["Content-Type": "text/plain; charset=utf-8"],
            body: Array((refusal.message + "\n").utf8))
    }
}

/// The application's verdict on a request's head, before the listener reads its body.
public enum HTTPAdmission: Sendable {
    /// Read the body and hand the request to the responder.
    case proceed
    /// Answer this response with `Connection: close`, read no body, and close.
    case refuse(HTTPResponse)
}

/// What the application decides on the listener's behalf. The listener speaks only HTTP: how an error
/// body looks, which request id it carries, who may send a body and what is counted or logged are the
/// application's.
public struct HTTPServerHooks: Sendable {
    /// Decides on each request once its head is complete, before its body is read. Runs on an event-loop
    /// thread for every request: it must be quick and must not block. Default: every request proceeds.
    public var admission: @Sendable (HTTPRequestHead) -> HTTPAdmission
    /// The response for a refusal the listener answers (the `Retry-After` of ``HTTPRefusal/retryAfterSeconds``
    /// is added by the listener). Runs on an event-loop thread. Default: ``HTTPRefusal/plainResponse(_:)``.
    public var errorResponse: @Sendable (HTTPRefusal) -> HTTPResponse
    /// Told of every refusal, with the response sent (nil when the connection closed unanswered). Runs on
    /// an event-loop thread, so it must not block. Default (nil): the listener logs it at debug level.
    public var refusalObserver: (@Sendable (HTTPRefusal, HTTPResponse?) -> Void)?

    /// Creates hooks; every argument has the documented default.
    public init(
        admission: @escaping @Sendable (HTTPRequestHead) -> HTTPAdmission = { _ in .proceed },
        errorResponse: @escaping @Sendable (HTTPRefusal) -> HTTPResponse = HTTPRefusal.plainResponse,
        refusalObserver: (@Sendable (HTTPRefusal, HTTPResponse?) -> Void)? = nil
    ) {
        self.admission = admission
        self.errorResponse = errorResponse
        self.refusalObserver = refusalObserver
    }
}
