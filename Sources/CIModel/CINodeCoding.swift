/// Compact JSON for a ``CINode``, and the way back from PostgreSQL's jsonb text.
///
/// The lookup API answers with this JSON, and the store keeps it in a jsonb column.
public enum CINodeJSON {
    /// Names always written as arrays, even when they occur once, so that clients see a stable
    /// shape for the fields CI documents as lists: `JobsDetail`, `CosHeaders`, `ObjectName`,
    /// `Tasks`, `WatermarkTemplateId`. Any other name becomes an array only when it repeats.
    public static let defaultArrayNames: Set<String> = ["JobsDetail", "CosHeaders", "ObjectName", "Tasks", "WatermarkTemplateId"]

    /// Encodes `node` as compact JSON.
    ///
    /// An element becomes an object whose keys appear in first-occurrence order; a name that
    /// repeats among siblings (or is in `arrayNames`) becomes one array at its first position;
    /// leaves become strings. The output is deterministic, valid UTF-8, and escapes `"`, `\` and
    /// control characters. A bare `.text` node encodes as a JSON string.
    public static func encode(_ node: CINode, arrayNames: Set<String> = defaultArrayNames) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        // An array of a few short names compares faster than hashing every member name.
        write(node, arrayNames: Array(arrayNames), to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Writes ``encode(_:arrayNames:)``'s JSON as the next value of `writer`, without an intermediate string
    /// (the detail of a large body is as large as the body).
    public static func encode(_ node: CINode, arrayNames: Set<String> = defaultArrayNames, into writer: inout JSONWriter) {
        let names = Array(arrayNames)
        writer.rawValue { out in write(node, arrayNames: names, to: &out) }
    }

    /// Limits that read back whatever ``encode(_:arrayNames:)`` wrote from a body the default
    /// ``CIDecodingLimits`` accepted: each group of repeated names becomes an array, which is one more
    /// level of nesting and one more value than the XML had, so both bounds are doubled.
    public static let storedDocumentLimits: CIDecodingLimits = {
        let body = CIDecodingLimits()
        return CIDecodingLimits(maxDepth: 2 * body.maxDepth, maxElements: 2 * body.maxElements)
    }()

    /// Decodes JSON text whose top level is an object (for example jsonb's rendering of
    /// ``encode(_:arrayNames:)``'s output, with reordered keys and added spaces), with the same
    /// mapping as callback bodies: arrays become repeated fields, `null` an absent one.
    /// The default limits are ``storedDocumentLimits``: what the store wrote must read back.
    public static func decode(_ bytes: [UInt8], limits: CIDecodingLimits = storedDocumentLimits) throws(CallbackDecodingError) -> CINode {
        try bytes.withUnsafeBufferPointer { buffer throws(CallbackDecodingError) -> CINode in
            .element(try JSONTreeParser.parseObject(buffer, limits: limits))
        }
    }

    private static func write(_ node: CINode, arrayNames: [String], to out: inout [UInt8]) {
        switch node {
        case .text(let text):
            writeString(text, to: &out)
        case .element(let fields):
            out.append(Ascii.lbrace)
            if fields.count <= 32 {
                writeSmallObject(fields, arrayNames: arrayNames, to: &out)
            } else {
                writeLargeObject(fields, arrayNames: arrayNames, to: &out)
            }
            out.append(Ascii.rbrace)
        }
    }

    /// Groups by a linear scan: no allocation, and cheaper than hashing for the handful of
    /// members real CI objects have.
    private static func writeSmallObject(_ fields: [CIField], arrayNames: [String], to out: inout [UInt8]) {
        var first = true
        outer: for (index, field) in fields.enumerated() {
            for earlier in 0..<index where fields[earlier].name == field.name { continue outer }
            var repeats = false
            for later in (index + 1)..<fields.count where fields[later].name == field.name {
                repeats = true
                break
            }
            if !first { out.append(Ascii.comma) }
            first = false
            writeString(field.name, to: &out)
            out.append(Ascii.colon)
            if !repeats, !arrayNames.contains(field.name) {
                write(field.value, arrayNames: arrayNames, to: &out)
                continue
            }
            out.append(Ascii.lbracket)
            write(field.value, arrayNames: arrayNames, to: &out)
            for later in (index + 1)..<fields.count where fields[later].name == field.name {
                out.append(Ascii.comma)
                write(fields[later].value, arrayNames: arrayNames, to: &out)
            }
            out.append(Ascii.rbracket)
        }
    }

    private static func writeLargeObject(_ fields: [CIField], arrayNames: [String], to out: inout [UInt8]) {
        var groups: [[Int]] = []
        var position: [String: Int] = [:]
        for (index, field) in fields.enumerated() {
            if let g = position[field.name] {
                groups[g].append(index)
            } else {
                position[field.name] = groups.count
                groups.append([index])
            }
        }
        for (g, group) in groups.enumerated() {
            if g > 0 { out.append(Ascii.comma) }
            let name = fields[group[0]].name
            writeString(name, to: &out)
            out.append(Ascii.colon)
            if group.count == 1, !arrayNames.contains(name) {
                write(fields[group[0]].value, arrayNames: arrayNames, to: &out)
                continue
            }
            out.append(Ascii.lbracket)
            for (k, index) in group.enumerated() {
                if k > 0 { out.append(Ascii.comma) }
                write(fields[index].value, arrayNames: arrayNames, to: &out)
            }
            out.append(Ascii.rbracket)
        }
    }

    private static func writeString(_ text: String, to out: inout [UInt8]) {
        out.append(Ascii.quote)
        var text = text
        text.withUTF8 { bytes in
            var runStart = 0
            for (i, c) in bytes.enumerated() where c < 0x20 || c == Ascii.quote || c == Ascii.backslash {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i]))
                runStart = i + 1
                out.append(Ascii.backslash)
                switch c {
                case Ascii.quote: out.append(Ascii.quote)
                case Ascii.backslash: out.append(Ascii.backslash)
                case Ascii.lf: out.append(UInt8(ascii: "n"))
                case Ascii.cr: out.append(UInt8(ascii: "r"))
                case Ascii.tab: out.append(UInt8(ascii: "t"))
                case 0x08: out.append(UInt8(ascii: "b"))
                case 0x0C: out.append(UInt8(ascii: "f"))
                default:
                    out.append(contentsOf: [UInt8(ascii: "u"), Ascii.zero, Ascii.zero, hexDigit(c >> 4), hexDigit(c & 0xF)])
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
        }
        out.append(Ascii.quote)
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? Ascii.zero + nibble : UInt8(ascii: "a") + nibble - 10
    }
}

