import CallbackService
import Foundation
import HTTPListener
import HTTPWire
import JobStore
import Logging
import PostgresLibPQ
import TestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Tests assert on responses and rows, not on log lines; keep their output readable.
let serviceTestLogger: Logger = {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}()

/// Adds a libpq `options` setting to a URI or key/value conninfo.
func conninfo(_ base: String, searchPath schema: String) -> String {
    if base.hasPrefix("postgres://") || base.hasPrefix("postgresql://") {
        return base + (base.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
    }
    return base + " options='-csearch_path=\(schema)'"
}

/// A running ci-callbackd (the real application on the real listener, on an ephemeral port) over its own
/// PostgreSQL schema, so tests run in parallel without seeing each other's jobs.
final class ServiceHarness: Sendable {
    let schema: String
    let pool: PostgresPool
    /// The service's one store; workers a test starts share it, as the executable's do.
    let store: JobStore
    let server: HTTPServer
    let port: Int
    /// The service's `?wait=` machinery, so a test can see a wait asleep before it ends it.
    let completionListener: JobCompletionListener
    private let runTask: Task<Void, any Error>
    private let listenerTask: Task<Void, Never>

    var baseURL: String { "http://127.0.0.1:\(port)" }

    private init(
        schema: String, pool: PostgresPool, store: JobStore, server: HTTPServer, port: Int, completionListener: JobCompletionListener,
        runTask: Task<Void, any Error>, listenerTask: Task<Void, Never>
    ) {
        self.store = store
        self.completionListener = completionListener
        self.listenerTask = listenerTask
        self.schema = schema
        self.pool = pool
        self.server = server
        self.port = port
        self.runTask = runTask
    }

    /// Starts a service on `schema` (created and migrated when new) against `databaseURL`.
    static func start(
        schema: String = "t_" + RequestIDForTests.random(),
        databaseURL: String = testDatabaseURL,
        migrate: Bool = true,
        accessPolicy: AccessPolicy = AccessPolicy(),
        maxWaiters: Int = 1000,
        port: Int = 0,
        submitter: WatermarkSubmitter? = nil,
        verificationSignal: VerificationSignal? = nil,
        stateEventSignal: WakeSignal? = nil,
        metrics: ServiceMetrics = ServiceMetrics(),
        connection: PostgresConnectionSettings? = nil,
        acquireTimeout: Duration? = nil,
        poolSize: Int = 4,
        logger: Logger = serviceTestLogger,
        configureServer: (inout HTTPServerConfiguration) -> Void = { _ in },
        signals: [String: WakeSignal] = [:],
        readDatabaseURL: String? = nil,
        readRouting: ReadStandby.Configuration = ReadStandby.Configuration(),
        listing: ListingLimit.Configuration = ListingLimit.Configuration()
    ) async throws -> ServiceHarness {
        if migrate {
            let admin = try PostgresConnection.connect(databaseURL)
            try admin.execute(simpleSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)")
            admin.close()
        }
        var configuration = PostgresPool.Configuration(conninfo: conninfo(databaseURL, searchPath: schema))
        configuration.size = poolSize
        configuration.connectTimeout = .seconds(2)
        if let connection { configuration.connection = connection }
        if let acquireTimeout { configuration.acquireTimeout = acquireTimeout }
        let pool = PostgresPool(configuration: configuration, logger: logger)
        let migrations = try MigrationSet.embedded()
        if migrate {
            // As the service does: on a connection of its own, without the pool's statement timeout (the
            // advisory lock waits for other tests' migrations), and on a pool thread, not a cooperative one.
            var migration = configuration
            migration.size = 1
            migration.connection = configuration.connection.forMigrations()
            let migrationPool = PostgresPool(configuration: migration, logger: logger)
            do {
                _ = try await migrationPool.withConnection { connection in
                    try Migrator(migrations: migrations, logger: logger).migrate(connection)
                }
            } catch {
                await migrationPool.close()
                throw error
            }
            await migrationPool.close()
        }
        let statistics = ListenerStatistics()
        var listenerConfiguration = JobCompletionListener.Configuration(conninfo: conninfo(databaseURL, searchPath: schema))
        listenerConfiguration.maxWaiters = maxWaiters
        listenerConfiguration.signals = signals
        if let connection { listenerConfiguration.connection = connection }
        let completionListener = JobCompletionListener(configuration: listenerConfiguration, logger: logger)
        let listenerTask = Task { await completionListener.run() }
        let readPool = readDatabaseURL.map { url in
            var read = configuration
            read.conninfo = conninfo(url, searchPath: schema)
            read.size = 2
            return PostgresPool(configuration: read, logger: logger)
        }
        let store = JobStore(
            pool: pool, verificationSignal: verificationSignal, stateEventSignal: stateEventSignal, logger: logger,
            metricsFactory: metrics.metricsFactory, readPool: readPool, readRouting: readRouting, listing: listing)
        let application = CallbackApplication(
            store: store,
            configuration: .init(requiredSchemaVersion: migrations.latestVersion, accessPolicy: accessPolicy),
            logger: logger,
            metrics: metrics,
            listenerStatistics: statistics,
            completionListener: completionListener,
            submitter: submitter
        )
        var serverConfiguration = HTTPServerConfiguration()
        serverConfiguration.host = "127.0.0.1"
        let requestedPort = port
        serverConfiguration.port = port
        serverConfiguration.eventLoopCount = 1
        configureServer(&serverConfiguration)
        let server = HTTPServer(
            configuration: serverConfiguration, logger: logger, statistics: statistics, hooks: application.listenerHooks,
            responder: application.respond(to:))
        let runTask = Task { try await server.run() }
        let port = try await server.waitUntilListening()
        // A port chosen in advance (freeLoopbackPort) was free when chosen; meanwhile another listener of
        // this process may have been given it, and SO_REUSEPORT lets ours join that one's: the kernel
        // would then hand some of our connections to a stranger. The caller picks another port.
        if requestedPort != 0, loopbackListeners(on: port) > 1 {
            runTask.cancel()
            _ = try? await runTask.value
            listenerTask.cancel()
            await pool.close()
            throw PortSharedError(port: port)
        }
        for _ in 0..<1000 where !completionListener.isListening {
            try await Task.sleep(for: .milliseconds(10))
        }
        return ServiceHarness(
            schema: schema, pool: pool, store: store, server: server, port: port, completionListener: completionListener, runTask: runTask,
            listenerTask: listenerTask)
    }

    /// Stops the listener and the pool; the schema stays (see `dropSchema`).
    func stop() async {
        runTask.cancel()
        _ = try? await runTask.value
        listenerTask.cancel()
        await listenerTask.value
        await pool.close()
        await store.readStandby?.pool.close()
    }

    func dropSchema(databaseURL: String = testDatabaseURL) throws {
        let admin = try PostgresConnection.connect(databaseURL)
        defer { admin.close() }
        try admin.execute(simpleSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
    }

    /// Runs `body` against a fresh service and schema, cleaning both up afterwards.
    static func with<T>(
        accessPolicy: AccessPolicy = AccessPolicy(), connection: PostgresConnectionSettings? = nil, _ body: (ServiceHarness) async throws -> T
    ) async throws -> T {
        let harness = try await start(accessPolicy: accessPolicy, connection: connection)
        do {
            let result = try await body(harness)
            await harness.stop()
            try harness.dropSchema()
            return result
        } catch {
            await harness.stop()
            try? harness.dropSchema()
            throw error
        }
    }

    // MARK: HTTP through URLSession

    struct Reply: Sendable {
        var status: Int
        var headers: [String: String]
        var body: Data

        var text: String { String(decoding: body, as: UTF8.self) }

        /// The body as a JSON object (fails the test when it is not one).
        func json(sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
            let object = try JSONSerialization.jsonObject(with: body)
            return try #require(object as? [String: Any], "not a JSON object: \(text)", sourceLocation: sourceLocation)
        }

        func header(_ name: String) -> String? {
            headers.first { $0.key.caseInsensitiveCompare(name) == .orderedSame }?.value
        }
    }

    func request(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [String: String] = [:]) async throws -> Reply {
        var request = URLRequest(url: URL(string: baseURL + path)!)
        request.httpMethod = method
        request.timeoutInterval = 30
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        if let body { request.httpBody = Data(body) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = try #require(response as? HTTPURLResponse)
        var replyHeaders: [String: String] = [:]
        for (name, value) in http.allHeaderFields {
            replyHeaders["\(name)"] = "\(value)"
        }
        return Reply(status: http.statusCode, headers: replyHeaders, body: data)
    }

    func post(_ path: String, _ body: [UInt8], contentType: String? = nil) async throws -> Reply {
        try await request("POST", path, body: body, headers: contentType.map { ["Content-Type": $0] } ?? [:])
    }

    func get(_ path: String, headers: [String: String] = [:]) async throws -> Reply {
        try await request("GET", path, headers: headers)
    }

    /// A direct query on the harness's schema, for assertions about what is stored.
    func query(_ sql: SQLQuery) async throws -> PostgresRows {
        try await pool.withConnection { connection in try connection.query(sql) }
    }
}

/// A service's port turned out to be shared with another listener (see ``ServiceHarness/start``).
struct PortSharedError: Error, CustomStringConvertible {
    var port: Int
    var description: String { "port \(port) is shared with another listener of this process" }
}

/// How many TCP sockets listen on `port` (IPv4, any address), from /proc/net/tcp; 0 where it cannot be read.
func loopbackListeners(on port: Int) -> Int {
    guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return 0 }
    let wanted = String(format: "%04X", port)
    return table.split(separator: "\n").dropFirst().filter { line in
        let fields = line.split(separator: " ")
        // local_address is HEXADDR:HEXPORT; st 0A is LISTEN.
        return fields.count > 3 && fields[1].hasSuffix(":" + wanted) && fields[3] == "0A"
    }.count
}

enum RequestIDForTests {
    /// 16 lowercase hex characters.
    static func random() -> String {
        var generator = SystemRandomNumberGenerator()
        let hex = String(generator.next() as UInt64, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// A fresh CI-style JobId: `j` + 32 hex.
    static func jobID() -> String { "j" + random() + random() }
}

/// The reference callback bodies, kept in the repository (`Tests/Fixtures/ci-vectors`, with their provenance).
enum Vectors {
    static let directory = repositoryRoot.appendingPathComponent("Tests/Fixtures/ci-vectors")

    static func names() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".xml") || $0.hasSuffix(".json") }
            .sorted()
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: directory.appendingPathComponent(name)))
    }
}
