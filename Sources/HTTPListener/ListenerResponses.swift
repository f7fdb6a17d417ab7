import HTTPWire
#if canImport(Glibc)
import Glibc
#endif

/// Responses the listener makes itself (parse errors, timeouts, connection cap).
enum ListenerResponse {
    /// A JSON error response in the service's error shape,
    /// `{"Error":{"Code":"…","Message":"…","RequestId":"…"}}`, with a fresh random request id that is
    /// also sent as `X-Request-Id`, as on every application response.
    static func error(_ status: HTTPStatus, reason: String, code: String? = nil) -> HTTPResponse {
        let requestID = randomRequestID()
        var body: [UInt8] = []
        body.reserveCapacity(96 + reason.utf8.count)
        body.append(contentsOf: #"{"Error":{"Code":""#.utf8)
        appendJSONEscaped(code ?? errorCode(for: status), to: &body)
        body.append(contentsOf: #"","Message":""#.utf8)
        appendJSONEscaped(reason, to: &body)
        body.append(contentsOf: #"","RequestId":""#.utf8)
        body.append(contentsOf: requestID.utf8)
        body.append(contentsOf: #""}}"#.utf8)
        return HTTPResponse(status: status, headers: ["Content-Type": "application/json", "X-Request-Id": requestID], body: body)
    }

    static func errorCode(for status: HTTPStatus) -> String {
        switch status.code {
        case 400: "BadRequest"
        case 408: "RequestTimeout"
        case 413: "PayloadTooLarge"
        case 414: "URITooLong"
        case 417: "ExpectationFailed"
        case 431: "HeaderFieldsTooLarge"
        case 501: "NotImplemented"
        case 503: "ServiceUnavailable"
        case 505: "HTTPVersionNotSupported"
        default: "InternalError"
        }
    }

    /// 16 lowercase hex digits from the system CSPRNG.
    static func randomRequestID() -> String {
        let value = UInt64.random(in: .min ... .max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    private static func appendJSONEscaped(_ text: String, to buffer: inout [UInt8]) {
        let hexDigits = Array("0123456789abcdef".utf8)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): buffer.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): buffer.append(contentsOf: #"\\"#.utf8)
            case 0x00..<0x20:
                buffer.append(contentsOf: #"\u00"#.utf8)
                buffer.append(hexDigits[Int(byte >> 4)])
                buffer.append(hexDigits[Int(byte & 0x0F)])
            default: buffer.append(byte)
            }
        }
    }
}

/// The `Date` field value, formatted once per second (RFC 9110 §5.6.7 IMF-fixdate).
struct HTTPDateCache {
    private var second = -1
    private var text = ""

    mutating func current() -> String {
        let now = time(nil)
        if now != second {
            second = now
            text = Self.format(now)
        }
        return text
    }

    static func format(_ seconds: Int) -> String {
        var clock = time_t(seconds)
        var parts = tm()
        gmtime_r(&clock, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
