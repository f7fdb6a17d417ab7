import Foundation
import Logging
import PostgresLibPQ

/// One schema change, read from `migrations/NNNN_description.sql`.
public struct Migration: Sendable, Hashable {
    /// The `NNNN` prefix: migrations apply in ascending order of version.
    public var version: Int
    /// The file name without its version and extension, e.g. `create_jobs_and_callbacks`.
    public var name: String
    public var sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Why the migrations could not be read or applied.
public struct MigrationError: Error, Sendable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { "MigrationError: \(message)" }
}

/// The ordered set of migrations shipped with the service.
public struct MigrationSet: Sendable {
    public var migrations: [Migration]

    /// The highest version in the set; `/readyz` requires the database to be at least this far.
    public var latestVersion: Int { migrations.last?.version ?? 0 }

    public init(migrations: [Migration]) throws(MigrationError) {
        let sorted = migrations.sorted { $0.version < $1.version }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where previous.version == next.version {
            throw MigrationError("two migrations share version \(next.version): \(previous.name) and \(next.name)")
        }
        self.migrations = sorted
    }

    /// Reads every `NNNN_description.sql` file of `directory`. Other files are ignored; a `.sql` file whose
    /// name does not start with a number is an error, so a misnamed migration is never silently skipped.
    public static func load(from directory: URL) throws(MigrationError) -> MigrationSet {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw MigrationError("cannot read migrations directory \(directory.path): \(error.localizedDescription)")
        }
        var migrations: [Migration] = []
        for file in names where file.hasSuffix(".sql") {
            let stem = file.dropLast(4)
            let digits = stem.prefix(while: \.isNumber)
            guard let version = Int(digits), stem.dropFirst(digits.count).first == "_" else {
                throw MigrationError("migration file \(file) is not named NNNN_description.sql")
            }
            let sql: String
            do {
                sql = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            } catch {
                throw MigrationError("cannot read migration \(file): \(error.localizedDescription)")
            }
            migrations.append(Migration(version: version, name: String(stem.dropFirst(digits.count + 1)), sql: sql))
        }
        if migrations.isEmpty {
            throw MigrationError("no NNNN_description.sql files in \(directory.path)")
        }
        return try MigrationSet(migrations: migrations)
    }

    /// Finds the migrations directory: an explicit path wins; otherwise `./migrations`, then the folders a
    /// package or container install uses next to the executable.
    public static func locateDirectory(explicit: String?, executablePath: String = CommandLine.arguments[0]) throws(MigrationError) -> URL {
        if let explicit {
            return URL(fileURLWithPath: explicit, isDirectory: true)
        }
        let executableDirectory = URL(fileURLWithPath: executablePath).resolvingSymlinksInPath().deletingLastPathComponent()
        let candidates = [
            URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent("migrations"),
            executableDirectory.appendingPathComponent("migrations"),
            executableDirectory.appendingPathComponent("../share/ci-callbackd/migrations").standardized,
        ]
        var isDirectory: ObjCBool = false
        for candidate in candidates where FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return candidate }
        }
        throw MigrationError(
            "no migrations directory found (looked in \(candidates.map(\.path).joined(separator: ", "))); set MIGRATIONS_DIR or --migrations-dir"
        )
    }
}

/// Applies migrations in order, each in its own transaction, recorded in `schema_migrations`.
///
/// A session-level advisory lock serialises replicas that start together: the second waits for the
/// first, then finds nothing left to do. An applied migration whose file later changed is refused,
/// because the database no longer matches what the file says.
public struct Migrator: Sendable {
    /// Arbitrary constant shared by every replica: "ci-callbackd" folded into a bigint.
    static let advisoryLockKey: Int64 = 0x6369_6362_6b64_0001

    public var migrations: MigrationSet
    public var logger: Logger

    public init(migrations: MigrationSet, logger: Logger) {
        self.migrations = migrations
        self.logger = logger
    }

    /// Applies every migration the database lacks; returns the versions applied now.
    ///
    /// The connection's `statement_timeout` is off while migrating (a migration may rewrite a large table,
    /// and the lock waits for other replicas' migrations) and restored afterwards; its I/O deadline still
    /// applies, so give it a long one (``PostgresConnectionSettings/forMigrations(ioTimeout:)``).
    @discardableResult
    public func migrate(_ connection: PostgresConnection) throws -> [Int] {
        let statementTimeout = try connection.query("SELECT current_setting('statement_timeout') AS value").first?["value"].string ?? "0"
        try connection.execute(simpleSQL: "SET statement_timeout = 0")
        defer { _ = try? connection.query("SELECT set_config('statement_timeout', \(statementTimeout), false)") }
        try connection.query("SELECT pg_advisory_lock(\(Self.advisoryLockKey))")
        defer { _ = try? connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))") }

        try connection.execute(
            simpleSQL: """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text        NOT NULL,
                    checksum   text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
        )
        var applied: [Int: String] = [:]
        for row in try connection.query("SELECT version, checksum FROM schema_migrations") {
            let row = StrictRow(row, read: "applied migrations")
            applied[try row.int("version")] = try row.string("checksum")
        }

        var appliedNow: [Int] = []
        for migration in migrations.migrations {
            let checksum = try StrictRow(
                connection.query("SELECT encode(sha256(convert_to(\(migration.sql), 'UTF8')), 'hex') AS checksum")[0], read: "migration checksum"
            ).string("checksum")
            if let recorded = applied[migration.version] {
                guard recorded == checksum else {
                    throw MigrationError(
                        "migration \(migration.version)_\(migration.name) was changed after it was applied (checksum \(recorded) in the database, \(checksum) on disk)"
                    )
                }
                continue
            }
            try connection.transaction { connection in
                try connection.execute(simpleSQL: migration.sql)
                try connection.query(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (\(migration.version), \(migration.name), \(checksum))"
                )
            }
            logger.info("migration applied", metadata: ["migration.version": "\(migration.version)", "migration.name": "\(migration.name)"])
            appliedNow.append(migration.version)
        }
        return appliedNow
    }

    /// The highest applied version, or 0 when the schema has never been migrated.
    public static func currentVersion(_ connection: PostgresConnection) throws -> Int {
        // The table name is resolved when a statement is planned, so its existence is checked first.
        let exists = try connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
        guard try StrictRow(exists[0], read: "schema version").bool("present") else { return 0 }
        return try StrictRow(
            connection.query("SELECT coalesce(max(version), 0) AS version FROM schema_migrations")[0], read: "schema version"
        ).int("version")
    }
}
