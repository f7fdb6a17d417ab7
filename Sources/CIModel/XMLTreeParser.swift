/// A strict, non-validating XML 1.0 parser for CI bodies, producing a ``CINode`` tree.
///
/// What it accepts: an optional UTF-8 BOM, an optional `<?xml …?>` declaration (skipped: the body
/// must be UTF-8 whatever it claims; leading whitespace before it is tolerated), comments, processing instructions, CDATA, empty and
/// self-closing elements, attributes (checked for well-formedness, then ignored), the five
/// predefined entities and numeric character references to valid XML characters.
///
/// What it refuses, on purpose:
/// - Any DTD processing. A DOCTYPE with an internal subset is refused (with "DOCTYPE with entity
///   declarations is not accepted" when the subset declares entities); a plain DOCTYPE such as
///   `<!DOCTYPE Response>` or one naming an external DTD is skipped and never fetched.
/// - Entity references other than the predefined five.
/// - Mixed content (non-whitespace text beside child elements): CI never sends it and the tree
///   cannot hold it, so refusing beats silently dropping text.
///
/// Whitespace-only text between elements is ignored; inside a leaf all text is kept, with line
/// ends normalised to LF as XML requires.
struct XMLTreeParser {
    private let buf: UnsafeBufferPointer<UInt8>
    private let limits: CIDecodingLimits
    private var i = 0
    private var elementCount = 0
    private var stack: [Frame] = []
    /// Children of every open element, innermost last; a closing element takes its own tail.
    /// One shared array replaces a growing array per element (fewer allocations).
    private var children: [CIField] = []
    private var textMode = TextMode.empty
    /// Byte offset of the first non-whitespace character of the pending text, or -1.
    private var textNonWhitespaceAt = -1
    /// Holds the pending text once it is no longer one contiguous slice of the body.
    private var scratch: [UInt8] = []
    private var attributeNames: [Range<Int>] = []

    private struct Frame {
        var name: Range<Int>
        /// Index in `children` of this element's first child.
        var firstChild: Int
    }

    /// Whether the innermost open element already has a child element.
    private var topHasChildren: Bool {
        children.count > stack[stack.count - 1].firstChild
    }

    private enum TextMode {
        case empty
        case slice(Range<Int>)
        case scratch
    }

    /// Parses a whole body into its root element (name and value).
    static func parse(_ body: UnsafeBufferPointer<UInt8>, limits: CIDecodingLimits) throws(CallbackDecodingError) -> CIField {
        try UTF8Scan.validate(body, xmlCharsOnly: true)
        var parser = XMLTreeParser(buf: body, limits: limits)
        return try parser.parseDocument()
    }

    private init(buf: UnsafeBufferPointer<UInt8>, limits: CIDecodingLimits) {
        self.buf = buf
        self.limits = limits
    }

    // MARK: Document structure

    private mutating func parseDocument() throws(CallbackDecodingError) -> CIField {
        if UTF8Scan.hasBOM(buf) { i = 3 }
        // XML forbids whitespace before the declaration; a receiver gains nothing by refusing it.
        skipWhitespace()
        if starts(with: "<?xml"), i + 5 < buf.count, Self.isWhitespace(buf[i + 5]) || buf[i + 5] == Ascii.question {
            try skipProcessingInstruction(allowXMLDeclaration: true)
        }
        var sawDoctype = false
        while true {
            skipWhitespace()
            guard i < buf.count else { throw .xml("no root element") }
            guard buf[i] == Ascii.lt else { throw .xml("text outside the root element at byte \(i)") }
            if starts(with: "<!--") {
                try skipComment()
            } else if starts(with: "<?") {
                try skipProcessingInstruction(allowXMLDeclaration: false)
            } else if starts(with: "<!DOCTYPE") {
                guard !sawDoctype else { throw .xml("second DOCTYPE at byte \(i)") }
                try skipDoctype()
                sawDoctype = true
            } else if i + 1 < buf.count, Self.isNameStart(buf[i + 1]) {
                break
            } else {
                throw .xml("expected the root element at byte \(i)")
            }
        }
        let root = try parseRootElement()
        while true {
            skipWhitespace()
            guard i < buf.count else { break }
            if starts(with: "<!--") {
                try skipComment()
            } else if starts(with: "<?") {
                try skipProcessingInstruction(allowXMLDeclaration: false)
            } else {
                throw .xml("garbage after root element at byte \(i)")
            }
        }
        return root
    }

