/// A strict RFC 8259 JSON parser producing a ``CINode`` tree, shaped like CI's XML.
///
/// Mapping:
/// - An object becomes `.element` with its members in document order (duplicate keys are kept as
///   repeated fields, the XML reading of them).
/// - An array under key `K` becomes repeated fields named `K`, so `"K":[{…}]` and `"K":{…}` decode
///   the same, and `"K":[]` is the same as an absent key.
/// - Nested arrays are flattened into the same repeated `K` fields (`"K":[[1,2],[3]]` reads as
///   `"K":[1,2,3]`): CI's XML cannot express arrays of arrays, so there is no shape to preserve.
/// - Strings, numbers (their literal text: `"0"`, `"1.5"`, `"2e3"`) and `true`/`false` become
///   `.text`; `null` makes the field absent.
///
/// Deliberate restrictions:
/// - The escape `\u0000` is refused, because U+0000 can be carried by neither XML nor PostgreSQL
///   text/jsonb, where the normalised document is stored.
/// - A key that occurs twice in one object is refused (`duplicate key "JobId" at byte 27`). RFC 8259 leaves
///   the meaning of such an object undefined and parsers disagree (first wins, last wins, both), so taking
///   either value would be a guess; I-JSON (RFC 7493) forbids them.
/// - Keys are at most ``CIDecodingLimits/maxNameBytes`` long.
struct JSONTreeParser {
    private let buf: UnsafeBufferPointer<UInt8>
    private let limits: CIDecodingLimits
    private var i = 0
    private var valueCount = 0
    private var scratch: [UInt8] = []
    /// Members of every open object, innermost last; a closing object takes its own tail.
    /// One shared array replaces a growing array per object (fewer allocations).
    private var children: [CIField] = []
    /// Keys of every open object, innermost last, for the duplicate-key check (an array value adds several
    /// fields under one key to `children`, so the fields cannot stand in for the keys).
    private var keys: [String] = []

    /// Parses a body whose top-level value must be an object; returns its members.
    static func parseObject(_ body: UnsafeBufferPointer<UInt8>, limits: CIDecodingLimits) throws(CallbackDecodingError) -> [CIField] {
        try UTF8Scan.validate(body, xmlCharsOnly: false)
        var parser = JSONTreeParser(buf: body, limits: limits)
        return try parser.parseDocument()
    }

    private init(buf: UnsafeBufferPointer<UInt8>, limits: CIDecodingLimits) {
        self.buf = buf
        self.limits = limits
    }

    private mutating func parseDocument() throws(CallbackDecodingError) -> [CIField] {
        if UTF8Scan.hasBOM(buf) { i = 3 }
        skipWhitespace()
        guard i < buf.count else { throw .json("empty JSON body") }
        guard buf[i] == Ascii.lbrace else { throw .json("top-level JSON value is not an object at byte \(i)") }
        valueCount = 1
        let fields = try parseObject(depth: 1)

        skipWhitespace()
        guard i == buf.count else { throw .json("unexpected data after the JSON value at byte \(i)") }
        return fields
    }

    /// Parses `{…}` at `i`; `depth` is this object's own nesting level.
    private mutating func parseObject(depth: Int) throws(CallbackDecodingError) -> [CIField] {
        guard depth <= limits.maxDepth else { throw .limit("nesting depth exceeds \(limits.maxDepth) at byte \(i)") }
        i += 1
        let firstChild = children.count
        let firstKey = keys.count
        // Objects with many keys switch from a scan of `keys` to a set, so a hostile object stays linear.
        var keySet: Set<String>? = nil
        skipWhitespace()
        if i < buf.count, buf[i] == Ascii.rbrace {
            i += 1
            return []
        }
        while true {
            guard i < buf.count else { throw unexpectedEnd() }
            guard buf[i] == Ascii.quote else { throw .json("expected a string key at byte \(i)") }
            let keyStart = i
            let key = try parseString()
            guard key.utf8.count <= limits.maxNameBytes else { throw .nameTooLong(limit: limits.maxNameBytes, at: keyStart) }
            let repeated: Bool
            if keySet != nil {
                repeated = !keySet!.insert(key).inserted
            } else {
                repeated = keys[firstKey...].contains(key)
                keys.append(key)
                if keys.count - firstKey > 16 { keySet = Set(keys[firstKey...]) }
            }
            if repeated { throw .json("duplicate key \"\(Self.excerpt(key))\" at byte \(keyStart)") }
            skipWhitespace()
            guard i < buf.count, buf[i] == Ascii.colon else { throw i < buf.count ? .json("expected ':' at byte \(i)") : unexpectedEnd() }
            i += 1
            skipWhitespace()
            try parseValue(named: key, depth: depth)
            skipWhitespace()
            guard i < buf.count else { throw unexpectedEnd() }
            let c = buf[i]
            if c == Ascii.rbrace {
                i += 1
                let fields = Array(children[firstChild...])
                children.removeSubrange(firstChild...)
                keys.removeSubrange(firstKey...)
                return fields
            }
            guard c == Ascii.comma else { throw .json("expected ',' or '}' at byte \(i)") }
            let comma = i
            i += 1
            skipWhitespace()
            if i < buf.count, buf[i] == Ascii.rbrace { throw .json("trailing comma at byte \(comma)") }
        }
    }

