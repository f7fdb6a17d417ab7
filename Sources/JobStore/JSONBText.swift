/// PostgreSQL prints jsonb with a space after every `:` and `,` (`{"Tag": "x", "JobId": "j1"}`); the API
/// writes compact JSON everywhere else, so a stored document is compacted as it is read, once, here.
enum JSONBText {
    /// `text` without the spaces outside strings. jsonb's output has no other whitespace outside strings;
    /// inside them every byte, escapes included, is kept as it is.
    static func compact(_ text: String) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(text.utf8.count)
        var inString = false
        var escaped = false
        for byte in text.utf8 {
            if inString {
                output.append(byte)
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
            } else if byte != UInt8(ascii: " ") {
                output.append(byte)
                inString = byte == UInt8(ascii: "\"")
            }
        }
        return String(decoding: output, as: UTF8.self)
    }
}