    /// Parses the root element and everything inside it, iteratively so that depth costs heap,
    /// not stack.
    private mutating func parseRootElement() throws(CallbackDecodingError) -> CIField {
        var root: CIField?
        try openElement(root: &root)
        while let top = stack.last {
            guard i < buf.count else {
                throw .xml("expected </\(nameText(top.name))> at byte \(buf.count), found end of input")
            }
            let c = buf[i]
            if c == Ascii.lt {
                guard i + 1 < buf.count else {
                    throw .xml("expected </\(nameText(top.name))> at byte \(buf.count), found end of input")
                }
                let next = buf[i + 1]
                if next == Ascii.slash {
                    try closeElement(root: &root)
                } else if next == Ascii.bang {
                    if starts(with: "<!--") {
                        try skipComment()
                    } else if starts(with: "<![CDATA[") {
                        try readCDATA()
                    } else {
                        throw .xml("unexpected markup at byte \(i)")
                    }
                } else if next == Ascii.question {
                    try skipProcessingInstruction(allowXMLDeclaration: false)
                } else if Self.isNameStart(next) {
                    try openElement(root: &root)
                } else {
                    throw .xml("'<' not followed by a name at byte \(i)")
                }
            } else if c == Ascii.amp {
                let at = i
                let scalar = try parseReference()
                try acceptDecodedText(scalar, at: at)
            } else {
                try readTextRun()
            }
        }
        guard let root else { throw .xml("no root element") }
        return root
    }

    // MARK: Elements

    private mutating func openElement(root: inout CIField?) throws(CallbackDecodingError) {
        let open = i
        i += 1
        let nameStart = i
        i = scanName(from: i)
        let name = nameStart..<i
        guard name.count <= limits.maxNameBytes else { throw .nameTooLong(limit: limits.maxNameBytes, at: nameStart) }
        let selfClosing = try parseAttributes(tagStart: open, name: name)

        elementCount += 1
        guard elementCount <= limits.maxElements else {
            throw .limit("more than \(limits.maxElements) elements at byte \(open)")
        }
        guard stack.count < limits.maxDepth else {
            throw .limit("nesting depth exceeds \(limits.maxDepth) at byte \(open)")
        }
        if let parent = stack.last, !topHasChildren, textNonWhitespaceAt >= 0 {
            throw mixedContent(parent: parent.name, at: textNonWhitespaceAt)
        }
        resetText()
        if selfClosing {
            let field = CIField(name: UTF8Scan.string(buf, name), value: .text(""))
            if stack.isEmpty {
                root = field
            } else {
                children.append(field)
            }
        } else {
            stack.append(Frame(name: name, firstChild: children.count))
        }
    }

