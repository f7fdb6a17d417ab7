import Foundation
import PackagePlugin

/// Compiles repository files into a target as Swift string constants, at build time.
///
/// The binary then needs no file beside it (it runs copied alone into an empty folder), while the files
/// stay where people look for them: `migrations/`, `openapi.yaml` and `console/` at the repository root. The Swift
/// source is generated into the build directory on every build that changes an input; nothing generated
/// is committed. SwiftPM's `.embedInCode` resources would need the files inside each target's folder and
/// one declaration per file, so a new migration would mean editing Swift as well as adding its file.
@main
struct EmbedRepositoryFiles: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) async throws -> [Command] {
        let root = context.package.directoryURL
        // What each target compiles in: the constant's name, and its sources (files, or folders whose files
        // of some extensions it holds).
        let constant: String
        let sources: [EmbeddedSource]
        switch target.name {
        case "JobStore":
            constant = "embeddedMigrationFiles"
            sources = [.folder(root.appending(path: "migrations"), extensions: ["sql"])]
        case "CallbackService":
            // The API description, and the console's stylesheet and script (served from the binary, so
            // the console needs no CDN and its Content-Security-Policy can say 'self').
            constant = "embeddedServiceFiles"
            sources = [.file(root.appending(path: "openapi.yaml")), .folder(root.appending(path: "console"), extensions: ["css", "js"])]
        default:
            throw PluginError("EmbedRepositoryFiles does not know what to embed in target \(target.name)")
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "\(constant).swift")
        let files = try sources.flatMap { try $0.files() }
        return [
            .buildCommand(
                displayName: "Embedding \(sources.map(\.shownName).joined(separator: ", ")) in \(target.name)",
                executable: try context.tool(named: "embed-files").url,
                arguments: [constant, output.path] + sources.map(\.argument),
                // The folders too: SwiftPM keeps this command from build to build, and asks the plugin again
                // only when the package changes, so a file added to a folder later (a new migration) was not
                // embedded by an incremental build. A folder's modification time changes when a file is
                // added, removed or renamed in it, which runs the command again, and the tool lists the
                // folder then. The files are inputs for their edits.
                inputFiles: files + sources.compactMap(\.folder),
                outputFiles: [output]
            )
        ]
    }
}

/// What the plugin embeds: one file, or every file of a folder with one of `extensions`, sorted by name
/// (naming rules are checked where the files are parsed, e.g. `MigrationSet`, so a misnamed file fails the
/// tests instead of vanishing here). The tool reads the same form: a path, or `FOLDER/*.EXT[,EXT…]`.
enum EmbeddedSource {
    case file(URL)
    case folder(URL, extensions: [String])

    var argument: String {
        switch self {
        case .file(let url): url.path
        case .folder(let url, let extensions): "\(url.path)/*.\(extensions.joined(separator: ","))"
        }
    }

    /// As the build log shows it: `openapi.yaml`, `migrations/*.sql`.
    var shownName: String {
        switch self {
        case .file(let url): url.lastPathComponent
        case .folder(let url, let extensions): "\(url.path.split(separator: "/").last ?? "")/*.\(extensions.joined(separator: ","))"
        }
    }

    var folder: URL? {
        if case .folder(let url, _) = self { url } else { nil }
    }

    func files() throws -> [URL] {
        switch self {
        case .file(let url):
            return [url]
        case .folder(let url, let extensions):
            let names = try FileManager.default.contentsOfDirectory(atPath: url.path)
            return names.filter { extensions.contains(URL(fileURLWithPath: $0).pathExtension) }.sorted().map { url.appending(path: $0) }
        }
    }
}

struct PluginError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
