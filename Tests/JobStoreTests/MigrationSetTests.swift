import Foundation
import Testing

@testable import JobStore

/// The migrations compiled into the build, and the rules for migration files, without a database.
@Suite("Migration set")
struct MigrationSetTests {
    /// The repository: this file is `Tests/JobStoreTests/MigrationSetTests.swift`.
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func embeddedMigrations_AreTheRepositoryFilesByteForByte() throws {
        let embedded = try MigrationSet.embedded()
        let onDisk = try MigrationSet.load(from: Self.repositoryRoot.appendingPathComponent("migrations"))
        #expect(embedded.migrations.map(\.version) == onDisk.migrations.map(\.version))
        #expect(embedded.migrations.map(\.name) == onDisk.migrations.map(\.name))
        for (compiled, file) in zip(embedded.migrations, onDisk.migrations) {
            // Checksums recorded in production databases are of these bytes: one changed byte refuses startup.
            #expect(Array(compiled.sql.utf8) == Array(file.sql.utf8), "migration \(file.version)_\(file.name) differs from its file")
        }
        #expect(embedded.latestVersion == onDisk.latestVersion)
    }

    @Test func migrationFile_NamedNNNNDescription_GivesVersionAndName() throws {
        let migration = try Migration(fileName: "0012_add_index.sql", sql: "SELECT 1")
        #expect(migration.version == 12)
        #expect(migration.name == "add_index")
    }

    @Test(arguments: ["add_index.sql", "0012add_index.sql", "0012_add_index.txt", "v12_add_index.sql"])
    func migrationFile_Misnamed_IsRefused(fileName: String) {
        #expect(throws: MigrationError.self) { try Migration(fileName: fileName, sql: "SELECT 1") }
    }

    @Test func migrationSet_TwoFilesWithOneVersion_IsRefused() throws {
        let first = try Migration(fileName: "0002_a.sql", sql: "")
        let second = try Migration(fileName: "0002_b.sql", sql: "")
        #expect(throws: MigrationError.self) { try MigrationSet(migrations: [first, second]) }
    }
}
