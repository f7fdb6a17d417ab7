// embed-files CONSTANT OUTPUT SOURCE...
//
// Writes OUTPUT, a Swift file declaring `let CONSTANT: [(name: String, text: String)]` that holds each
// file's name and exact UTF-8 text, in the order given. A SOURCE is a file, or `FOLDER/*.EXT[,EXT…]`: the
// folder's files with one of those extensions, sorted by name, listed now (not when the build was
// planned, so a file added since is in). Run by the EmbedRepositoryFiles build-tool plugin.
import Foundation

/// A Swift string literal whose value is exactly `text`.
///
/// Every backslash and double quote is escaped, so no delimiter or interpolation can form; control
/// characters (a carriage return would be normalised away in a multi-line literal) and the byte order
/// mark are written as `\u{…}`. A multi-line literal keeps an embedded file readable in the generated
/// source: its lines stay lines, and the newline before the closing delimiter is not part of the value.
func swiftLiteral(_ text: String, multiline: Bool) -> String {
    var literal = multiline ? "\"\"\"\n" : "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\\": literal += "\\\\"
        case "\"": literal += "\\\""
        case "\n" where multiline, "\t": literal.unicodeScalars.append(scalar)
        case _ where scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0xFEFF:
            literal += "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
        default: literal.unicodeScalars.append(scalar)
        }
    }
    return literal + (multiline ? "\n\"\"\"" : "\"")
}

let arguments = CommandLine.arguments.dropFirst()
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: embed-files CONSTANT OUTPUT SOURCE...\n".utf8))
    exit(2)
}
let constant = arguments[arguments.startIndex]
let output = arguments[arguments.startIndex + 1]

/// The files a SOURCE argument names.
func files(of source: String) -> [String] {
    guard let star = source.range(of: "/*.", options: .backwards) else { return [source] }
    let folder = String(source[..<star.lowerBound])
    let extensions = source[star.upperBound...].split(separator: ",").map(String.init)
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else {
        FileHandle.standardError.write(Data("embed-files: cannot list \(folder)\n".utf8))
        exit(1)
    }
    return names.filter { extensions.contains(URL(fileURLWithPath: $0).pathExtension) }.sorted().map { "\(folder)/\($0)" }
}
let files = arguments.dropFirst(2).flatMap(files(of:))

var swift = """
    // Generated at build time by the EmbedRepositoryFiles plugin; never committed. Edit the files it names.

    /// \(files.map { "`\(URL(fileURLWithPath: $0).lastPathComponent)`" }.joined(separator: ", ")) as compiled \
    into this build: (file name, exact text).
    let \(constant): [(name: String, text: String)] = [

    """
for path in files {
    guard let data = FileManager.default.contents(atPath: path) else {
        FileHandle.standardError.write(Data("embed-files: cannot read \(path)\n".utf8))
        exit(1)
    }
    guard let text = String(validating: data, as: UTF8.self) else {
        FileHandle.standardError.write(Data("embed-files: \(path) is not UTF-8 text\n".utf8))
        exit(1)
    }
    let name = URL(fileURLWithPath: path).lastPathComponent
    swift += "(\(swiftLiteral(name, multiline: false)), \(swiftLiteral(text, multiline: true))),\n"
}
swift += "]\n"
do {
    try Data(swift.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
} catch {
    FileHandle.standardError.write(Data("embed-files: cannot write \(output): \(error)\n".utf8))
    exit(1)
}
