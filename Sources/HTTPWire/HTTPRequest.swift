/// A complete HTTP/1.x request: head and fully received body.
public struct HTTPRequest: Sendable, Equatable {
    /// The request method.
    public var method: HTTPMethod
    /// The raw request-target as received, for example `"/v1/jobs?state=Success"`.
    public var target: String
    /// The protocol version the client spoke.
    public var version: HTTPVersion
    /// The request header fields in order (trailers of a chunked body are not included).
    public var headers: HTTPHeaders
    /// The request body, de-chunked when it arrived with `Transfer-Encoding: chunked`.
    public var body: [UInt8]
    /// The peer's IP address as text (`"127.0.0.1"`, `"::1"`); set by the listener, `""` elsewhere.
    public var remoteAddress: String

    /// Creates a request.
    /// - Parameters:
    ///   - method: The request method.
    ///   - target: The raw request-target; `path` and `query` are derived from it.
    ///   - version: The protocol version.
    ///   - headers: The header fields.
    ///   - body: The body bytes.
    ///   - remoteAddress: The peer address text, `""` when there is no peer.
    public init(
        method: HTTPMethod,
        target: String,
        version: HTTPVersion = .http1_1,
        headers: HTTPHeaders = [:],
        body: [UInt8] = [],
        remoteAddress: String = ""
    ) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.remoteAddress = remoteAddress
    }

    /// The request made of an admitted head and its body.
    /// - Parameters:
    ///   - head: The head the parser reported before the body.
    ///   - body: The body bytes, de-chunked.
    public init(head: HTTPRequestHead, body: [UInt8]) {
        self.init(
            method: head.method, target: head.target, version: head.version, headers: head.headers, body: body,
            remoteAddress: head.remoteAddress)
    }
}

extension HTTPRequest: HTTPRequestHeadFields {}

/// What a request's head says, shared by ``HTTPRequestHead`` (before the body is read) and
/// ``HTTPRequest`` (with it), so the target and connection rules are read one way in both.
public protocol HTTPRequestHeadFields: Sendable {
    /// The request method.
    var method: HTTPMethod { get }
    /// The raw request-target as received, for example `"/v1/jobs?state=Success"`.
    var target: String { get }
    /// The protocol version the client spoke.
    var version: HTTPVersion { get }
    /// The request header fields in order.
    var headers: HTTPHeaders { get }
    /// The peer's IP address as text (`"127.0.0.1"`, `"::1"`); set by the listener, `""` elsewhere.
    var remoteAddress: String { get }
}

extension HTTPRequestHeadFields {
    /// The raw, still percent-encoded path: the target up to the first `?`.
    public var path: String {
        guard let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return target }
        return String(target[..<mark])
    }

    /// The raw query after the first `?`, or `nil` when the target has no `?`.
    public var query: String? {
        guard let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        return String(target[target.utf8.index(after: mark)...])
    }

    /// The path split on `/` with empty segments dropped, each percent-decoded.
    ///
    /// A segment with an invalid escape, `%00`, or one that does not decode to UTF-8, is kept raw so routing
    /// sees what the client sent instead of a silently altered name.
    public var pathSegments: [String] {
        path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map { raw in
            // Most segments have no escape: their text is taken as it is, without the decoder's byte copy
            // and validation (every request routes through here).
            guard raw.contains(UInt8(ascii: "%")) else { return String(Substring(raw)) }
            return PercentDecoding.decode(raw, plusAsSpace: false) ?? String(decoding: raw, as: UTF8.self)
        }
    }

    /// The query decoded as `application/x-www-form-urlencoded`: `+` is a space, `%XX` is decoded.
    ///
    /// Empty items (`a=1&&b=2`) are skipped; an item without `=` has an empty value; a name or value
    /// with an invalid escape or `%00` is kept raw.
    public var queryItems: [(name: String, value: String)] {
        guard let query else { return [] }
        return query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true).map { item in
            let name: Substring.UTF8View.SubSequence
            let value: Substring.UTF8View.SubSequence
            if let equals = item.firstIndex(of: UInt8(ascii: "=")) {
                name = item[..<equals]
                value = item[item.index(after: equals)...]
            } else {
                name = item
                value = item[item.endIndex...]
            }
            return (
                name: PercentDecoding.decode(name, plusAsSpace: true) ?? String(decoding: name, as: UTF8.self),
                value: PercentDecoding.decode(value, plusAsSpace: true) ?? String(decoding: value, as: UTF8.self)
            )
        }
    }

    /// The value of the first query item named `name` (exact, case-sensitive match), decoded.
    public func queryItem(_ name: String) -> String? {
        queryItems.first { $0.name == name }?.value
    }

    /// Whether the client asked to keep the connection open after this request (RFC 9112 §9.3).
    ///
    /// HTTP/1.1 defaults to keep-alive unless a `Connection` field lists `close`; HTTP/1.0 defaults to
    /// close unless a `Connection` field lists `keep-alive`.
    public var keepAlive: Bool {
        var sawClose = false
        var sawKeepAlive = false
        for value in headers.values(for: "Connection") {
            for token in value.split(separator: ",") {
                let trimmed = String(token.trimmingHTTPWhitespace())
                if trimmed.equalsASCIICaseInsensitive("close") {
                    sawClose = true
                } else if trimmed.equalsASCIICaseInsensitive("keep-alive") {
                    sawKeepAlive = true
                }
            }
        }
        if sawClose { return false }
        switch version {
        case .http1_1: return true
        case .http1_0: return sawKeepAlive
        }
    }
}

/// Percent-decoding of URI components (RFC 3986 §2.1).
enum PercentDecoding {
    /// Decodes `%XX` escapes (and `+` when `plusAsSpace`), or returns `nil` when an escape is malformed,
    /// is `%00`, or the result is not valid UTF-8. U+0000 is refused because no name the service looks up
    /// (JobId, tag, queue id, token) can hold it, and PostgreSQL text cannot carry it: a decoded NUL
    /// reached the database as a bind and failed the request with a 500.
    static func decode<Bytes: Collection>(_ bytes: Bytes, plusAsSpace: Bool) -> String? where Bytes.Element == UInt8 {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index != bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "%") {
                let high = bytes.index(after: index)
                guard high != bytes.endIndex else { return nil }
                let low = bytes.index(after: high)
                guard low != bytes.endIndex, let h = hexValue(bytes[high]), let l = hexValue(bytes[low]), h | l != 0 else { return nil }
                output.append(h << 4 | l)
                index = bytes.index(after: low)
                continue
            }
            output.append(plusAsSpace && byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
            index = bytes.index(after: index)
        }
        return String(validating: output, as: UTF8.self)
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension StringProtocol {
    /// Drops leading and trailing SP and HTAB (HTTP's optional whitespace).
    func trimmingHTTPWhitespace() -> SubSequence {
        var start = startIndex
        var end = endIndex
        while start < end, self[start] == " " || self[start] == "\t" { start = index(after: start) }
        while end > start {
            let before = index(before: end)
            guard self[before] == " " || self[before] == "\t" else { break }
            end = before
        }
        return self[start..<end]
    }
}
