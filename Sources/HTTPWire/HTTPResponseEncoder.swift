/// Serialises responses to HTTP/1.1 wire bytes.
public enum HTTPResponseEncoder {
    /// The interim response written when the parser returns `.sendContinue`.
    public static let continueResponse: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    /// Appends the status line, header section and body of `response` to `buffer`, ready for one send.
    ///
    /// The encoder owns framing: it drops any `Content-Length`, `Transfer-Encoding`, `Connection` and
    /// `Date` the responder set and writes, after the responder's fields in their order,
    /// `Content-Length` (the body's length; omitted for 1xx, 204 and 304), `Date` and `Connection`.
    /// Fields whose name is not a token are dropped and control characters in values and the reason
    /// phrase become spaces, so a responder can never split a response.
    ///
    /// - Parameters:
    ///   - response: The response to encode.
    ///   - keepAlive: Whether the connection stays open (`Connection: keep-alive`) or closes after this
    ///     response (`Connection: close`).
    ///   - isHead: Whether this answers a HEAD request: the fields are those of the GET response, the body is omitted.
    ///   - date: The IMF-fixdate for the `Date` field, for example `"Sun, 06 Nov 1994 08:49:37 GMT"`;
    ///     callers cache it per second.
    ///   - buffer: The output buffer; bytes are appended.
    public static func encode(_ response: HTTPResponse, keepAlive: Bool, isHead: Bool, date: String, into buffer: inout [UInt8]) {
        let code = response.status.code
        let bodyless = (100..<200).contains(code) || code == 204 || code == 304
        buffer.reserveCapacity(buffer.count + 128 + response.headers.count * 32 + (isHead || bodyless ? 0 : response.body.count))

        buffer.append(contentsOf: "HTTP/1.1 ".utf8)
        appendStatusCode(code, into: &buffer)
        buffer.append(UInt8(ascii: " "))
        appendSanitized(response.status.reasonPhrase, into: &buffer)
        buffer.append(contentsOf: crlf)

        for (name, value) in response.headers {
            guard !name.isEmpty, name.utf8.allSatisfy(\.isTokenCharacter), !isFramingField(name) else { continue }
            buffer.append(contentsOf: name.utf8)
            buffer.append(contentsOf: ": ".utf8)
            appendSanitized(value, into: &buffer)
            buffer.append(contentsOf: crlf)
        }
        if !bodyless {
            buffer.append(contentsOf: "Content-Length: ".utf8)
            buffer.append(contentsOf: String(response.body.count).utf8)
            buffer.append(contentsOf: crlf)
        }
        buffer.append(contentsOf: "Date: ".utf8)
        appendSanitized(date, into: &buffer)
        buffer.append(contentsOf: crlf)
        buffer.append(contentsOf: keepAlive ? "Connection: keep-alive\r\n\r\n".utf8 : "Connection: close\r\n\r\n".utf8)
        if !isHead, !bodyless {
            buffer.append(contentsOf: response.body)
        }
    }

    /// Encodes into a new buffer; see ``encode(_:keepAlive:isHead:date:into:)``.
    public static func encode(_ response: HTTPResponse, keepAlive: Bool, isHead: Bool, date: String) -> [UInt8] {
        var buffer: [UInt8] = []
        encode(response, keepAlive: keepAlive, isHead: isHead, date: date, into: &buffer)
        return buffer
    }

    private static let crlf: [UInt8] = [UInt8(ascii: "\r"), UInt8(ascii: "\n")]

    private static func isFramingField(_ name: String) -> Bool {
        name.equalsASCIICaseInsensitive("Content-Length") || name.equalsASCIICaseInsensitive("Transfer-Encoding")
            || name.equalsASCIICaseInsensitive("Connection") || name.equalsASCIICaseInsensitive("Date")
    }

    private static func appendStatusCode(_ code: Int, into buffer: inout [UInt8]) {
        let clamped = (100...999).contains(code) ? code : 500
        buffer.append(UInt8(ascii: "0") + UInt8(clamped / 100))
        buffer.append(UInt8(ascii: "0") + UInt8(clamped / 10 % 10))
        buffer.append(UInt8(ascii: "0") + UInt8(clamped % 10))
    }

    private static func appendSanitized(_ text: String, into buffer: inout [UInt8]) {
        for byte in text.utf8 {
            buffer.append(byte == 0x09 || byte >= 0x20 && byte != 0x7F ? byte : UInt8(ascii: " "))
        }
    }
}