    /// Parses one value at `i` and appends what it stands for to `children` as field(s) named
    /// `name`. `depth` is the nesting level of the container holding the value.
    private mutating func parseValue(named name: String, depth: Int) throws(CallbackDecodingError) {
        guard i < buf.count else { throw unexpectedEnd() }
        valueCount += 1
        guard valueCount <= limits.maxElements else {
            throw .limit("more than \(limits.maxElements) elements at byte \(i)")
        }
        switch buf[i] {
        case Ascii.lbrace:
            let object = try parseObject(depth: depth + 1)
            children.append(CIField(name: name, value: .element(object)))
        case Ascii.lbracket:
            try parseArray(named: name, depth: depth + 1)
        case Ascii.quote:
            let text = try parseString()
            children.append(CIField(name: name, value: .text(text)))
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            children.append(CIField(name: name, value: .text("true")))
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            children.append(CIField(name: name, value: .text("false")))
        case UInt8(ascii: "n"):
            try expectLiteral("null")
        case Ascii.dash, Ascii.zero...Ascii.nine:
            let number = try parseNumber()
            children.append(CIField(name: name, value: .text(number)))
        default:
            throw .json("unexpected character at byte \(i)")
        }
    }

    private mutating func parseArray(named name: String, depth: Int) throws(CallbackDecodingError) {
        guard depth <= limits.maxDepth else { throw .limit("nesting depth exceeds \(limits.maxDepth) at byte \(i)") }
        i += 1
        skipWhitespace()
        if i < buf.count, buf[i] == Ascii.rbracket {
            i += 1
            return
        }
        while true {
            try parseValue(named: name, depth: depth)
            skipWhitespace()
            guard i < buf.count else { throw unexpectedEnd() }
            let c = buf[i]
            if c == Ascii.rbracket {
                i += 1
                return
            }
            guard c == Ascii.comma else { throw .json("expected ',' or ']' at byte \(i)") }
            let comma = i
            i += 1
            skipWhitespace()
            if i < buf.count, buf[i] == Ascii.rbracket { throw .json("trailing comma at byte \(comma)") }
        }
    }

    // MARK: Scalars

