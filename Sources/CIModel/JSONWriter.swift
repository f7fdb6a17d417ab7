/// Builds compact JSON text into a byte buffer: the service's response bodies and the job records it
/// hands to PostgreSQL.
///
/// Separators are inserted automatically, so callers only say what comes next. It does not check
/// nesting: an unbalanced `endObject()` is a programming error that tests catch.
public struct JSONWriter: Sendable {
    public private(set) var bytes: [UInt8]
    /// One flag per open container: whether it already holds a member (so the next one needs a comma).
    private var needsComma: [Bool] = [false]
    /// Set after `key(_:)`: the value that follows needs no comma.
    private var afterKey = false

    public init(reservingCapacity capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// The text written so far.
    public var string: String { String(decoding: bytes, as: UTF8.self) }

    public mutating func beginObject() {
        prepareValue()
        bytes.append(UInt8(ascii: "{"))
        needsComma.append(false)
    }

    public mutating func endObject() {
        needsComma.removeLast()
        bytes.append(UInt8(ascii: "}"))
    }

    public mutating func beginArray() {
        prepareValue()
        bytes.append(UInt8(ascii: "["))
        needsComma.append(false)
    }

    public mutating func endArray() {
        needsComma.removeLast()
        bytes.append(UInt8(ascii: "]"))
    }

    /// Writes an object key; the next call writes its value.
    public mutating func key(_ name: String) {
        prepareValue()
        appendQuoted(name)
        bytes.append(UInt8(ascii: ":"))
        afterKey = true
    }

    public mutating func string(_ value: String) {
        prepareValue()
        appendQuoted(value)
    }

    public mutating func integer(_ value: some BinaryInteger) {
        prepareValue()
        bytes.append(contentsOf: String(value).utf8)
    }

    public mutating func bool(_ value: Bool) {
        prepareValue()
        bytes.append(contentsOf: value ? Array("true".utf8) : Array("false".utf8))
    }

    public mutating func null() {
        prepareValue()
        bytes.append(contentsOf: "null".utf8)
    }

    /// Inserts JSON text produced elsewhere (a stored jsonb document) as one value, unchanged.
    public mutating func raw(_ json: some Sequence<UInt8>) {
        prepareValue()
        bytes.append(contentsOf: json)
    }

    /// Inserts one value that `write` appends to the buffer itself, unchanged.
    mutating func rawValue(_ write: (inout [UInt8]) -> Void) {
        prepareValue()
        write(&bytes)
    }

    /// `"name": "value"`, or `"name": null` for nil.
    public mutating func member(_ name: String, _ value: String?) {
        key(name)
        if let value { string(value) } else { null() }
    }

    /// `"name": 42`, or `"name": null` for nil.
    public mutating func member(_ name: String, _ value: Int?) {
        key(name)
        if let value { integer(value) } else { null() }
    }

    public mutating func member(_ name: String, _ value: Bool) {
        key(name)
        bool(value)
    }

    /// `"name": "value"` only when value is not nil: for records where an absent key means NULL.
    public mutating func optionalMember(_ name: String, _ value: String?) {
        if let value { member(name, value) }
    }

    private mutating func prepareValue() {
        if afterKey {
            afterKey = false
            return
        }
        if needsComma[needsComma.count - 1] {
            bytes.append(UInt8(ascii: ","))
        } else {
            needsComma[needsComma.count - 1] = true
        }
    }

    private mutating func appendQuoted(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        Self.appendEscaped(text, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    /// Appends `text` escaped for a JSON string (without quotes): `"` `\` and control characters are
    /// escaped, everything else is copied as UTF-8. U+2028/U+2029 are escaped too so the output is also
    /// safe to embed in JavaScript.
    public static func appendEscaped(_ text: String, to bytes: inout [UInt8]) {
        var text = text
        text.withUTF8 { utf8 in
            // Runs of bytes that need no escape (nearly all of them) are copied at once: this writes every
            // key and string of every response.
            var runStart = 0
            var index = 0
            while index < utf8.count {
                let byte = utf8[index]
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), 0x00..<0x20: break
                // U+2028 and U+2029 are E2 80 A8 / E2 80 A9.
                case 0xE2 where index + 2 < utf8.count && utf8[index + 1] == 0x80 && (utf8[index + 2] == 0xA8 || utf8[index + 2] == 0xA9): break
                default:
                    index += 1
                    continue
                }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<index]))
                switch byte {
                case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
                case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
                case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
                case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
                case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
                case 0xE2:
                    bytes.append(contentsOf: Array("\\u202".utf8))
                    bytes.append(utf8[index + 2] == 0xA8 ? UInt8(ascii: "8") : UInt8(ascii: "9"))
                    index += 2
                default:
                    bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hexDigit(byte >> 4), hexDigit(byte & 0x0F)])
                }
                index += 1
                runStart = index
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<utf8.count]))
        }
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }
}