    /// Parses attributes up to and including `>` or `/>`; returns whether the tag self-closes.
    private mutating func parseAttributes(tagStart: Int, name: Range<Int>) throws(CallbackDecodingError) -> Bool {
        attributeNames.removeAll(keepingCapacity: true)
        while true {
            let hadWhitespace = skipWhitespace()
            guard i < buf.count else { throw .xml("unterminated start tag <\(nameText(name))> at byte \(tagStart)") }
            let c = buf[i]
            if c == Ascii.gt {
                i += 1
                return false
            }
            if c == Ascii.slash {
                guard i + 1 < buf.count, buf[i + 1] == Ascii.gt else { throw .xml("expected '>' after '/' at byte \(i)") }
                i += 2
                return true
            }
            guard hadWhitespace, Self.isNameStart(c) else { throw .xml("malformed attribute at byte \(i)") }
            let attributeStart = i
            i = scanName(from: i)
            let attribute = attributeStart..<i
            guard attribute.count <= limits.maxNameBytes else { throw .nameTooLong(limit: limits.maxNameBytes, at: attributeStart) }
            for seen in attributeNames where buf[seen].elementsEqual(buf[attribute]) {
                throw .xml("duplicate attribute at byte \(attributeStart)")
            }
            attributeNames.append(attribute)
            skipWhitespace()
            guard i < buf.count, buf[i] == Ascii.equals else { throw .xml("expected '=' after attribute name at byte \(i)") }
            i += 1
            skipWhitespace()
            guard i < buf.count, buf[i] == Ascii.quote || buf[i] == Ascii.apostrophe else {
                throw .xml("expected a quoted attribute value at byte \(i)")
            }
            let quote = buf[i]
            let valueStart = i
            i += 1
            while true {
                guard i < buf.count else { throw .xml("unterminated attribute value at byte \(valueStart)") }
                let v = buf[i]
                if v == quote {
                    i += 1
                    break
                } else if v == Ascii.lt {
                    throw .xml("'<' in attribute value at byte \(i)")
                } else if v == Ascii.amp {
                    _ = try parseReference()
                } else {
                    i += 1
                }
            }
        }
    }

    private mutating func closeElement(root: inout CIField?) throws(CallbackDecodingError) {
        let tagStart = i
        let top = stack[stack.count - 1]
        i += 2
        let nameStart = i
        if i < buf.count, Self.isNameStart(buf[i]) {
            i = scanName(from: i)
        }
        let name = nameStart..<i
        guard !name.isEmpty else { throw .xml("malformed end tag at byte \(tagStart)") }
        guard buf[name].elementsEqual(buf[top.name]) else {
            throw .xml("expected </\(nameText(top.name))> at byte \(tagStart), found </\(nameText(name))>")
        }
        skipWhitespace()
        guard i < buf.count, buf[i] == Ascii.gt else { throw .xml("expected '>' at byte \(i)") }
        i += 1

        let value: CINode
        if children.count > top.firstChild {
            value = .element(Array(children[top.firstChild...]))
            children.removeSubrange(top.firstChild...)
        } else {
            value = .text(takeText())
        }
        stack.removeLast()
        resetText()
        let field = CIField(name: UTF8Scan.string(buf, top.name), value: value)
        if stack.isEmpty {
            root = field
        } else {
            children.append(field)
        }
    }

    // MARK: Text

    /// Reads character data up to the next `<` or `&`.
    private mutating func readTextRun() throws(CallbackDecodingError) {
        let start = i
        var sawCR = false
        var firstNonWhitespace = -1
        while i < buf.count {
            let c = buf[i]
            if c == Ascii.lt || c == Ascii.amp { break }
            switch c {
            case Ascii.space, Ascii.tab, Ascii.lf:
                break
            case Ascii.cr:
                sawCR = true
            case Ascii.gt where i - start >= 2 && buf[i - 1] == Ascii.rbracket && buf[i - 2] == Ascii.rbracket:
                throw .xml("']]>' is not allowed in text at byte \(i - 2)")
            default:
                if firstNonWhitespace < 0 { firstNonWhitespace = i }
            }
            i += 1
        }
        try acceptRawText(start..<i, normaliseLineEnds: sawCR, firstNonWhitespace: firstNonWhitespace)
    }

    private mutating func readCDATA() throws(CallbackDecodingError) {
        let open = i
        let start = i + 9
        var j = start
        var sawCR = false
        var firstNonWhitespace = -1
        while true {
            guard j + 2 < buf.count else { throw .xml("unterminated CDATA section at byte \(open)") }
            let c = buf[j]
            if c == Ascii.rbracket, buf[j + 1] == Ascii.rbracket, buf[j + 2] == Ascii.gt { break }
            if c == Ascii.cr {
                sawCR = true
            } else if firstNonWhitespace < 0, !Self.isWhitespace(c) {
                firstNonWhitespace = j
            }
            j += 1
        }
        i = j + 3
        try acceptRawText(start..<j, normaliseLineEnds: sawCR, firstNonWhitespace: firstNonWhitespace)
    }

