import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

/// PostgreSQL behind a ``FaultProxy``: silent (a blackhole), or losing the answer to a commit that landed.
///
/// The proxy forwards to the test cluster's TCP port (`scripts/pg-cluster` listens on 127.0.0.1 as well as
/// on its Unix socket). The service gets short timeouts, so each fault is over in seconds.
@Suite("PostgreSQL faults", .serialized)
struct DatabaseFaultTests {
    /// The test cluster's port and database, read from the test URL (`…?host=…&port=N`).
    static let cluster: (port: Int, database: String) = {
        let components = URLComponents(string: testDatabaseURL)
        let port = components?.queryItems?.first { $0.name == "port" }?.value.flatMap(Int.init) ?? components?.port ?? 54329
        let database = String(components?.path.dropFirst() ?? "")
        return (port, database.isEmpty ? "ci_callbackd_test" : database)
    }()

    /// Short bounds, so a blackhole is noticed in about two seconds.
    static let settings: PostgresConnectionSettings = {
        var settings = PostgresConnectionSettings()
        settings.connectTimeout = .seconds(2)
        settings.ioTimeout = .seconds(2)
        settings.statementTimeout = .seconds(1)
        return settings
    }()

    static func callback(_ jobID: String, state: String = "Success") -> [UInt8] {
        Array(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"\#(state)","Tag":"ExtractDigitalWatermark","Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1","Message":"m"}}}}"#.utf8)
    }

    /// A service whose every connection goes through a fresh proxy; both are stopped afterwards.
    static func withProxiedService(_ body: (ServiceHarness, FaultProxy) async throws -> Void) async throws {
        let proxy = try FaultProxy(upstreamPort: cluster.port)
        let service: ServiceHarness
        do {
            service = try await ServiceHarness.start(
                databaseURL: proxy.databaseURL(database: cluster.database), connection: settings, acquireTimeout: .seconds(3))
        } catch {
            await proxy.stop()
            throw error
        }
        do {
            try await body(service, proxy)
        } catch {
            proxy.mode = .forward
            await service.stop()
            try? service.dropSchema()
            await proxy.stop()
            throw error
        }
        proxy.mode = .forward
        await service.stop()
        try service.dropSchema()
        await proxy.stop()
    }

    /// What is stored for a body, read on a direct connection (not through the proxy).
    static func storedDeliveries(schema: String, jobID: String) throws -> [Int] {
        let connection = try PostgresConnection.connect(testDatabaseURL)
        defer { connection.close() }
        return try connection.query(
            "SELECT d.delivery_count FROM \(unsafeRaw: schema).ci_callbacks c JOIN \(unsafeRaw: schema).ci_callback_digests d USING (body_sha256) WHERE convert_from(c.body, 'UTF8') LIKE '%' || \(jobID) || '%'"
        ).map { $0["delivery_count"].int ?? 0 }
    }

    static func seconds(_ duration: Duration) -> String {
        String(format: "%.2f s", Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }

    // MARK: Connection level

    /// Runs blocking libpq calls on a thread of their own: waits of seconds on the cooperative pool would
    /// stall every other test running in parallel.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
        }
    }

    /// The error `body` throws, or nil.
    static func failure(_ body: () throws -> Void) -> PostgresError? {
        do {
            try body()
            return nil
        } catch {
            return error as? PostgresError
        }
    }

    @Test func connection_BlackholedServer_throwsServerTimeoutWithinIOTimeout_andIsDiscarded() async throws {
        let proxy = try FaultProxy(upstreamPort: Self.cluster.port)
        let url = proxy.databaseURL(database: Self.cluster.database)
        let (error, elapsed, healthy) = try await Self.blocking { () throws -> (PostgresError?, Duration, Bool) in
            let connection = try PostgresConnection.connect(url, settings: Self.settings)
            defer { connection.close() }
            try connection.query("SELECT 1")
            proxy.mode = .blackhole
            let started = ContinuousClock.now
            let error = Self.failure { try connection.query("SELECT 1") }
            return (error, started.duration(to: .now), connection.isHealthy)
        }
        proxy.mode = .forward
        await proxy.stop()
        #expect(error?.code == .serverTimeout)
        #expect(error?.isConnectionProblem == true)
        #expect(elapsed >= .seconds(1.9) && elapsed < .seconds(8), "waited \(elapsed)")
        #expect(!healthy)
    }

    @Test func connection_BlackholedCommit_marksOutcomeUnknown_butNotInsideATransactionBlock() async throws {
        let proxy = try FaultProxy(upstreamPort: Self.cluster.port)
        let url = proxy.databaseURL(database: Self.cluster.database)
        let (statement, pipeline, rolledBack) = try await Self.blocking { () throws -> (PostgresError?, PostgresError?, PostgresError?) in
            let autocommit = try PostgresConnection.connect(url, settings: Self.settings)
            let pipelined = try PostgresConnection.connect(url, settings: Self.settings)
            let inBlock = try PostgresConnection.connect(url, settings: Self.settings)
            defer { for connection in [autocommit, pipelined, inBlock] { connection.close() } }
            // Prepared beforehand, so the blackholed round trip is the statement's own, not its preparation.
            try autocommit.query("SELECT 1")
            try inBlock.query("SELECT 1")
            try inBlock.execute(simpleSQL: "BEGIN")
            proxy.mode = .blackhole
            return (
                Self.failure { try autocommit.query("SELECT 1") },
                Self.failure { _ = try pipelined.pipeline(["SELECT 1", "SELECT 2"]) },
                Self.failure { try inBlock.query("SELECT 1") }
            )
        }
        proxy.mode = .forward
        await proxy.stop()
        // A statement outside a block commits by itself, a pipeline at its Sync: losing the answer leaves
        // the outcome unknown.
        #expect(statement?.code == .serverTimeout)
        #expect(statement?.outcomeUnknown == true)
        #expect(pipeline?.code == .serverTimeout)
        #expect(pipeline?.outcomeUnknown == true)
        // Inside a block nothing commits until COMMIT: the transaction is certainly lost.
        #expect(rolledBack?.code == .serverTimeout)
        #expect(rolledBack?.outcomeUnknown == false)
    }

    @Test func connection_StatementTimeoutCancelsALongStatement_andTheConnectionStaysUsable() throws {
        var settings = PostgresConnectionSettings()
        settings.statementTimeout = .milliseconds(300)
        let connection = try PostgresConnection.connect(testDatabaseURL, settings: settings)
        defer { connection.close() }
        let error = #expect(throws: PostgresError.self) { try connection.query("SELECT pg_sleep(5)") }
        #expect(error?.sqlState == "57014")
        #expect(error?.isStatementTimeout == true)
        #expect(connection.isHealthy)
        #expect(try connection.query("SELECT current_setting('statement_timeout') AS value").first?["value"].string == "300ms")
    }

    /// JIT compilation is triggered by a statement's estimated cost, and every statement here is a short,
    /// indexed one: compiling only costs time (83 ms for a delivery lease that took under 1 ms to run).
    @Test func connection_JITIsOff_whateverTheServerDefault() throws {
        let connection = try PostgresConnection.connect(testDatabaseURL, settings: PostgresConnectionSettings())
        defer { connection.close() }
        #expect(try connection.query("SELECT current_setting('jit') AS value").first?["value"].string == "off")
    }

    @Test func settings_MigrationsHaveNoStatementTimeoutAndALongDeadline_andLibpqKeysAreWholeUnits() {
        var settings = PostgresConnectionSettings()
        settings.connectTimeout = .milliseconds(1500)
        let migration = settings.forMigrations()
        #expect(migration.statementTimeout == .zero)
        #expect(migration.ioTimeout == .seconds(3600))
        #expect(migration.statementTimeoutSQL == "SET statement_timeout = 0")
        #expect(settings.statementTimeoutSQL == "SET statement_timeout = 5000")
        let keys = Dictionary(uniqueKeysWithValues: settings.libpqParameters.map { ($0.key, $0.value) })
        #expect(keys["connect_timeout"] == "2")
        #expect(keys["keepalives"] == "1")
        #expect(keys["keepalives_idle"] == "10")
        #expect(keys["keepalives_interval"] == "5")
        #expect(keys["keepalives_count"] == "3")
        #expect(keys["tcp_user_timeout"] == "8000")
    }

    // MARK: Service level

    @Test func blackholedDatabase_ingestAndLookupsAnswer503Quickly_andEverythingRecoversWithoutRestart() async throws {
        try await Self.withProxiedService { service, proxy in
            let known = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks", Self.callback(known)).status == 200)
            #expect(try await service.get("/v1/jobs/\(known)").status == 200)
            #expect(try await service.get("/readyz").status == 200)

            proxy.mode = .blackhole
            let blackholed = ContinuousClock.now
            // More requests than pooled connections (4): some wait for a connection, some hold one.
            let replies = try await withThrowingTaskGroup(of: (String, ServiceHarness.Reply, Duration).self) { group in
                for index in 0..<6 {
                    group.addTask {
                        ("ingest", try await service.post("/v1/callbacks", Self.callback(RequestIDForTests.jobID())), blackholed.duration(to: .now))
                    }
                    group.addTask {
                        let path = index % 2 == 0 ? "/v1/jobs/\(known)" : "/v1/jobs/\(known)/callbacks"
                        return ("lookup", try await service.get(path), blackholed.duration(to: .now))
                    }
                }
                group.addTask { ("list", try await service.get("/v1/jobs?limit=5"), blackholed.duration(to: .now)) }
                group.addTask { ("readyz", try await service.get("/readyz"), blackholed.duration(to: .now)) }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            for (kind, reply, elapsed) in replies {
                #expect(reply.status == 503, "\(kind): \(reply.status) \(reply.text)")
                #expect(elapsed < .seconds(10), "\(kind) answered after \(elapsed)")
                if kind != "readyz" {
                    #expect(reply.header("Retry-After") != nil, "\(kind) without Retry-After")
                    let code = try reply.json()["Error"].flatMap { ($0 as? [String: Any])?["Code"] as? String }
                    #expect(code == "DatabaseUnavailable" || code == "OutcomeUnknown", "\(kind): \(reply.text)")
                }
            }
            let fastest = replies.map(\.2).min() ?? .zero
            let slowest = replies.map(\.2).max() ?? .zero

            proxy.mode = .forward
            let restored = ContinuousClock.now
            var recovery: Duration?
            while recovery == nil && restored.duration(to: .now) < .seconds(15) {
                let jobID = RequestIDForTests.jobID()
                let ingest = try await service.post("/v1/callbacks", Self.callback(jobID))
                if ingest.status == 200, try await service.get("/v1/jobs/\(jobID)").status == 200,
                    try await service.get("/readyz").status == 200
                {
                    recovery = restored.duration(to: .now)
                } else {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            let recovered = try #require(recovery, "the service did not recover within 15 s of the proxy forwarding again")
            #expect(recovered < .seconds(5), "recovered only after \(recovered)")

            // Full concurrency: no pool thread is still stuck on the blackholed connections.
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<8 {
                    group.addTask { try await service.post("/v1/callbacks", Self.callback(RequestIDForTests.jobID())).status }
                    group.addTask { try await service.get("/v1/jobs/\(known)").status }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
            let settled = ContinuousClock.now
            while settled.duration(to: .now) < .seconds(5) {
                let statistics = service.pool.statistics
                if statistics.inUse == 0 && statistics.waiting == 0 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let statistics = service.pool.statistics
            #expect(statistics.inUse == 0 && statistics.waiting == 0 && statistics.open <= statistics.size, "\(statistics)")
            print(
                "blackhole: \(replies.count) requests answered 503 after \(Self.seconds(fastest)) (fastest) to \(Self.seconds(slowest)) (slowest); recovered \(Self.seconds(recovered)) after forwarding resumed"
            )
        }
    }

    @Test func commitLandedButAnswerLost_retryFindsItsOwnWrite_answersNotDuplicate_countsOneDelivery() async throws {
        try await Self.withProxiedService { service, proxy in
            let jobID = RequestIDForTests.jobID()
            proxy.cutAfterCommit(marker: jobID)
            let reply = try await service.post("/v1/callbacks", Self.callback(jobID))
            #expect(proxy.cuts == 1, "the proxy did not cut the commit's connection")
            #expect(reply.status == 200, "\(reply.text)")
            #expect(try reply.json()["Duplicate"] as? Bool == false, "\(reply.text)")
            #expect(try reply.json()["CurrentState"] as? String == "Success", "\(reply.text)")
            #expect(try Self.storedDeliveries(schema: service.schema, jobID: jobID) == [1])
        }
    }

    @Test func commitLandedButAnswerLost_andDatabaseThenSilent_answersOutcomeUnknown_notNothingStored() async throws {
        try await Self.withProxiedService { service, proxy in
            let jobID = RequestIDForTests.jobID()
            proxy.cutAfterCommit(marker: jobID, then: .blackhole)
            let started = ContinuousClock.now
            let reply = try await service.post("/v1/callbacks", Self.callback(jobID))
            let elapsed = started.duration(to: .now)
            #expect(proxy.cuts == 1, "the proxy did not cut the commit's connection")
            #expect(reply.status == 503, "\(reply.text)")
            #expect(reply.header("Retry-After") != nil)
            let error = try #require(try reply.json()["Error"] as? [String: Any])
            #expect(error["Code"] as? String == "OutcomeUnknown", "\(reply.text)")
            #expect((error["Message"] as? String)?.contains("nothing was stored") == false)
            #expect(elapsed < .seconds(10), "answered after \(elapsed)")
            // The commit did land: "nothing was stored" would have been false.
            #expect(try Self.storedDeliveries(schema: service.schema, jobID: jobID) == [1])

            proxy.mode = .forward
            var again: ServiceHarness.Reply?
            let restored = ContinuousClock.now
            while restored.duration(to: .now) < .seconds(10) {
                let retry = try await service.post("/v1/callbacks", Self.callback(jobID))
                if retry.status == 200 {
                    again = retry
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            let retry = try #require(again, "the re-sent callback was not accepted after the database came back")
            #expect(try retry.json()["Duplicate"] as? Bool == true, "\(retry.text)")
        }
    }

    @Test func lookupBlockedBehindALock_answers503WithinTheStatementTimeout_andThePoolStaysUsable() async throws {
        var settings = PostgresConnectionSettings()
        settings.statementTimeout = .seconds(1)
        let service = try await ServiceHarness.start(connection: settings)
        do {
            let jobID = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID)).status == 200)
            let locker = try PostgresConnection.connect(testDatabaseURL)
            try locker.execute(simpleSQL: "BEGIN; LOCK TABLE \(service.schema).ci_jobs IN ACCESS EXCLUSIVE MODE")
            let started = ContinuousClock.now
            let list = try await service.get("/v1/jobs?limit=5")
            let lookup = try await service.get("/v1/jobs/\(jobID)")
            let ingest = try await service.post("/v1/callbacks", Self.callback(RequestIDForTests.jobID()))
            let elapsed = started.duration(to: .now)
            try locker.execute(simpleSQL: "ROLLBACK")
            locker.close()
            for reply in [list, lookup, ingest] {
                #expect(reply.status == 503, "\(reply.status) \(reply.text)")
                #expect(reply.header("Retry-After") != nil)
                #expect(reply.text.contains("did not answer in time"), "\(reply.text)")
            }
            #expect(ingest.text.contains("nothing was stored"), "\(ingest.text)")
            #expect(elapsed < .seconds(8), "three statement timeouts took \(elapsed)")
            #expect(try await service.get("/v1/jobs?limit=5").status == 200)
            #expect(try await service.get("/v1/jobs/\(jobID)").status == 200)
        } catch {
            await service.stop()
            try? service.dropSchema()
            throw error
        }
        await service.stop()
        try service.dropSchema()
    }
}
