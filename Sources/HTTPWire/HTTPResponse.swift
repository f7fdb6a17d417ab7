/// An HTTP response as the responder builds it.
///
/// Framing fields (`Content-Length`, `Transfer-Encoding`, `Connection`, `Date`) are owned by the encoder:
/// values set here for them are replaced.
public struct HTTPResponse: Sendable {
    /// The response status.
    public var status: HTTPStatus
    /// The response header fields.
    public var headers: HTTPHeaders
    /// The complete response body.
    public var body: [UInt8]

    /// Creates a response.
    /// - Parameters:
    ///   - status: The status.
    ///   - headers: Header fields, without framing fields.
    ///   - body: The body bytes.
    public init(status: HTTPStatus, headers: HTTPHeaders = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}