    private mutating func acceptRawText(
        _ range: Range<Int>,
        normaliseLineEnds: Bool,
        firstNonWhitespace: Int
    ) throws(CallbackDecodingError) {
        guard !range.isEmpty else { return }
        if topHasChildren {
            let top = stack[stack.count - 1]
            // A container: only whitespace may sit between its children, and it is dropped.
            if firstNonWhitespace >= 0 { throw mixedContent(parent: top.name, at: firstNonWhitespace) }
            return
        }
        if firstNonWhitespace >= 0, textNonWhitespaceAt < 0 { textNonWhitespaceAt = firstNonWhitespace }
        if !normaliseLineEnds, case .empty = textMode {
            textMode = .slice(range)
            return
        }
        moveTextToScratch()
        if normaliseLineEnds {
            var j = range.lowerBound
            while j < range.upperBound {
                let c = buf[j]
                if c == Ascii.cr {
                    scratch.append(Ascii.lf)
                    if j + 1 < range.upperBound, buf[j + 1] == Ascii.lf { j += 1 }
                } else {
                    scratch.append(c)
                }
                j += 1
            }
        } else {
            scratch.append(contentsOf: UnsafeBufferPointer(rebasing: buf[range]))
        }
    }

    private mutating func acceptDecodedText(_ scalar: UInt32, at offset: Int) throws(CallbackDecodingError) {
        let isWhitespace = scalar == 0x20 || scalar == 0x09 || scalar == 0x0A || scalar == 0x0D
        if topHasChildren {
            if !isWhitespace { throw mixedContent(parent: stack[stack.count - 1].name, at: offset) }
            return
        }
        if !isWhitespace, textNonWhitespaceAt < 0 { textNonWhitespaceAt = offset }
        moveTextToScratch()
        UTF8Scan.appendScalar(scalar, to: &scratch)
    }

    private mutating func moveTextToScratch() {
        switch textMode {
        case .scratch:
            return
        case .empty:
            scratch.removeAll(keepingCapacity: true)
        case .slice(let range):
            scratch.removeAll(keepingCapacity: true)
            scratch.append(contentsOf: UnsafeBufferPointer(rebasing: buf[range]))
        }
        textMode = .scratch
    }

    private mutating func takeText() -> String {
        switch textMode {
        case .empty: return ""
        case .slice(let range): return UTF8Scan.string(buf, range)
        case .scratch: return String(decoding: scratch, as: UTF8.self)
        }
    }

    private mutating func resetText() {
        textMode = .empty
        textNonWhitespaceAt = -1
    }

    private func mixedContent(parent: Range<Int>, at offset: Int) -> CallbackDecodingError {
        .xml("text beside child elements of <\(nameText(parent))> at byte \(offset) is not supported")
    }

    // MARK: References

