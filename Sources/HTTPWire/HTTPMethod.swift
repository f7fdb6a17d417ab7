/// An HTTP request method (RFC 9110 §9).
///
/// Methods are case-sensitive tokens: `get` is not `GET`. The parser accepts any syntactically valid
/// token so the responder can answer 405 or 501 for methods it does not serve.
public struct HTTPMethod: Sendable, Hashable, RawRepresentable, CustomStringConvertible {
    /// The method token exactly as received, for example `"POST"`.
    public var rawValue: String

    /// Creates a method from its token.
    /// - Parameter rawValue: The method token; not validated here (the parser validates what it reads).
    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    public var description: String { rawValue }

    public static let get = HTTPMethod(rawValue: "GET")
    public static let head = HTTPMethod(rawValue: "HEAD")
    public static let post = HTTPMethod(rawValue: "POST")
    public static let put = HTTPMethod(rawValue: "PUT")
    public static let delete = HTTPMethod(rawValue: "DELETE")
    public static let patch = HTTPMethod(rawValue: "PATCH")
    public static let options = HTTPMethod(rawValue: "OPTIONS")
}

/// The HTTP/1.x protocol version of a request.
public enum HTTPVersion: Sendable, Hashable {
    case http1_0
    case http1_1
}
