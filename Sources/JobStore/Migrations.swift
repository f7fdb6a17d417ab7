import Foundation
import Logging
import PostgresLibPQ
import TimeUnits

/// One schema change: a file `NNNN_description.sql` of the repository's `migrations/` folder.
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

    /// A migration from its file: `fileName` must be `NNNN_description.sql`, so a misnamed migration is
    /// refused instead of being silently skipped or misordered.
    public init(fileName: String, sql: String) throws(MigrationError) {
        let stem = fileName.hasSuffix(".sql") ? fileName.dropLast(4) : ""
        let digits = stem.prefix(while: \.isNumber)
        guard let version = Int(digits), stem.dropFirst(digits.count).first == "_" else {
            throw MigrationError("migration file \(fileName) is not named NNNN_description.sql")
        }
        self.init(version: version, name: String(stem.dropFirst(digits.count + 1)), sql: sql)
    }
}

/// Why the migrations could not be read or applied.
public struct MigrationError: Error, Sendable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { "MigrationError: \(message)" }
}

/// The ordered set of migrations a service applies.
public struct MigrationSet: Sendable {
    public var migrations: [Migration]

    /// The highest version in the set; `/readyz` requires the database to be at least this far.
    public var latestVersion: Int { migrations.last?.version ?? 0 }

    public init(migrations: [Migration]) throws(MigrationError) {
        let sorted = migrations.sorted { $0.version < $1.version }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where previous.version == next.version {
            throw MigrationError("two migrations share version \(next.version): \(previous.name) and \(next.name)")
        }
        // Read how each runs now, so a bad directive or an unnamed concurrent index fails at load, not half way.
        for migration in sorted {
            do {
                if try !MigrationScript.runsInTransaction(migration.sql) {
                    for statement in MigrationScript.statements(migration.sql) {
                        _ = try MigrationScript.concurrentIndexName(statement)
                    }
                }
            } catch {
                throw MigrationError("migration \(migration.version)_\(migration.name): \(error.message)")
            }
        }
        self.migrations = sorted
    }

    /// The migrations compiled into this build from the repository's `migrations/*.sql` (by the
    /// EmbedRepositoryFiles build-tool plugin): the service's schema, needing no file at run time.
    public static func embedded() throws(MigrationError) -> MigrationSet {
        try files(embeddedMigrationFiles, source: "the migrations compiled into this build")
    }

    /// Reads every `NNNN_description.sql` file of `directory`: the explicit override
    /// (`--migrations-dir`) of the embedded set. Other files are ignored.
    public static func load(from directory: URL) throws(MigrationError) -> MigrationSet {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw MigrationError("cannot read migrations directory \(directory.path): \(error.localizedDescription)")
        }
        var files: [(name: String, text: String)] = []
        for file in names where file.hasSuffix(".sql") {
            do {
                files.append((file, try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)))
            } catch {
                throw MigrationError("cannot read migration \(file): \(error.localizedDescription)")
            }
        }
        return try self.files(files, source: directory.path)
    }

    private static func files(_ files: [(name: String, text: String)], source: String) throws(MigrationError) -> MigrationSet {
        var migrations: [Migration] = []
        for file in files {
            migrations.append(try Migration(fileName: file.name, sql: file.text))
        }
        if migrations.isEmpty {
            throw MigrationError("no NNNN_description.sql files in \(source)")
        }
        return try MigrationSet(migrations: migrations)
    }
}

/// Bounds on how a migration waits for PostgreSQL's locks. `ci-callbackd` sets them from
/// `MIGRATION_LOCK_TIMEOUT` and `MIGRATION_LOCK_ATTEMPTS`.
public struct MigratorConfiguration: Sendable {
    /// PostgreSQL's `lock_timeout` for every migration statement: a statement that cannot take its lock
    /// this fast fails instead of queueing every writer of the table behind it.
    public var lockTimeout: Duration = .seconds(5)
    /// How often a migration is tried when its locks time out, before startup fails.
    public var lockAttempts: Int = 5
    /// The pause between two attempts, so the blocking transaction can end.
    public var retryDelay: Duration = .seconds(2)
    /// How often an instance checks whether another has finished migrating.
    public var advisoryLockPollInterval: Duration = .milliseconds(250)

    public init() {}
}

/// Applies migrations in order, recorded in `schema_migrations` with the checksum of their text.
///
/// A migration runs in one transaction, unless its first line is `-- ci-callbackd: no-transaction`: then
/// its statements run one by one, so an index can be built `CONCURRENTLY` while ingest keeps writing
/// (see `MigrationScript`). Every statement runs under `lock_timeout`; a migration whose lock times out
/// is tried again, then refused with what to do.
///
/// A session-level advisory lock serialises replicas that start together: the second waits for the
/// first, then finds nothing left to do. It waits by polling `pg_try_advisory_lock`, never by blocking
/// in `pg_advisory_lock`: a blocked statement holds a snapshot, and `CREATE INDEX CONCURRENTLY` waits
/// for every older snapshot, so the two would wait for each other. An applied migration whose text later
/// changed is refused, because the database no longer matches what the file says.
public struct Migrator: Sendable {
    /// Arbitrary constant shared by every replica: "ci-callbackd" folded into a bigint.
    static let advisoryLockKey: Int64 = 0x6369_6362_6b64_0001

    public var migrations: MigrationSet
    public var configuration: MigratorConfiguration
    public var logger: Logger
    /// Blocks the calling thread (a pool connection's own thread, never the cooperative pool).
    var sleep: @Sendable (Duration) -> Void = { duration in
        Thread.sleep(forTimeInterval: duration.inSeconds)
    }