    /// Parses `&…;` at `i`, returning the scalar it stands for.
    private mutating func parseReference() throws(CallbackDecodingError) -> UInt32 {
        let start = i
        var j = i + 1
        if j < buf.count, buf[j] == Ascii.hash {
            j += 1
            var radix: UInt32 = 10
            if j < buf.count, buf[j] == Ascii.lowerX {
                radix = 16
                j += 1
            }
            let digitsStart = j
            var value: UInt32 = 0
            while j < buf.count, buf[j] != Ascii.semicolon {
                guard let digit = UTF8Scan.hexValue(buf[j]), digit < radix else {
                    throw .xml("malformed character reference at byte \(start)")
                }
                // Saturate instead of overflowing; anything above U+10FFFF is refused below.
                value = value > 0x10FFFF ? value : value * radix + digit
                j += 1
            }
            guard j < buf.count, j > digitsStart else { throw .xml("malformed character reference at byte \(start)") }
            guard Self.isXMLChar(value) else {
                throw .xml("character reference to an invalid code point at byte \(start)")
            }
            i = j + 1
            return value
        }
        let nameStart = j
        while j < buf.count, j - nameStart <= 32, Self.isNameChar(buf[j]) { j += 1 }
        guard j < buf.count, buf[j] == Ascii.semicolon, j > nameStart, Self.isNameStart(buf[nameStart]) else {
            throw .xml("malformed entity reference at byte \(start)")
        }
        let name = UnsafeBufferPointer(rebasing: buf[nameStart..<j])
        let scalar: UInt32
        if name.elementsEqual("lt".utf8) {
            scalar = 0x3C
        } else if name.elementsEqual("gt".utf8) {
            scalar = 0x3E
        } else if name.elementsEqual("amp".utf8) {
            scalar = 0x26
        } else if name.elementsEqual("apos".utf8) {
            scalar = 0x27
        } else if name.elementsEqual("quot".utf8) {
            scalar = 0x22
        } else {
            throw .xml("undefined entity &\(nameText(nameStart..<j)); at byte \(start)")
        }
        i = j + 1
        return scalar
    }

    // MARK: Markup that carries no data

    private mutating func skipComment() throws(CallbackDecodingError) {
        let open = i
        var j = i + 4
        while true {
            guard j + 1 < buf.count else { throw .xml("unterminated comment at byte \(open)") }
            if buf[j] == Ascii.dash, buf[j + 1] == Ascii.dash {
                guard j + 2 < buf.count, buf[j + 2] == Ascii.gt else { throw .xml("'--' inside a comment at byte \(j)") }
                i = j + 3
                return
            }
            j += 1
        }
    }

    private mutating func skipProcessingInstruction(allowXMLDeclaration: Bool) throws(CallbackDecodingError) {
        let open = i
        let targetStart = i + 2
        guard targetStart < buf.count, Self.isNameStart(buf[targetStart]) else {
            throw .xml("malformed processing instruction at byte \(open)")
        }
        let targetEnd = scanName(from: targetStart)
        if !allowXMLDeclaration, targetEnd - targetStart == 3 {
            let t = buf[targetStart..<targetEnd].map { $0 | 0x20 }
            if t == Array("xml".utf8) { throw .xml("XML declaration is only allowed at the start, found at byte \(open)") }
        }
        var j = targetEnd
        while true {
            guard j + 1 < buf.count else { throw .xml("unterminated processing instruction at byte \(open)") }
            if buf[j] == Ascii.question, buf[j + 1] == Ascii.gt {
                i = j + 2
                return
            }
            j += 1
        }
    }

    /// Skips `<!DOCTYPE name [ExternalID]>`; refuses any internal subset (`[ … ]`).
    private mutating func skipDoctype() throws(CallbackDecodingError) {
        let open = i
        var j = i + 9
        while j < buf.count {
            let c = buf[j]
            if c == Ascii.quote || c == Ascii.apostrophe {
                j += 1
                while j < buf.count, buf[j] != c { j += 1 }
            } else if c == Ascii.lbracket {
                if Self.contains(buf, "<!ENTITY", from: j) {
                    throw CallbackDecodingError(
                        code: .forbiddenDTD,
                        reason: "DOCTYPE with entity declarations is not accepted (at byte \(open))"
                    )
                }
                throw CallbackDecodingError(
                    code: .forbiddenDTD,
                    reason: "DOCTYPE with an internal subset is not accepted (at byte \(open))"
                )
            } else if c == Ascii.gt {
                i = j + 1
                return
            }
            j += 1
        }
        throw .xml("unterminated DOCTYPE at byte \(open)")
    }

    // MARK: Lexical helpers

