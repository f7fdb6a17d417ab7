/// A value bound to a `$n` parameter.
///
/// Values travel in PostgreSQL's text format with an unspecified type (OID 0), so the server infers the
/// type from context (`WHERE id = $1`, `$1::int8`) exactly as it would for a quoted literal; `bytea` goes
/// in binary format, so bytes such as 0x00 need no escaping.
public enum PostgresValue: Sendable, Hashable {
    /// SQL `NULL`.
    case null
    /// A value in PostgreSQL's text format (any type whose input function accepts it).
    case text(String)
    /// Raw bytes for a `bytea` parameter.
    case bytea([UInt8])
    /// A one-dimensional `text[]`; sent as a correctly quoted array literal typed `text[]`.
    case textArray([String])
    /// A one-dimensional `bytea[]`, in binary format: many byte strings in one parameter, no escaping.
    case byteaArray([[UInt8]])

    /// A one-dimensional integer array as the text `{1,2,NULL}` (nil is `NULL`), for a parameter the SQL casts
    /// (`$1::bigint[]`, `$1::integer[]`): integers need no quoting, and `array_in` parses them straight to
    /// their type.
    public static func integerArray(_ values: some Sequence<Int64?>) -> PostgresValue {
        // Digits written into one buffer: a String per element, joined, was a visible share of recording a
        // walk's attempts, whose microsecond times have 16 digits, past Swift's small-string size.
        var bytes: [UInt8] = [UInt8(ascii: "{")]
        bytes.reserveCapacity(values.underestimatedCount * 12 + 2)
        var first = true
        for value in values {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            if let value {
                appendDecimal(value, to: &bytes)
            } else {
                bytes.append(contentsOf: "NULL".utf8)
            }
        }
        bytes.append(UInt8(ascii: "}"))
        return .text(String(decoding: bytes, as: UTF8.self))
    }

    private static func appendDecimal(_ value: Int64, to bytes: inout [UInt8]) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        let start = bytes.count
        var magnitude = value.magnitude
        repeat {
            bytes.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
            magnitude /= 10
        } while magnitude > 0
        bytes[start...].reverse()
    }

    /// The same, for values that are never `NULL`.
    public static func integerArray(_ values: some Sequence<Int64>) -> PostgresValue {
        integerArray(values.lazy.map(Optional.some))
    }

    /// `pg_type` OIDs this layer sends: unspecified lets the server infer the type from context.
    static let unspecifiedOID: UInt32 = 0
    static let byteaOID: UInt32 = 17
    static let textArrayOID: UInt32 = 1009
    static let byteaArrayOID: UInt32 = 1001

    /// The parameter type given to `PQprepare`; part of the prepared-statement cache key.
    var typeOID: UInt32 {
        switch self {
        case .null, .text: return Self.unspecifiedOID
        case .bytea: return Self.byteaOID
        case .textArray: return Self.textArrayOID
        case .byteaArray: return Self.byteaArrayOID
        }
    }

    /// About the bytes ``EncodedParameters`` stores for this value (a text array's quoting may add some).
    var encodedSizeEstimate: Int {
        switch self {
        case .null: return 0
        case .text(let text): return text.utf8.count + 1
        case .bytea(let bytes): return bytes.count
        case .textArray(let elements): return elements.reduce(3) { $0 + $1.utf8.count + 3 }
        case .byteaArray(let elements): return elements.reduce(20) { $0 + 4 + $1.count }
        }
    }

    /// PostgreSQL's binary array format (`array_recv`): dimensions, flags and element type, then each
    /// element as a big-endian length and its bytes. Nil when an element or the whole exceeds the
    /// protocol's 2 GiB.
    static func binaryByteaArray(_ elements: [[UInt8]]) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(20 + elements.reduce(0) { $0 + 4 + $1.count })
        func int32(_ value: Int) -> Bool {
            guard let value = Int32(exactly: value) else { return false }
            withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
            return true
        }
        // ndim 1 (0 for an empty array), no NULLs, element type bytea, then length and lower bound 1.
        guard int32(elements.isEmpty ? 0 : 1), int32(0), int32(Int(byteaOID)) else { return nil }
        if !elements.isEmpty {
            guard int32(elements.count), int32(1) else { return nil }
        }
        for element in elements {
            guard int32(element.count) else { return nil }
            bytes.append(contentsOf: element)
        }
        return Int32(exactly: bytes.count) == nil ? nil : bytes
    }

    /// `{"a","b\"c"}`: every element quoted, so commas, braces, spaces, an empty string and the word NULL all
    /// stay plain data; inside quotes only `"` and `\` need a backslash.
    static func arrayLiteral(_ elements: [String]) -> String {
        // Built as UTF-8 bytes: `"` and `\` are ASCII, so no multi-byte sequence can contain them.
        var literal: [UInt8] = [UInt8(ascii: "{")]
        literal.reserveCapacity(elements.reduce(2) { $0 + $1.utf8.count + 3 })
        for (index, element) in elements.enumerated() {
            if index > 0 { literal.append(UInt8(ascii: ",")) }
            literal.append(UInt8(ascii: "\""))
            for byte in element.utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { literal.append(UInt8(ascii: "\\")) }
                literal.append(byte)
            }
            literal.append(UInt8(ascii: "\""))
        }
        literal.append(UInt8(ascii: "}"))
        return String(decoding: literal, as: UTF8.self)
    }
}

