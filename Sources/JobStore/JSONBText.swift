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
                guard let source = input.baseAddress, let target = output.baseAddress else { return 0 }
                var count = 0
                var index = 0
                while index < input.count {
                    let byte = source[index]
                    if byte == UInt8(ascii: "\"") {
                        // A string, copied whole: find its closing quote (skipping escaped characters) with
                        // two compares per byte and no stores, then copy it at once. Keys and values are
                        // most of a document's bytes.
                        var end = index + 1
                        while end < input.count {
                            let inner = source[end]
                            if inner == UInt8(ascii: "\"") { break }
                            end += inner == UInt8(ascii: "\\") ? 2 : 1
                        }
                        end = min(end + 1, input.count)
                        (target + count).update(from: source + index, count: end - index)
                        count += end - index
                        index = end
                    } else {
                        if byte != UInt8(ascii: " ") {
                            target[count] = byte
                            count += 1
                        }
                        index += 1
                    }
                }
                return count
            }
        }
    }
}
