/// Why a body could not be decoded.
///
/// `reason` is precise but redacted: it names byte offsets (0-based, from the first byte of the
/// body, BOM included), element names (truncated) and JobsDetail indexes, never field values,
/// so it is safe to log and to return to a client.
public struct CallbackDecodingError: Error, Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// A broad class of failure, stable enough to branch on (for example to choose an HTTP status).
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case notXMLOrJSON, invalidUTF8, malformedXML, malformedJSON, forbiddenDTD, limitExceeded, missingField, fieldTooLong
            case duplicateField, notACallback
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The body is empty, whitespace only, or starts with neither `<` nor `{`.
        public static let notXMLOrJSON = Code(.notXMLOrJSON)
        /// The body is not valid UTF-8.
        public static let invalidUTF8 = Code(.invalidUTF8)
        /// The body is not well-formed XML (or uses XML this decoder refuses, such as mixed content).
        public static let malformedXML = Code(.malformedXML)
        /// The body is not RFC 8259 JSON (or is not an object at the top level).
        public static let malformedJSON = Code(.malformedJSON)
        /// The body carries a DOCTYPE with an internal subset; DTDs are never processed.
        public static let forbiddenDTD = Code(.forbiddenDTD)
        /// A ``CIDecodingLimits`` bound was exceeded.
        public static let limitExceeded = Code(.limitExceeded)
        /// A JobsDetail lacks its JobId or State.
        public static let missingField = Code(.missingField)
        /// An identifier is longer than its ``CIFieldLimits`` limit.
        public static let fieldTooLong = Code(.fieldTooLong)
        /// A field read as one value (`JobId`, `State`, `Input.Object`, …) occurs more than once (repeated
        /// XML element, or a JSON array), so which value counts would be a guess.
        public static let duplicateField = Code(.duplicateField)
        /// A well-formed document that is no CI callback: neither a JobsDetail nor a WorkflowExecution.
        public static let notACallback = Code(.notACallback)

        /// The code's name, such as `malformedXML`.
        public var description: String { base.rawValue }
    }

    /// The failure class.
    public var code: Code
    /// A human-readable explanation, for example `expected </Code> at byte 312, found </Tag>`.
    public var reason: String

    /// Creates an error.
    public init(code: Code, reason: String) {
        self.code = code
        self.reason = reason
    }

    /// `CallbackDecodingError(<code>): <reason>`; holds no field values, so it is safe to log.
    public var description: String { "CallbackDecodingError(\(code)): \(reason)" }
    /// The same as ``description``: the error keeps no body content to reveal.
    public var debugDescription: String { description }
}

extension CallbackDecodingError {
    static func xml(_ reason: String) -> Self { .init(code: .malformedXML, reason: reason) }
    static func json(_ reason: String) -> Self { .init(code: .malformedJSON, reason: reason) }
    static func limit(_ reason: String) -> Self { .init(code: .limitExceeded, reason: reason) }

    /// A name (element, attribute, key) over ``CIDecodingLimits/maxNameBytes``; `offset` is where it starts.
    static func nameTooLong(limit: Int, at offset: Int) -> Self { .limit("a name longer than \(limit) bytes at byte \(offset)") }

    /// Renders body bytes (an element name, an entity name) for an error message: at most 40
    /// bytes, cut on a character boundary, so a reason never carries a large slice of the body.
    static func excerpt(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
        let limit = 40
        guard range.count > limit else {
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }
        var end = range.lowerBound + limit
        while end > range.lowerBound, bytes[end] & 0xC0 == 0x80 { end -= 1 }
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[range.lowerBound..<end]), as: UTF8.self) + "…"
    }
}
