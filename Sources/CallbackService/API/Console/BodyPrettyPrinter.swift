import CIModel
import Foundation

/// Indents a stored callback body for reading: JSON by its tokens, XML by its tags.
///
/// Pure and forgiving: it never parses for validity (a rejected body may be anything) and only changes
/// whitespace between tokens, so what it shows is the body's own text. The byte-for-byte body is the
/// download beside it. Text that is not UTF-8 is shown with U+FFFD where bytes do not decode.
enum BodyPrettyPrinter {
    /// Bodies longer than this are shown as they are: indenting is for reading, and a megabyte is not read.
    static let maximumBytes = 256 * 1024

    static func pretty(_ body: [UInt8], format: CallbackFormat?) -> String {
        let text = String(decoding: body, as: UTF8.self)
        guard body.count <= maximumBytes else { return text }
        switch format {
        case .json: return json(text)
        case .xml: return xml(text)
        case nil: return text
        }
    }

    /// Two spaces per level; strings (with their escapes) are copied untouched.
    static func json(_ text: String) -> String {
        var output = ""
        var depth = 0
        var inString = false
        var escaped = false
        var pendingNewline = false
        func newline() {
            output += "\n" + String(repeating: "  ", count: max(depth, 0))
        }
        let scalars = Array(text.unicodeScalars)
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            index += 1
            if inString {
                output.unicodeScalars.append(scalar)
                if escaped {
                    escaped = false
                } else if scalar == "\\" {
                    escaped = true
                } else if scalar == "\"" {
                    inString = false
                }
                continue
            }
            switch scalar {
            case " ", "\t", "\n", "\r":
                continue
            case "{", "[":
                if pendingNewline { newline() }
                output.unicodeScalars.append(scalar)
                // An empty object or array stays on one line.
                var next = index
                while next < scalars.count, [" ", "\t", "\n", "\r"].contains(scalars[next]) { next += 1 }
                if next < scalars.count, scalars[next] == (scalar == "{" ? "}" : "]") {
                    output.unicodeScalars.append(scalars[next])
                    index = next + 1
                    pendingNewline = false
                    continue
                }
                depth += 1
                pendingNewline = true
            case "}", "]":
                depth -= 1
                newline()
                output.unicodeScalars.append(scalar)
                pendingNewline = false
            case ",":
                output += ","
                pendingNewline = true
            case ":":
                output += ": "
            default:
                if pendingNewline {
                    newline()
                    pendingNewline = false
                }
                if scalar == "\"" { inString = true }
                output.unicodeScalars.append(scalar)
            }
        }
        return output
    }

    /// One tag per line, two spaces per level; an element holding only text stays on one line, and text is
    /// copied untouched (whitespace-only text between tags is dropped).
    static func xml(_ text: String) -> String {
        enum Token {
            case open(Substring), close(Substring), selfContained(Substring), text(Substring)
        }
        var tokens: [Token] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            if rest.hasPrefix("<") {
                let end: String.Index
                if rest.hasPrefix("<!--"), let close = rest.range(of: "-->") {
                    end = close.upperBound
                } else if rest.hasPrefix("<![CDATA["), let close = rest.range(of: "]]>") {
                    end = close.upperBound
                } else if let close = rest.firstIndex(of: ">") {
                    end = rest.index(after: close)
                } else {
                    tokens.append(.text(rest))
                    break
                }
                let tag = rest[..<end]
                if tag.hasPrefix("</") {
                    tokens.append(.close(tag))
                } else if tag.hasPrefix("<?") || tag.hasPrefix("<!") || tag.hasSuffix("/>") {
                    tokens.append(tag.hasPrefix("<![CDATA[") ? .text(tag) : .selfContained(tag))
                } else {
                    tokens.append(.open(tag))
                }
                rest = rest[end...]
            } else {
                let end = rest.firstIndex(of: "<") ?? rest.endIndex
                let chunk = rest[..<end]
                if !chunk.allSatisfy({ $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }) { tokens.append(.text(chunk)) }
                rest = rest[end...]
            }
        }
        var lines: [String] = []
        var depth = 0
        var index = 0
        func indent() -> String { String(repeating: "  ", count: max(depth, 0)) }
        while index < tokens.count {
            switch tokens[index] {
            case .open(let tag):
                // <a>text</a> on one line.
                if index + 2 < tokens.count, case .text(let body) = tokens[index + 1], case .close(let close) = tokens[index + 2] {
                    lines.append(indent() + tag + body + close)
                    index += 3
                    continue
                }
                if index + 1 < tokens.count, case .close(let close) = tokens[index + 1] {
                    lines.append(indent() + tag + close)
                    index += 2
                    continue
                }
                lines.append(indent() + tag)
                depth += 1
            case .close(let tag):
                depth -= 1
                lines.append(indent() + tag)
            case .selfContained(let tag), .text(let tag):
                lines.append(indent() + tag)
            }
            index += 1
        }
        return lines.joined(separator: "\n")
    }
}