    public init(migrations: MigrationSet, configuration: MigratorConfiguration = MigratorConfiguration(), logger: Logger) {
        self.migrations = migrations
        self.configuration = configuration
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
        try takeAdvisoryLock(connection)
        defer { _ = try? connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))") }
        let milliseconds = configuration.lockTimeout.inMilliseconds
        try connection.query("SELECT set_config('lock_timeout', \("\(max(milliseconds, 1))ms"), false)")
        defer { _ = try? connection.execute(simpleSQL: "RESET lock_timeout") }

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
                        "migration \(migration.version)_\(migration.name) was changed after it was applied (checksum \(recorded) in the database, \(checksum) in this build)"
                    )
                }
                continue
            }
            try withLockRetries(migration) {
                if try MigrationScript.runsInTransaction(migration.sql) {
                    try connection.transaction { connection in
                        try connection.execute(simpleSQL: migration.sql)
                        try record(migration, checksum: checksum, on: connection)
                    }
                } else {
                    try applyOutsideTransaction(migration, on: connection)
                    try record(migration, checksum: checksum, on: connection)
                }
            }
            logger.info("migration applied", metadata: ["migration.version": "\(migration.version)", "migration.name": "\(migration.name)"])
            appliedNow.append(migration.version)
        }
        return appliedNow
    }

    /// Waits for the advisory lock without holding a snapshot while waiting (see the type's comment).
    private func takeAdvisoryLock(_ connection: PostgresConnection) throws {
        var announced = false
        while try connection.query("SELECT pg_try_advisory_lock(\(Self.advisoryLockKey)) AS locked").first?["locked"].bool != true {
            if !announced {
                logger.info("waiting for another instance to finish migrating")
                announced = true
            }
            sleep(configuration.advisoryLockPollInterval)
        }
    }

    private func record(_ migration: Migration, checksum: String, on connection: PostgresConnection) throws {
        try connection.query(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (\(migration.version), \(migration.name), \(checksum))"
        )
    }

    /// Runs a no-transaction migration's statements one by one. Nothing is recorded until all succeed, so
    /// a migration that stops half way runs again from its first statement: such files must be safe to
    /// re-run (`IF NOT EXISTS`). An INVALID index left by a failed concurrent build is dropped first,
    /// since `IF NOT EXISTS` would take it for built.
    private func applyOutsideTransaction(_ migration: Migration, on connection: PostgresConnection) throws {
        for statement in MigrationScript.statements(migration.sql) {
            let index = try MigrationScript.concurrentIndexName(statement)
            if let index, try Self.indexValidity(index, on: connection) == false {
                logger.warning(
                    "dropping the invalid index a failed concurrent build left, to build it again",
                    metadata: ["migration.version": "\(migration.version)", "index": "\(index)"])
                // The name comes from a migration file compiled into the binary (or the operator's override).
                try connection.execute(simpleSQL: "DROP INDEX CONCURRENTLY IF EXISTS \(index)")
            }
            try connection.execute(simpleSQL: statement)
            if let index, try Self.indexValidity(index, on: connection) != true {
                throw MigrationError("migration \(migration.version)_\(migration.name) left index \(index) invalid or missing")
            }
        }
    }

    /// Whether the index `name` (as written in SQL) is valid; `nil` when there is no such index.
    public static func indexValidity(_ name: String, on connection: PostgresConnection) throws -> Bool? {
        try connection.query("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(\(name))").first?["indisvalid"].bool
    }

    /// Runs `apply` until it succeeds, tries again while its locks time out, and then fails with advice.
    private func withLockRetries(_ migration: Migration, _ apply: () throws -> Void) throws {
        var attempt = 1
        while true {
            do {
                return try apply()
            } catch let error as PostgresError where error.sqlState == "55P03" {
                guard attempt < configuration.lockAttempts else {
                    throw MigrationError(
                        """
                        migration \(migration.version)_\(migration.name) could not take its locks within lock_timeout \
                        (\(configuration.lockTimeout)) in \(attempt) attempts, and was not recorded: a long transaction or a \
                        conflicting lock is in the way (see pg_stat_activity and pg_locks). End it, or raise \
                        MIGRATION_LOCK_TIMEOUT or MIGRATION_LOCK_ATTEMPTS, then start again. Last error: \(error)
                        """)
                }
                logger.warning(
                    "a migration's lock timed out; trying again",
                    metadata: [
                        "migration.version": "\(migration.version)", "attempt": "\(attempt)",
                        "attempts": "\(configuration.lockAttempts)", "error": "\(error)",
                    ])
                attempt += 1
                sleep(configuration.retryDelay)
            }
        }
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

extension Migrator {
    /// Opens a connection of its own to `conninfo` (``PostgresConnectionSettings/forMigrations(ioTimeout:)``:
    /// no statement timeout), applies every missing migration when `applying` (else only checks that the
    /// database answers), and closes it; returns the versions applied now.
    ///
    /// - Throws: ``StoreUnavailableError`` when the database cannot be reached (its
    ///   ``StoreFailureDetail/refusal`` says when retrying cannot help), ``MigrationError``, or the
    ///   statement's own error.
    @discardableResult
    public func migrate(conninfo: String, settings: PostgresConnectionSettings, applying: Bool = true) async throws -> [Int] {
        var configuration = PostgresPool.Configuration(conninfo: conninfo)
        configuration.size = 1
        configuration.connection = settings.forMigrations()
        let pool = PostgresPool(configuration: configuration, logger: logger)
        do {
            let applied = try await StoreUnavailableError.translatingErrors {
                try await pool.withConnection { connection in applying ? try self.migrate(connection) : [] }
            }
            await pool.close()
            return applied
        } catch {
            await pool.close()
            throw error
        }
    }
}