    @discardableResult
    private mutating func skipWhitespace() -> Bool {
        let start = i
        while i < buf.count, Self.isWhitespace(buf[i]) { i += 1 }
        return i > start
    }

    private func scanName(from start: Int) -> Int {
        var j = start
        while j < buf.count, Self.isNameChar(buf[j]) { j += 1 }
        return j
    }

    private func starts(with prefix: StaticString) -> Bool {
        let count = prefix.utf8CodeUnitCount
        guard i + count <= buf.count else { return false }
        let p = prefix.utf8Start
        for k in 0..<count where buf[i + k] != p[k] { return false }
        return true
    }

    private func nameText(_ range: Range<Int>) -> String {
        CallbackDecodingError.excerpt(buf, range)
    }

    private static func contains(_ buf: UnsafeBufferPointer<UInt8>, _ needle: StaticString, from start: Int) -> Bool {
        let count = needle.utf8CodeUnitCount
        let p = needle.utf8Start
        var j = start
        while j + count <= buf.count {
            var k = 0
            while k < count, buf[j + k] == p[k] { k += 1 }
            if k == count { return true }
            j += 1
        }
        return false
    }

    @inline(__always)
    static func isWhitespace(_ c: UInt8) -> Bool {
        c == Ascii.space || c == Ascii.lf || c == Ascii.tab || c == Ascii.cr
    }

    /// XML NameStartChar, simplified: ASCII letters, `_`, `:` and any non-ASCII byte (the
    /// UTF-8 pass already guarantees the bytes form characters).
    @inline(__always)
    static func isNameStart(_ c: UInt8) -> Bool {
        (c | 0x20) >= Ascii.lowerA && (c | 0x20) <= Ascii.lowerZ || c == Ascii.underscore || c == Ascii.colon || c >= 0x80
    }

    @inline(__always)
    static func isNameChar(_ c: UInt8) -> Bool {
        isNameStart(c) || (c >= Ascii.zero && c <= Ascii.nine) || c == Ascii.dash || c == Ascii.dot
    }

    /// XML 1.0 `Char`.
    static func isXMLChar(_ v: UInt32) -> Bool {
        v == 0x9 || v == 0xA || v == 0xD || (0x20...0xD7FF).contains(v) || (0xE000...0xFFFD).contains(v)
            || (0x10000...0x10FFFF).contains(v)
    }
}

/// ASCII bytes by name, so the parsers read as the grammar does.
enum Ascii {
    static let tab = UInt8(ascii: "\t")
    static let lf = UInt8(ascii: "\n")
    static let cr = UInt8(ascii: "\r")
    static let space = UInt8(ascii: " ")
    static let bang = UInt8(ascii: "!")
    static let quote = UInt8(ascii: "\"")
    static let hash = UInt8(ascii: "#")
    static let amp = UInt8(ascii: "&")
    static let apostrophe = UInt8(ascii: "'")
    static let plus = UInt8(ascii: "+")
    static let comma = UInt8(ascii: ",")
    static let dash = UInt8(ascii: "-")
    static let dot = UInt8(ascii: ".")
    static let slash = UInt8(ascii: "/")
    static let zero = UInt8(ascii: "0")
    static let nine = UInt8(ascii: "9")
    static let colon = UInt8(ascii: ":")
    static let semicolon = UInt8(ascii: ";")
    static let lt = UInt8(ascii: "<")
    static let equals = UInt8(ascii: "=")
    static let gt = UInt8(ascii: ">")
    static let question = UInt8(ascii: "?")
    static let lbracket = UInt8(ascii: "[")
    static let backslash = UInt8(ascii: "\\")
    static let rbracket = UInt8(ascii: "]")
    static let underscore = UInt8(ascii: "_")
    static let lowerA = UInt8(ascii: "a")
    static let lowerX = UInt8(ascii: "x")
    static let lowerZ = UInt8(ascii: "z")
    static let lbrace = UInt8(ascii: "{")
    static let rbrace = UInt8(ascii: "}")
}
