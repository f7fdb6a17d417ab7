/// PostgreSQL prints jsonb with a space after every `:` and `,` (`{"Tag": "x", "JobId": "j1"}`); the API
/// writes compact JSON everywhere else, so a stored document is compacted as it is read, once, here.
enum JSONBText {
    /// `text` without the spaces outside strings. jsonb's output has no other whitespace outside strings;
    /// inside them every byte, escapes included, is kept as it is.
    static func compact(_ text: String) -> String {
        // Straight from the string's UTF-8 into the result's storage: this runs for every job a lookup or
        // list returns, and building an intermediate byte array showed in lookup profiles.
        var text = text
        return text.withUTF8 { input in
            String(unsafeUninitializedCapacity: input.count) { output in
                var count = 0
                var inString = false
                var escaped = false
                for byte in input {
                    if inString {
                        output[count] = byte
                        count += 1
                        if escaped {
                            escaped = false
                        } else if byte == UInt8(ascii: "\\") {
                            escaped = true
                        } else if byte == UInt8(ascii: "\"") {
                            inString = false
                        }
                    } else if byte != UInt8(ascii: " ") {
                        output[count] = byte
                        count += 1
                        inString = byte == UInt8(ascii: "\"")
                    }
                }
                return count
            }
        }
    }
}
