/// A fragment of HTML that is safe to send, escaped by construction.
///
/// Markup can come only from string literals written in this code (the literal type is `StaticString`,
/// so no runtime text can pass as one); every interpolated `String` is escaped for text and quoted
/// attribute values alike. There is deliberately no interpolation for arbitrary values and no initialiser
/// from a runtime `String`: callback bodies are attacker-controlled, and the only way to put their text
/// on a page is escaped. Other fragments are interpolated as they are, since they were built the same way.
public struct HTML: Sendable, Hashable, ExpressibleByStringInterpolation {
    public typealias StringLiteralType = StaticString

    /// The markup.
    public private(set) var text: String

    public init(stringLiteral literal: StaticString) {
        text = literal.description
    }

    public init(stringInterpolation: StringInterpolation) {
        text = stringInterpolation.text
    }

    /// No markup at all.
    public static let empty: HTML = ""

    /// The fragments one after another.
    public init(joining fragments: some Sequence<HTML>) {
        text = fragments.map(\.text).joined()
    }

    public struct StringInterpolation: StringInterpolationProtocol, Sendable {
        var text: String

        public init(literalCapacity: Int, interpolationCount: Int) {
            text = ""
            text.reserveCapacity(literalCapacity + interpolationCount * 16)
        }

        public mutating func appendLiteral(_ literal: StaticString) {
            text += literal.description
        }

        /// Text, escaped: safe in element content and in a double- or single-quoted attribute value.
        public mutating func appendInterpolation(_ value: String) {
            text += HTML.escape(value)
        }

        /// Text or nothing.
        public mutating func appendInterpolation(_ value: String?) {
            if let value { text += HTML.escape(value) }
        }

        public mutating func appendInterpolation(_ value: Int) {
            text += String(value)
        }

        public mutating func appendInterpolation(_ value: Int64) {
            text += String(value)
        }

        /// A fragment built by this type: already safe.
        public mutating func appendInterpolation(_ fragment: HTML) {
            text += fragment.text
        }

        public mutating func appendInterpolation(_ fragments: [HTML]) {
            for fragment in fragments { text += fragment.text }
        }
    }

    /// `&`, `<`, `>`, `"` and `'` as character references; U+0000, which browsers replace anyway, as U+FFFD.
    public static func escape(_ value: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(value.utf8.count)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            case "\u{0}": escaped += "\u{FFFD}"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }
}

/// Paths and query strings of console links, percent-encoded so that a JobId cannot leave its segment.
enum ConsoleURL {
    /// Every byte but the RFC 3986 unreserved characters percent-encoded.
    static func encode(_ value: String) -> String {
        var encoded = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                encoded += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return encoded
    }

    static func job(_ jobID: String) -> String { "/console/jobs/" + encode(jobID) }
    static func callback(_ callbackID: Int64) -> String { "/console/callbacks/\(callbackID)" }
    static func rawBody(_ callbackID: Int64) -> String { "/console/callbacks/\(callbackID)/raw" }

    /// `path?name=value&…` with the items that have a value.
    static func with(_ path: String, _ items: [(String, String?)]) -> String {
        let pairs = items.compactMap { name, value in value.map { encode(name) + "=" + encode($0) } }
        return pairs.isEmpty ? path : path + "?" + pairs.joined(separator: "&")
    }
}
