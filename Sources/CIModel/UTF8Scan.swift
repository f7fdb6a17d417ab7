/// Byte-level helpers shared by the XML and JSON parsers.
enum UTF8Scan {
    /// Checks that `bytes` is well-formed UTF-8 (no overlongs, no surrogates, nothing above
    /// U+10FFFF). With `xmlCharsOnly`, also refuses what XML 1.0 forbids in a document:
    /// C0 controls other than tab, LF and CR, and U+FFFE/U+FFFF.
    ///
    /// One up-front pass lets both parsers build `String`s from raw slices without re-checking.
    static func validate(_ bytes: UnsafeBufferPointer<UInt8>, xmlCharsOnly: Bool) throws(CallbackDecodingError) {
        let count = bytes.count
        guard let base = bytes.baseAddress else { return }
        let raw = UnsafeRawPointer(base)
        let highBits: UInt64 = 0x8080_8080_8080_8080
        let spaces: UInt64 = 0x2020_2020_2020_2020
        var i = 0
        while i < count {
            // Eight ASCII bytes at a time; a word with a non-ASCII byte (or, for XML, a byte below
            // 0x20, which includes the common LF and tab) falls through to the byte-wise check.
            if i + 8 <= count {
                let word = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                if word & highBits == 0, !xmlCharsOnly || (word &- spaces) & ~word & highBits == 0 {
                    i += 8
                    continue
                }
            }
            let b0 = bytes[i]
            if b0 < 0x80 {
                if xmlCharsOnly, b0 < 0x20, b0 != 0x09, b0 != 0x0A, b0 != 0x0D {
                    throw .xml("control character U+\(hex4(UInt32(b0))) is not allowed in XML at byte \(i)")
                }
                i += 1
                continue
            }
            let length: Int
            var lower: UInt8 = 0x80
            var upper: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lower = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; upper = 0x9F
            case 0xF0: length = 4; lower = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; upper = 0x8F
            default: throw invalid(at: i)
            }
            guard i + length <= count else { throw invalid(at: i) }
            let b1 = bytes[i + 1]
            guard b1 >= lower, b1 <= upper else { throw invalid(at: i) }
            if length >= 3 {
                guard bytes[i + 2] & 0xC0 == 0x80 else { throw invalid(at: i) }
                if xmlCharsOnly, b0 == 0xEF, b1 == 0xBF, bytes[i + 2] >= 0xBE {
                    throw .xml("non-character U+FFF\(bytes[i + 2] == 0xBE ? "E" : "F") is not allowed in XML at byte \(i)")
                }
            }
            if length == 4 {
                guard bytes[i + 3] & 0xC0 == 0x80 else { throw invalid(at: i) }
            }
            i += length
        }
    }

    private static func invalid(at offset: Int) -> CallbackDecodingError {
        CallbackDecodingError(code: .invalidUTF8, reason: "invalid UTF-8 at byte \(offset)")
    }

    /// Appends the UTF-8 encoding of a valid scalar value.
    @inline(__always)
    static func appendScalar(_ value: UInt32, to out: inout [UInt8]) {
        switch value {
        case 0..<0x80:
            out.append(UInt8(value))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (value >> 6)))
            out.append(UInt8(0x80 | (value & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (value >> 12)))
            out.append(UInt8(0x80 | ((value >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (value & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (value >> 18)))
            out.append(UInt8(0x80 | ((value >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((value >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (value & 0x3F)))
        }
    }

    /// Four upper-case hex digits (more when needed), for messages such as `U+001F`.
    static func hex4(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }

    /// The value of an ASCII hex digit, or nil.
    @inline(__always)
    static func hexValue(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    /// Builds a `String` from a slice already known to be valid UTF-8.
    @inline(__always)
    static func string(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    /// Whether `bytes` starts with a UTF-8 byte-order mark.
    @inline(__always)
    static func hasBOM(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF
    }
}
