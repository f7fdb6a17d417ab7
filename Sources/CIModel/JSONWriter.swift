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
        let hex = Array("0123456789abcdef".utf8)
        var iterator = text.utf8.makeIterator()
        var pending: [UInt8] = []
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x00..<0x20:
                bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]])
            case 0xE2:
                // U+2028 and U+2029 are E2 80 A8 / E2 80 A9.
                pending = [byte]
                if let second = iterator.next() {
                    pending.append(second)
                    if let third = iterator.next() {
                        pending.append(third)
                    }
                }
                if pending.count == 3, pending[1] == 0x80, pending[2] == 0xA8 || pending[2] == 0xA9 {
                    bytes.append(contentsOf: Array(pending[2] == 0xA8 ? "\\u2028".utf8 : "\\u2029".utf8))
                } else {
                    bytes.append(contentsOf: pending)
                }
            default: bytes.append(byte)
            }
        }
    }
}
