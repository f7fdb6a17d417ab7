import Foundation

/// How a migration file's SQL is run, read from the file itself. Pure: no database.
///
/// A file whose first line is `-- ci-callbackd: no-transaction` runs outside a transaction, one statement
/// at a time, so it may build an index `CONCURRENTLY` (which PostgreSQL refuses inside a transaction
/// block, including the implicit one around a multi-statement query). Every other file runs whole, in one
/// transaction.
public enum MigrationScript {
    /// The first-line marker of a migration that runs outside a transaction.
    public static let noTransactionMarker = "-- ci-callbackd: no-transaction"

    /// Whether `sql` runs in one transaction; a first line that starts like a directive but is not the
    /// marker (a typo would otherwise silently run the file in a transaction) is refused.
    public static func runsInTransaction(_ sql: String) throws(MigrationError) -> Bool {
        let firstLine = sql.prefix { $0 != "\n" && $0 != "\r\n" }
        let trimmed = String(firstLine).trimmingTrailingWhitespace()
        if trimmed == noTransactionMarker { return false }
        if trimmed.hasPrefix("-- ci-callbackd:") {
            throw MigrationError("unknown directive \"\(trimmed)\" on the first line: the only one is \"\(noTransactionMarker)\"")
        }
        return true
    }

    /// The statements of `sql`, split at top-level semicolons, each trimmed and without its semicolon.
    /// Semicolons inside comments (`--`, nested `/* */`), string literals (`'…'`, `E'…'`), quoted
    /// identifiers and dollar-quoted bodies (`$$…$$`, `$tag$…$tag$`) do not split; pieces holding only
    /// comments and whitespace are dropped.
    public static func statements(_ sql: String) -> [String] {
        let bytes = Array(sql.utf8)
        var statements: [String] = []
        var start = 0
        var hasCode = false
        var index = 0
        func isIdentifierByte(_ byte: UInt8) -> Bool {
            byte == UInt8(ascii: "_") || byte == UInt8(ascii: "$") || byte >= 0x80
                || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        func finish(at end: Int) {
            if hasCode, let text = String(validating: bytes[start..<end], as: UTF8.self) {
                statements.append(text.trimmingWhitespace())
            }
            hasCode = false
        }
        while index < bytes.count {
            let byte = bytes[index]
            let next = index + 1 < bytes.count ? bytes[index + 1] : 0
            let previous = index > 0 ? bytes[index - 1] : 0
            switch byte {
            case UInt8(ascii: "-") where next == UInt8(ascii: "-"):
                while index < bytes.count && bytes[index] != UInt8(ascii: "\n") { index += 1 }
            case UInt8(ascii: "/") where next == UInt8(ascii: "*"):
                var depth = 0
                repeat {
                    if bytes[index] == UInt8(ascii: "/") && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "*") {
                        depth += 1
                        index += 2
                    } else if bytes[index] == UInt8(ascii: "*") && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "/") {
                        depth -= 1
                        index += 2
                    } else {
                        index += 1
                    }
                } while depth > 0 && index < bytes.count
                continue
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                // E'…' strings take backslash escapes; a quote is doubled in every kind.
                let escapes = byte == UInt8(ascii: "'") && (previous | 0x20) == UInt8(ascii: "e")
                    && !(index >= 2 && isIdentifierByte(bytes[index - 2]))
                hasCode = true
                index += 1
                while index < bytes.count {
                    if escapes && bytes[index] == UInt8(ascii: "\\") {
                        index += 2
                    } else if bytes[index] == byte {
                        if index + 1 < bytes.count && bytes[index + 1] == byte {
                            index += 2
                        } else {
                            break
                        }
                    } else {
                        index += 1
                    }
                }
            case UInt8(ascii: "$") where !isIdentifierByte(previous):
                hasCode = true
                // `$tag$` opens a dollar-quoted body that ends at the same `$tag$`; `$1` is a parameter.
                var tagEnd = index + 1
                while tagEnd < bytes.count && isIdentifierByte(bytes[tagEnd]) && bytes[tagEnd] != UInt8(ascii: "$") { tagEnd += 1 }
                let startsWithDigit = index + 1 < bytes.count && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index + 1])
                guard tagEnd < bytes.count, bytes[tagEnd] == UInt8(ascii: "$"), !startsWithDigit else { break }
                let tag = bytes[index...tagEnd]
                index = tagEnd + 1
                while index < bytes.count && !bytes[index...].starts(with: tag) { index += 1 }
                index += tag.count - 1
            case UInt8(ascii: ";"):
                finish(at: index)
                start = index + 1
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"), 0x0C:
                break
            default:
                hasCode = true
            }
            index += 1
        }
        finish(at: bytes.count)
        return statements
    }

    /// The index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON …` statement builds, as
    /// written (quoted or schema-qualified names included); `nil` for any other statement.
    ///
    /// A failed concurrent build leaves an INVALID index behind, which `IF NOT EXISTS` would then take for
    /// done; knowing the name lets the migrator drop it and build again. An unnamed concurrent index could
    /// not be found again, so it is refused.
    public static func concurrentIndexName(_ statement: String) throws(MigrationError) -> String? {
        var tokens = SQLTokens(statement)
        guard tokens.keyword() == "create" else { return nil }
        var word = tokens.keyword()
        if word == "unique" { word = tokens.keyword() }
        guard word == "index", tokens.keyword() == "concurrently" else { return nil }
        var name = tokens.name()
        if name?.lowercased() == "if" {
            guard tokens.keyword() == "not", tokens.keyword() == "exists" else {
                throw MigrationError("cannot read the index name in: \(statement)")
            }
            name = tokens.name()
        }
        guard let name, name.lowercased() != "on" else {
            throw MigrationError("a concurrently built index must be named, so a failed build can be found and rebuilt: \(statement)")
        }
        return name
    }
}

/// Words and names at the start of a statement, skipping whitespace and comments.
private struct SQLTokens {
    private var rest: Substring

    init(_ text: String) { rest = Substring(text) }

    /// The next bare word, lowercased.
    mutating func keyword() -> String? {
        skipSpace()
        let word = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "$" }
        rest = rest.dropFirst(word.count)
        return word.isEmpty ? nil : word.lowercased()
    }

    /// The next name as written: bare or quoted parts joined by dots.
    mutating func name() -> String? {
        skipSpace()
        var name = ""
        while true {
            if rest.first == "\"" {
                var part = "\""
                var characters = rest.dropFirst()
                while let character = characters.first {
                    characters = characters.dropFirst()
                    part.append(character)
                    if character == "\"" {
                        if characters.first == "\"" {
                            part.append("\"")
                            characters = characters.dropFirst()
                        } else {
                            break
                        }
                    }
                }
                name += part
                rest = characters
            } else {
                let part = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "$" }
                guard !part.isEmpty else { return name.isEmpty ? nil : name }
                name += part
                rest = rest.dropFirst(part.count)
            }
            guard rest.first == "." else { return name }
            name += "."
            rest = rest.dropFirst()
        }
    }

    private mutating func skipSpace() {
        while true {
            rest = rest.drop { $0.isWhitespace }
            if rest.hasPrefix("--") {
                rest = rest.drop { $0 != "\n" }
            } else if rest.hasPrefix("/*"), let end = rest.range(of: "*/") {
                rest = rest[end.upperBound...]
            } else {
                return
            }
        }
    }
}

extension String {
    fileprivate func trimmingTrailingWhitespace() -> String {
        var text = Substring(self)
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }

    fileprivate func trimmingWhitespace() -> String {
        String(Substring(trimmingTrailingWhitespace()).drop { $0.isWhitespace })
    }
}
