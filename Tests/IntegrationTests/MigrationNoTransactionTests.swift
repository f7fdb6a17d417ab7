import Foundation
import JobStore
import Logging
import PostgresLibPQ
import Synchronization
import TestSupport
import Testing

/// Migrations marked `-- ci-callbackd: no-transaction` build indexes `CONCURRENTLY`, under `lock_timeout`,
/// against a real service taking callbacks: ingest never waits for them.
@Suite("Migrations outside a transaction", .serialized)
struct MigrationNoTransactionTests {
    static let indexName = "ci_callback_digests_test_idx"

    /// A migration after the shipped ones that builds an index on a large table that every callback writes
    /// (ci_callback_digests: ci_callbacks is partitioned, and PostgreSQL builds no index CONCURRENTLY on one).
    static func setWithConcurrentIndex() throws -> MigrationSet {
        let index = try Migration(
            fileName: "9001_concurrent_test_index.sql",
            sql: """
                -- ci-callbackd: no-transaction
                -- Sorting against the rows' order makes the build take long enough to be seen.
                CREATE INDEX CONCURRENTLY IF NOT EXISTS \(indexName) ON ci_callback_digests (last_received_at, body_sha256 DESC);
                """)
        return try MigrationSet(migrations: MigrationSet.embedded().migrations + [index])
    }

    @Test(.timeLimit(.minutes(5)))
    func concurrentIndex_OnAMillionRowsWhileCallbacksArrive_EveryCallbackAnswered200AndIndexValid() async throws {
        let harness = try await ServiceHarness.start()
        let migrationPool = Self.pool(schema: harness.schema, size: 3)
        defer { try? harness.dropSchema() }
        do {
            try await migrationPool.withConnection { connection in
                // One statement, generated rows. Small ascending keys instead of real SHA-256 digests keep the
                // unique index's inserts at its right edge: half the time of random digests.
                try connection.execute(
                    simpleSQL: """
                        INSERT INTO ci_callback_digests (body_sha256, received_at, last_received_at)
                        SELECT int8send(n), now(), now()
                        FROM generate_series(1, 1000000) AS n
                        """)
            }
            let ingest = IngestLoad()
            let posters = (0..<4).map { _ in Task { await ingest.post(to: harness) } }
            let progress = Task { try await Self.watchIndexBuild(pool: migrationPool, schema: harness.schema, into: ingest) }
            defer {
                ingest.stop()
                progress.cancel()
            }
            try await ingest.waitForAnswers(20)

            // Two replicas starting together: one builds the index, the other waits for it, and neither
            // holds a snapshot the concurrent build would wait for.
            let migrations = try Self.setWithConcurrentIndex()
            var configuration = MigratorConfiguration()
            configuration.lockTimeout = .seconds(10)
            let migrator = Migrator(migrations: migrations, configuration: configuration, logger: serviceTestLogger)
            async let first = migrationPool.withConnection { connection in try migrator.migrate(connection) }
            async let second = migrationPool.withConnection { connection in try migrator.migrate(connection) }
            let applied = try await [first, second]
            try await ingest.waitForAnswers(ingest.answered + 20)
            ingest.stop()
            for poster in posters { await poster.value }
            progress.cancel()

            #expect(applied.sorted { $0.count < $1.count } == [[], [9001]])
            let outcome = ingest.outcome()
            #expect(outcome.statuses.keys.sorted() == [200], "statuses while the index was built: \(outcome.statuses)")
            let build = try #require(outcome.buildSeen, "the index build was never seen in pg_stat_progress_create_index")
            // A blocking CREATE INDEX would hold every insert until it ends: none could start and finish inside.
            let during = outcome.intervals.filter { $0.start > build.lowerBound && $0.end < build.upperBound }.count
            #expect(during >= 5, "only \(during) callbacks were stored while the index was being built")
            let valid = try await migrationPool.withConnection { connection in
                try Migrator.indexValidity(Self.indexName, on: connection)
            }
            #expect(valid == true)
            let rows = try await migrationPool.withConnection { connection in
                try connection.query("SELECT count(*)::int AS n FROM schema_migrations WHERE version = 9001").first?["n"].int
            }
            #expect(rows == 1)
        } catch {
            await migrationPool.close()
            await harness.stop()
            throw error
        }
        await migrationPool.close()
        await harness.stop()
    }