/// A SQL statement with its parameters, built by string interpolation: every interpolated value becomes a
/// `$n` placeholder plus a bind, never SQL text (the postgres-nio `PostgresQuery` design).
///
/// ```swift
/// let query: SQLQuery = "SELECT body FROM callbacks WHERE job_id = \(jobID) LIMIT \(limit)"
/// // query.sql == "SELECT body FROM callbacks WHERE job_id = $1 LIMIT $2"
/// ```
///
/// Trusted fragments (identifiers chosen by the program, never by input) go in with `\(unsafeRaw:)`.
public struct SQLQuery: Sendable, Hashable, ExpressibleByStringInterpolation {
    /// The SQL text, with `$1`, `$2`, … where values were interpolated.
    public var sql: String
    /// The values for `$1`, `$2`, … in order.
    public var binds: [PostgresValue]

    /// A query from SQL text used as is; the caller vouches that `unsafeSQL` holds no untrusted input.
    public init(unsafeSQL: String, binds: [PostgresValue] = []) {
        self.sql = unsafeSQL
        self.binds = binds
    }

    public init(stringLiteral value: String) {
        self.init(unsafeSQL: value)
    }

    public init(stringInterpolation: StringInterpolation) {
        self.init(unsafeSQL: stringInterpolation.sql, binds: stringInterpolation.binds)
    }

    /// Collects literal SQL and turns each interpolated value into the next `$n`.
    public struct StringInterpolation: StringInterpolationProtocol, Sendable {
        public typealias StringLiteralType = String

        var sql: String
        var binds: [PostgresValue]

        public init(literalCapacity: Int, interpolationCount: Int) {
            self.sql = ""
            self.sql.reserveCapacity(literalCapacity + interpolationCount * 3)
            self.binds = []
            self.binds.reserveCapacity(interpolationCount)
        }

        public mutating func appendLiteral(_ literal: String) {
            self.sql += literal
        }

        /// Binds any ``PostgresValue`` as the next parameter.
        public mutating func appendInterpolation(_ value: PostgresValue) {
            self.binds.append(value)
            self.sql += "$\(self.binds.count)"
        }

        public mutating func appendInterpolation(_ value: String) {
            self.appendInterpolation(PostgresValue.text(value))
        }

        public mutating func appendInterpolation(_ value: String?) {
            self.appendInterpolation(value.map(PostgresValue.text) ?? .null)
        }

        public mutating func appendInterpolation(_ value: Int) {
            self.appendInterpolation(PostgresValue.text(String(value)))
        }

        public mutating func appendInterpolation(_ value: Int?) {
            self.appendInterpolation(value.map { PostgresValue.text(String($0)) } ?? .null)
        }

        public mutating func appendInterpolation(_ value: Int32) {
            self.appendInterpolation(PostgresValue.text(String(value)))
        }

        public mutating func appendInterpolation(_ value: Int32?) {
            self.appendInterpolation(value.map { PostgresValue.text(String($0)) } ?? .null)
        }

        public mutating func appendInterpolation(_ value: Int64) {
            self.appendInterpolation(PostgresValue.text(String(value)))
        }

        public mutating func appendInterpolation(_ value: Int64?) {
            self.appendInterpolation(value.map { PostgresValue.text(String($0)) } ?? .null)
        }

        /// Binds `t` / `f`, the text form PostgreSQL's `bool` input and output use.
        public mutating func appendInterpolation(_ value: Bool) {
            self.appendInterpolation(PostgresValue.text(value ? "t" : "f"))
        }

        public mutating func appendInterpolation(_ value: Bool?) {
            self.appendInterpolation(value.map { PostgresValue.text($0 ? "t" : "f") } ?? .null)
        }

        /// Binds the shortest text that reads back as the same `Double`; infinities and NaN use the spelling
        /// `float8in` accepts.
        public mutating func appendInterpolation(_ value: Double) {
            self.appendInterpolation(PostgresValue.text(Self.float8Text(value)))
        }

        public mutating func appendInterpolation(_ value: Double?) {
            self.appendInterpolation(value.map { PostgresValue.text(Self.float8Text($0)) } ?? .null)
        }

        /// Binds bytes as `bytea`.
        public mutating func appendInterpolation(_ value: [UInt8]) {
            self.appendInterpolation(PostgresValue.bytea(value))
        }

        public mutating func appendInterpolation(_ value: [UInt8]?) {
            self.appendInterpolation(value.map(PostgresValue.bytea) ?? .null)
        }

        /// Binds strings as one `text[]` parameter (use `= ANY(\(list))` rather than `IN (…)`).
        public mutating func appendInterpolation(_ value: [String]) {
            self.appendInterpolation(PostgresValue.textArray(value))
        }

        /// Appends trusted SQL text as is: identifiers and keywords chosen by the program, never input.
        public mutating func appendInterpolation(unsafeRaw fragment: String) {
            self.sql += fragment
        }

        private static func float8Text(_ value: Double) -> String {
            if value.isNaN { return "NaN" }
            if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
            return String(value)
        }
    }
}

extension SQLQuery: CustomStringConvertible {
    /// The SQL text and the number of binds; bind values are left out so a logged query leaks no data.
    public var description: String {
        "SQLQuery(\(String(reflecting: self.sql)), binds: \(self.binds.count))"
    }
}
