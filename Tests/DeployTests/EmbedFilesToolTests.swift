import Foundation
import TestSupport
import Testing

/// The tool the EmbedRepositoryFiles plugin runs. SwiftPM plans a build-tool plugin's command once and
/// keeps it until the package changes, so the command names folders, not their files: the tool lists a
/// folder when it runs (a migration added since the last plan is embedded) and the plugin makes the folder
/// an input, whose modification time changes when a file is added, removed or renamed in it.
@Suite("embed-files tool")
struct EmbedFilesToolTests {
    /// Runs `embed-files CONSTANT OUTPUT SOURCE...`; returns the generated Swift.
    static func run(_ sources: [String], in folder: URL) throws -> String {
        let output = folder.appending(path: "embedded.swift")
        let process = Process()
        process.executableURL = try builtProduct("embed-files")
        process.arguments = ["embeddedForTest", output.path] + sources
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0)
        return try String(contentsOf: output, encoding: .utf8)
    }

    /// A new empty folder; the caller removes it.
    static func temporaryFolder() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appending(path: "embed-files-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    @Test func folderSource_IsListedWhenTheToolRuns_AFileAddedLaterIsEmbedded_OthersExtensionsNot() throws {
        let root = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let migrations = root.appending(path: "migrations")
        try FileManager.default.createDirectory(at: migrations, withIntermediateDirectories: true)
        try "SELECT 1;\n".write(to: migrations.appending(path: "0002_second.sql"), atomically: true, encoding: .utf8)
        try "notes\n".write(to: migrations.appending(path: "README.md"), atomically: true, encoding: .utf8)
        let sources = ["\(migrations.path)/*.sql"]

        let before = try Self.run(sources, in: root)
        #expect(before.contains("\"0002_second.sql\"") && !before.contains("README.md"))

        // Added after the command was planned: the same arguments embed it, in name order.
        try "SELECT 0;\n".write(to: migrations.appending(path: "0001_first.sql"), atomically: true, encoding: .utf8)
        let after = try Self.run(sources, in: root)
        let first = try #require(after.range(of: "\"0001_first.sql\""))
        let second = try #require(after.range(of: "\"0002_second.sql\""))
        #expect(first.lowerBound < second.lowerBound)
        #expect(after.contains("SELECT 0;") && !after.contains("README.md"))
    }

    @Test func sources_AreEmbeddedInTheOrderGiven_AFoldersFilesByName() throws {
        let root = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(at: root) }
        let console = root.appending(path: "console")
        try FileManager.default.createDirectory(at: console, withIntermediateDirectories: true)
        try "b {}\n".write(to: console.appending(path: "b.css"), atomically: true, encoding: .utf8)
        try "a();\n".write(to: console.appending(path: "a.js"), atomically: true, encoding: .utf8)
        try "openapi: 3.1.0\n".write(to: root.appending(path: "openapi.yaml"), atomically: true, encoding: .utf8)

        let swift = try Self.run([root.appending(path: "openapi.yaml").path, "\(console.path)/*.css,js"], in: root)
        let names = ["\"openapi.yaml\"", "\"a.js\"", "\"b.css\""].map { swift.range(of: $0)?.lowerBound }
        #expect(names.allSatisfy { $0 != nil })
        #expect(names.compactMap { $0 } == names.compactMap { $0 }.sorted())
    }
}