    @Test(.timeLimit(.minutes(3)))
    func concurrentIndex_LockTimeoutLeavesInvalidIndex_RetryDropsAndRebuildsIt() async throws {
        let harness = try await ServiceHarness.start()
        let pool = Self.pool(schema: harness.schema, size: 3)
        defer { try? harness.dropSchema() }
        do {
            try await harness.post("/v1/callbacks", Array(#"{"JobsDetail":{"JobId":"j00000000000000000000000000000001","State":"Running"}}"#.utf8))
            // An open REPEATABLE READ transaction holds a snapshot: a concurrent build waits for it to end
            // before the index can be valid.
            let blocker = try PostgresConnection.connect(conninfo(testDatabaseURL, searchPath: harness.schema))
            defer { blocker.close() }
            try blocker.execute(simpleSQL: "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM ci_jobs")

            var configuration = MigratorConfiguration()
            configuration.lockTimeout = .milliseconds(300)
            configuration.lockAttempts = 1
            let once = Migrator(migrations: try Self.setWithConcurrentIndex(), configuration: configuration, logger: serviceTestLogger)
            let refusal = await #expect(throws: MigrationError.self) {
                try await pool.withConnection { connection in try once.migrate(connection) }
            }
            #expect(refusal?.message.contains("lock_timeout") == true)
            #expect(refusal?.message.contains("MIGRATION_LOCK_TIMEOUT") == true)
            let left = try await pool.withConnection { connection in try Migrator.indexValidity(Self.indexName, on: connection) }
            #expect(left == false, "the failed build should have left an invalid index")
            let recorded = try await pool.withConnection { connection in try Migrator.currentVersion(connection) }
            #expect(recorded == (try MigrationSet.embedded().latestVersion))

            // Retrying: the first attempts time out again until the blocker ends; then the invalid index
            // is dropped and built again, valid.
            configuration.lockAttempts = 100
            configuration.retryDelay = .milliseconds(100)
            let retrying = Migrator(migrations: try Self.setWithConcurrentIndex(), configuration: configuration, logger: serviceTestLogger)
            let invalid = try await pool.withConnection { connection in try Self.indexOID(connection) }
            let migration = Task { try await pool.withConnection { connection in try retrying.migrate(connection) } }
            // A retry has met the blocker once the index was dropped and built again (another oid); then end it.
            let deadline = ContinuousClock.now.advanced(by: .seconds(60))
            while try await pool.withConnection({ connection in try Self.indexOID(connection) }).map({ $0 == invalid }) ?? true {
                try #require(ContinuousClock.now < deadline, "the retrying migration never rebuilt the index")
                try await Task.sleep(for: .milliseconds(20))
            }
            try blocker.execute(simpleSQL: "COMMIT")
            #expect(try await migration.value == [9001])
            let rebuilt = try await pool.withConnection { connection in try Migrator.indexValidity(Self.indexName, on: connection) }
            #expect(rebuilt == true)
        } catch {
            await pool.close()
            await harness.stop()
            throw error
        }
        await pool.close()
        await harness.stop()
    }

    static func indexOID(_ connection: PostgresConnection) throws -> Int? {
        try connection.query("SELECT to_regclass(\(indexName))::oid::int8 AS oid").first?["oid"].int
    }

    static func pool(schema: String, size: Int) -> PostgresPool {
        var configuration = PostgresPool.Configuration(conninfo: conninfo(testDatabaseURL, searchPath: schema))
        configuration.size = size
        // Migrations and the 1 M-row preload run without the service's statement timeout, as `serve` runs them.
        configuration.connection = configuration.connection.forMigrations()
        return PostgresPool(configuration: configuration, logger: serviceTestLogger)
    }

    /// Notes when an index build on the schema's ci_callback_digests is seen in progress.
    static func watchIndexBuild(pool: PostgresPool, schema: String, into load: IngestLoad) async throws {
        while !Task.isCancelled {
            let asked = ContinuousClock.now
            let building = try await pool.withConnection { connection in
                try connection.query(
                    "SELECT count(*)::int AS n FROM pg_stat_progress_create_index WHERE relid = to_regclass(\(schema + ".ci_callback_digests"))"
                ).first?["n"].int ?? 0
            }
            if building > 0 { load.noteBuild(runningAfter: asked, runningBefore: .now) }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Callbacks posted back to back by a few clients, each with its status and when it started and ended.
final class IngestLoad: Sendable {
    struct Outcome {
        var statuses: [Int: Int] = [:]
        var intervals: [(start: ContinuousClock.Instant, end: ContinuousClock.Instant)] = []
        /// A span inside the index build: from after it was first seen running to before it was last seen.
        var buildSeen: Range<ContinuousClock.Instant>?
        var stopped = false
    }

    // Shared by the posting tasks, the progress watcher and the test.
    private let state = Mutex(Outcome())

    var answered: Int { state.withLock { $0.intervals.count } }

    func outcome() -> Outcome { state.withLock { $0 } }

    func stop() { state.withLock { $0.stopped = true } }

    /// One look at the progress view found the build running at some moment between the two instants.
    func noteBuild(runningAfter asked: ContinuousClock.Instant, runningBefore answered: ContinuousClock.Instant) {
        state.withLock { outcome in
            let start = outcome.buildSeen?.lowerBound ?? answered
            outcome.buildSeen = start..<max(start, asked)
        }
    }

    func post(to harness: ServiceHarness) async {
        while !state.withLock({ $0.stopped }) {
            let jobID = RequestIDForTests.jobID()
            let body = #"{"EventName":"TaskFinish","JobsDetail":{"JobId":"\#(jobID)","State":"Running","Tag":"ExtractDigitalWatermark"}}"#
            let start = ContinuousClock.now
            let status = (try? await harness.post("/v1/callbacks", Array(body.utf8), contentType: "application/json").status) ?? -1
            let end = ContinuousClock.now
            state.withLock {
                $0.statuses[status, default: 0] += 1
                $0.intervals.append((start, end))
            }
        }
    }

    /// Waits (up to two minutes) until `count` callbacks have been answered.
    func waitForAnswers(_ count: Int) async throws {
        let deadline = ContinuousClock.now.advanced(by: .seconds(120))
        while answered < count {
            try #require(ContinuousClock.now < deadline, "only \(answered) of \(count) callbacks answered in time")
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}