/// One-line XML for a ``CINode``, and a public entry to the strict XML parser.
public enum CINodeXML {
    /// Encodes `node` as `<rootName>…</rootName>` on one line, children in order (repeated
    /// fields become repeated elements), with no declaration.
    ///
    /// Text escapes `&`, `<`, `>`, `"` and `'`, and CR as `&#13;` so that it survives a parser's
    /// line-end normalisation. Characters XML 1.0 cannot carry (C0 controls other than tab/LF/CR,
    /// U+FFFE, U+FFFF; reachable only from JSON escapes) become U+FFFD. Names that are not XML
    /// names (possible from JSON keys) have each offending character replaced by `_`, and get a
    /// leading `_` when they would start with a digit, `-` or `.`; `:` is replaced too, so no
    /// namespace prefix is implied. Empty leaves and elements are written `<X/>`.
    public static func encode(_ node: CINode, rootName: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        write(name: rootName, node, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses an XML document with the callback parser (same strictness and ``CIDecodingLimits``);
    /// returns the root element's name and value. Useful for CI API and error bodies
    /// (`<Error><Code>…</Code></Error>`).
    public static func decode(_ bytes: [UInt8], limits: CIDecodingLimits = .init()) throws(CallbackDecodingError) -> CIField {
        try bytes.withUnsafeBufferPointer { buffer throws(CallbackDecodingError) -> CIField in
            try XMLTreeParser.parse(buffer, limits: limits)
        }
    }

    private static func write(name: String, _ node: CINode, to out: inout [UInt8]) {
        out.append(Ascii.lt)
        writeName(name, to: &out)
        switch node {
        case .text(let text) where text.isEmpty:
            out.append(Ascii.slash)
            out.append(Ascii.gt)
        case .element(let fields) where fields.isEmpty:
            out.append(Ascii.slash)
            out.append(Ascii.gt)
        case .text(let text):
            out.append(Ascii.gt)
            writeText(text, to: &out)
            closeTag(name, to: &out)
        case .element(let fields):
            out.append(Ascii.gt)
            for field in fields { write(name: field.name, field.value, to: &out) }
            closeTag(name, to: &out)
        }
    }

    private static func closeTag(_ name: String, to out: inout [UInt8]) {
        out.append(Ascii.lt)
        out.append(Ascii.slash)
        writeName(name, to: &out)
        out.append(Ascii.gt)
    }

    private static func writeName(_ name: String, to out: inout [UInt8]) {
        var name = name
        name.withUTF8 { bytes in
            guard let first = bytes.first else {
                out.append(Ascii.underscore)
                return
            }
            if !XMLTreeParser.isNameStart(first) || first == Ascii.colon { out.append(Ascii.underscore) }
            for c in bytes {
                out.append(XMLTreeParser.isNameChar(c) && c != Ascii.colon ? c : Ascii.underscore)
            }
        }
    }

    private static func writeText(_ text: String, to out: inout [UInt8]) {
        var text = text
        text.withUTF8 { bytes in
            var runStart = 0
            var i = 0
            while i < bytes.count {
                let c = bytes[i]
                let replacement: StaticString?
                var width = 1
                switch c {
                case Ascii.amp: replacement = "&amp;"
                case Ascii.lt: replacement = "&lt;"
                case Ascii.gt: replacement = "&gt;"
                case Ascii.quote: replacement = "&quot;"
                case Ascii.apostrophe: replacement = "&apos;"
                case Ascii.cr: replacement = "&#13;"
                case Ascii.tab, Ascii.lf: replacement = nil
                case 0..<0x20: replacement = "\u{FFFD}"
                case 0xEF where i + 2 < bytes.count && bytes[i + 1] == 0xBF && bytes[i + 2] >= 0xBE:
                    replacement = "\u{FFFD}"
                    width = 3
                default: replacement = nil
                }
                if let replacement {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i]))
                    out.append(contentsOf: UnsafeBufferPointer(start: replacement.utf8Start, count: replacement.utf8CodeUnitCount))
                    i += width
                    runStart = i
                } else {
                    i += 1
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
        }
    }
}