    private mutating func parseString() throws(CallbackDecodingError) -> String {
        let open = i
        i += 1
        let start = i
        // Fast path: no escapes, so the string is a slice of the (already validated) body.
        while i < buf.count {
            let c = buf[i]
            if c == Ascii.quote {
                i += 1
                return UTF8Scan.string(buf, start..<(i - 1))
            }
            if c == Ascii.backslash { break }
            if c < 0x20 { throw .json("control character in string at byte \(i)") }
            i += 1
        }
        guard i < buf.count else { throw .json("unterminated string at byte \(open)") }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: buf[start..<i]))
        while i < buf.count {
            let c = buf[i]
            if c == Ascii.quote {
                i += 1
                return String(decoding: scratch, as: UTF8.self)
            }
            if c < 0x20 { throw .json("control character in string at byte \(i)") }
            if c != Ascii.backslash {
                let runStart = i
                while i < buf.count, buf[i] != Ascii.quote, buf[i] != Ascii.backslash, buf[i] >= 0x20 { i += 1 }
                scratch.append(contentsOf: UnsafeBufferPointer(rebasing: buf[runStart..<i]))
                continue
            }
            let escape = i
            guard i + 1 < buf.count else { break }
            switch buf[i + 1] {
            case Ascii.quote: scratch.append(Ascii.quote)
            case Ascii.backslash: scratch.append(Ascii.backslash)
            case Ascii.slash: scratch.append(Ascii.slash)
            case UInt8(ascii: "b"): scratch.append(0x08)
            case UInt8(ascii: "f"): scratch.append(0x0C)
            case UInt8(ascii: "n"): scratch.append(Ascii.lf)
            case UInt8(ascii: "r"): scratch.append(Ascii.cr)
            case UInt8(ascii: "t"): scratch.append(Ascii.tab)
            case UInt8(ascii: "u"):
                i += 2
                let unit = try parseHex4(escapeAt: escape)
                var scalar = unit
                switch unit {
                case 0:
                    throw .json("\\u0000 is not accepted at byte \(escape)")
                case 0xD800...0xDBFF:
                    guard i + 1 < buf.count, buf[i] == Ascii.backslash, buf[i + 1] == UInt8(ascii: "u") else {
                        throw .json("lone surrogate \\u\(UTF8Scan.hex4(unit)) at byte \(escape)")
                    }
                    let lowEscape = i
                    i += 2
                    let low = try parseHex4(escapeAt: lowEscape)
                    guard (0xDC00...0xDFFF).contains(low) else {
                        throw .json("lone surrogate \\u\(UTF8Scan.hex4(unit)) at byte \(escape)")
                    }
                    scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                case 0xDC00...0xDFFF:
                    throw .json("lone surrogate \\u\(UTF8Scan.hex4(unit)) at byte \(escape)")
                default:
                    break
                }
                UTF8Scan.appendScalar(scalar, to: &scratch)
                continue
            default:
                throw .json("invalid escape at byte \(escape)")
            }
            i += 2
        }
        throw .json("unterminated string at byte \(open)")
    }

    /// Reads four hex digits at `i` (just after `\u`).
    private mutating func parseHex4(escapeAt escape: Int) throws(CallbackDecodingError) -> UInt32 {
        guard i + 4 <= buf.count else { throw .json("invalid \\u escape at byte \(escape)") }
        var value: UInt32 = 0
        for k in 0..<4 {
            guard let digit = UTF8Scan.hexValue(buf[i + k]) else { throw .json("invalid \\u escape at byte \(escape)") }
            value = value << 4 | digit
        }
        i += 4
        return value
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, kept as its literal text.
    private mutating func parseNumber() throws(CallbackDecodingError) -> String {
        let start = i
        if buf[i] == Ascii.dash { i += 1 }
        guard i < buf.count, isDigit(buf[i]) else { throw .json("malformed number at byte \(start)") }
        if buf[i] == Ascii.zero {
            i += 1
        } else {
            while i < buf.count, isDigit(buf[i]) { i += 1 }
        }
        if i < buf.count, buf[i] == Ascii.dot {
            i += 1
            guard i < buf.count, isDigit(buf[i]) else { throw .json("malformed number at byte \(start)") }
            while i < buf.count, isDigit(buf[i]) { i += 1 }
        }
        if i < buf.count, buf[i] | 0x20 == UInt8(ascii: "e") {
            i += 1
            if i < buf.count, buf[i] == Ascii.plus || buf[i] == Ascii.dash { i += 1 }
            guard i < buf.count, isDigit(buf[i]) else { throw .json("malformed number at byte \(start)") }
            while i < buf.count, isDigit(buf[i]) { i += 1 }
        }
        if i < buf.count, isDigit(buf[i]) { throw .json("malformed number at byte \(start)") }
        return UTF8Scan.string(buf, start..<i)
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(CallbackDecodingError) {
        let count = literal.utf8CodeUnitCount
        let p = literal.utf8Start
        guard i + count <= buf.count else { throw .json("unexpected character at byte \(i)") }
        for k in 0..<count where buf[i + k] != p[k] {
            throw .json("unexpected character at byte \(i)")
        }
        i += count
    }

    // MARK: Helpers

    @inline(__always)
    private func isDigit(_ c: UInt8) -> Bool { c >= Ascii.zero && c <= Ascii.nine }

    private mutating func skipWhitespace() {
        while i < buf.count {
            let c = buf[i]
            guard c == Ascii.space || c == Ascii.lf || c == Ascii.cr || c == Ascii.tab else { return }
            i += 1
        }
    }

    /// A key for an error message: at most 40 bytes, so a reason never carries a large slice of the body.
    private static func excerpt(_ key: String) -> String {
        var key = key
        return key.withUTF8 { bytes in CallbackDecodingError.excerpt(bytes, 0..<bytes.count) }
    }

    private func unexpectedEnd() -> CallbackDecodingError {
        .json("unexpected end of input at byte \(buf.count)")
    }
}
