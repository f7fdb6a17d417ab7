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
        // What each target compiles in: the constant's name and the package-relative files it holds.
        let constant: String
        let files: [URL]
        switch target.name {
        case "JobStore":
            constant = "embeddedMigrationFiles"
            files = try sqlFiles(in: root.appending(path: "migrations"))
        case "CallbackService":
            // The API description, and the console's stylesheet and script (served from the binary, so
            // the console needs no CDN and its Content-Security-Policy can say 'self').
            constant = "embeddedServiceFiles"
            files = [root.appending(path: "openapi.yaml")] + (try assetFiles(in: root.appending(path: "console")))
        default:
            throw PluginError("EmbedRepositoryFiles does not know what to embed in target \(target.name)")
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "\(constant).swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.map(\.lastPathComponent).joined(separator: ", ")) in \(target.name)",
                executable: try context.tool(named: "embed-files").url,
                arguments: [constant, output.path] + files.map(\.path),
                inputFiles: files,
                outputFiles: [output]
            )
        ]
    }

    /// Every `.css` and `.js` file of `directory`, sorted by name.
    private func assetFiles(in directory: URL) throws -> [URL] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        return names.filter { $0.hasSuffix(".css") || $0.hasSuffix(".js") }.sorted().map { directory.appending(path: $0) }
    }

    /// Every `.sql` file of `directory`, sorted by name; naming rules are checked where the migrations are
    /// parsed (`MigrationSet`), so a misnamed file fails the tests instead of vanishing here.
    private func sqlFiles(in directory: URL) throws -> [URL] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        return names.filter { $0.hasSuffix(".sql") }.sorted().map { directory.appending(path: $0) }
    }
}

struct PluginError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
