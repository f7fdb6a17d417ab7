import ArgumentParser
import CIModel
import CallbackService
import Foundation
import HTTPListener
import HTTPWire
import JobStore
import Logging
import Metrics
import PostgresLibPQ
import ServiceLifecycle
import UnixSignals

@main
struct CICallbackd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ci-callbackd",
        abstract: "Receives Tencent Cloud Infinite job callbacks into PostgreSQL and answers lookups by JobId.",
        discussion: "Every option can also be set by the environment variable named in its help; a flag wins.",
        version: CallbackServiceVersion.current,
        subcommands: [Serve.self, Migrate.self, Submit.self, IngestSQL.self]
    )
}

/// Options every subcommand that talks to the database shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "libpq URI or conninfo. [env: DATABASE_URL]")
    var databaseURL: String?

    @Option(name: .customLong("migrations-dir"), help: "Folder of NNNN_description.sql files. [env: MIGRATIONS_DIR, default: ./migrations]")
    var migrationsDirectory: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical. [env: LOG_LEVEL, default: info]")
    var logLevel: String?

    @Option(name: .customLong("log-format"), help: "text (human-readable) or json (one object per line). [env: LOG_FORMAT, default: text]")
    var logFormat: String?

    func migrationSet(_ resolver: SettingResolver) throws -> MigrationSet {
        let explicit = migrationsDirectory ?? resolver.environment["MIGRATIONS_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        return try MigrationSet.load(from: MigrationSet.locateDirectory(explicit: explicit))
    }

    func makeLogger(_ resolver: SettingResolver) throws -> Logger {
        let level = try resolver.required(
            flag: logLevel, flagName: "log-level", env: "LOG_LEVEL", default: .info, parse: SettingParsers.logLevel,
            expected: "trace, debug, info, notice, warning, error or critical"
        )
        let json = try resolver.required(
            flag: logFormat, flagName: "log-format", env: "LOG_FORMAT", default: false,
            parse: { ["json": true, "text": false][$0.lowercased()] }, expected: "text or json")
        LoggingSystem.bootstrap { label in
            var handler = ServiceLogHandler(label: label, format: json ? .json : .text)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "ci-callbackd")
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Applies the database migrations this build ships, then exits.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var timeouts: DatabaseTimeoutOptions

    func run() async throws {
        let resolver = SettingResolver()
        let databaseURL = try resolver.databaseURL(database.databaseURL)
        let logger = try database.makeLogger(resolver)
        let migrations = try database.migrationSet(resolver)
        var configuration = PostgresPool.Configuration(conninfo: databaseURL)
        configuration.size = 1
        configuration.connection = try timeouts.resolve(resolver).connection.forMigrations()
        let pool = PostgresPool(configuration: configuration, logger: logger)
        do {
            let applied = try await pool.withConnection { connection in
                try Migrator(migrations: migrations, logger: logger).migrate(connection)
            }
            print(applied.isEmpty ? "schema is up to date (version \(migrations.latestVersion))" : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
            await pool.close()
        } catch {
            await pool.close()
            throw error
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Runs the HTTP service (migrating the database first unless told not to).")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var timeouts: DatabaseTimeoutOptions

    @Option(help: "Address to listen on: an IPv4 or IPv6 literal, or localhost. [env: HOST, default: 0.0.0.0]")
    var host: String?

    @Option(help: "TCP port. [env: PORT, default: 8080]")
    var port: String?

    @Option(name: .customLong("pool-size"), help: "PostgreSQL connections. [env: DB_POOL_SIZE, default: 8]")
    var poolSize: String?

    @Option(name: .customLong("max-header-bytes"), help: "Request line plus headers, e.g. 16k. [env: MAX_HEADER_BYTES, default: 16k]")
    var maxHeaderBytes: String?

    @Option(name: .customLong("max-body-bytes"), help: "Request body, e.g. 1m. [env: MAX_BODY_BYTES, default: 1m]")
    var maxBodyBytes: String?

    @Option(name: .customLong("header-timeout"), help: "Time to receive a whole request once it starts, e.g. 10s. [env: HEADER_TIMEOUT, default: 10s]")
    var headerTimeout: String?

    @Option(name: .customLong("idle-timeout"), help: "Idle keep-alive connections close after this, e.g. 60s. [env: IDLE_TIMEOUT, default: 60s]")
    var idleTimeout: String?

    @Option(name: .customLong("max-connections"), help: "Open client connections; more get 503. [env: MAX_CONNECTIONS, default: 1024]")
    var maxConnections: String?

    @Option(name: .customLong("shutdown-grace"), help: "On SIGTERM, time for in-flight requests to finish. [env: SHUTDOWN_GRACE, default: 10s]")
    var shutdownGrace: String?

    @Option(name: .customLong("auto-migrate"), help: "Apply migrations at start: true or false. [env: AUTO_MIGRATE, default: true]")
    var autoMigrate: String?

    @Option(name: .customLong("max-wait"), help: "Longest ?wait= a lookup may ask for, e.g. 60s. [env: MAX_WAIT, default: 60s]")
    var maxWait: String?

    @Option(name: .customLong("max-waiters"), help: "Lookups waiting at once; more get 503. [env: MAX_WAITERS, default: 1000]")
    var maxWaiters: String?

    @Option(name: .customLong("callback-tokens"), help: "Comma-separated tokens a callback URL must carry; unset = open. Prefer the environment: flags show in ps. [env: CALLBACK_TOKENS]")
    var callbackTokens: String?

    @Option(name: .customLong("api-tokens"), help: "Comma-separated bearer tokens for /v1/jobs; unset = open. Prefer the environment. [env: API_TOKENS]")
    var apiTokens: String?

    @Option(name: .customLong("callback-allow-cidrs"), help: "Comma-separated CIDR blocks callbacks may come from. [env: CALLBACK_ALLOW_CIDRS, default: anywhere]")
    var callbackAllowCIDRs: String?

    @Option(name: .customLong("trusted-proxy-cidrs"), help: "Comma-separated CIDR blocks of proxies whose X-Forwarded-For is believed. [env: TRUSTED_PROXY_CIDRS]")
    var trustedProxyCIDRs: String?

    @Option(
        name: .customLong("verify-callbacks"),
        help: "Confirm a callback's final state with CI (DescribeMediaJob) before it becomes the job's: true or false; needs CI credentials. [env: VERIFY_CALLBACKS, default: false]")
    var verifyCallbacks: String?

    func run() async throws {
        let resolver = SettingResolver()
        let databaseURL = try resolver.databaseURL(database.databaseURL)
        var server = HTTPServerConfiguration()
        server.host = try resolver.required(flag: host, flagName: "host", env: "HOST", default: server.host, parse: { $0.isEmpty ? nil : $0 }, expected: "an address")
        server.port = try resolver.required(flag: port, flagName: "port", env: "PORT", default: 8080, parse: SettingParsers.port, expected: "a port from 0 to 65535")
        server.limits.parser.maxHeaderBytes = try resolver.required(
            flag: maxHeaderBytes, flagName: "max-header-bytes", env: "MAX_HEADER_BYTES", default: server.limits.parser.maxHeaderBytes,
            parse: SettingParsers.byteSize, expected: "a size such as 16k")
        server.limits.parser.maxBodyBytes = try resolver.required(
            flag: maxBodyBytes, flagName: "max-body-bytes", env: "MAX_BODY_BYTES", default: server.limits.parser.maxBodyBytes,
            parse: SettingParsers.byteSize, expected: "a size such as 1m")
        server.limits.headerReadTimeout = try resolver.required(
            flag: headerTimeout, flagName: "header-timeout", env: "HEADER_TIMEOUT", default: server.limits.headerReadTimeout,
            parse: SettingParsers.duration, expected: "a duration such as 10s")
        server.limits.idleTimeout = try resolver.required(
            flag: idleTimeout, flagName: "idle-timeout", env: "IDLE_TIMEOUT", default: server.limits.idleTimeout,
            parse: SettingParsers.duration, expected: "a duration such as 60s")
        server.limits.maxConnections = try resolver.required(
            flag: maxConnections, flagName: "max-connections", env: "MAX_CONNECTIONS", default: server.limits.maxConnections,
            parse: SettingParsers.positiveInt, expected: "a positive whole number")
        server.shutdownGracePeriod = try resolver.required(
            flag: shutdownGrace, flagName: "shutdown-grace", env: "SHUTDOWN_GRACE", default: server.shutdownGracePeriod,
            parse: SettingParsers.duration, expected: "a duration such as 10s")
        let poolSize = try resolver.required(
            flag: poolSize, flagName: "pool-size", env: "DB_POOL_SIZE", default: 8, parse: SettingParsers.positiveInt,
            expected: "a positive whole number")
        let databaseTimeouts = try timeouts.resolve(resolver)
        let migrate = try resolver.required(
            flag: autoMigrate, flagName: "auto-migrate", env: "AUTO_MIGRATE", default: true, parse: SettingParsers.bool,
            expected: "true or false")
        let tokenList: (String) -> [String]? = { text in
            let tokens = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            return tokens.isEmpty ? nil : tokens
        }
        let cidrList: (String) -> [IPAddressRange]? = { try? IPAddressRange.parseList($0).get() }
        let accessPolicy = AccessPolicy(
            callbackTokens: try resolver.required(
                flag: callbackTokens, flagName: "callback-tokens", env: "CALLBACK_TOKENS", default: [], parse: tokenList,
                expected: "comma-separated tokens"),
            apiTokens: try resolver.required(
                flag: apiTokens, flagName: "api-tokens", env: "API_TOKENS", default: [], parse: tokenList, expected: "comma-separated tokens"),
            callbackAllowList: try resolver.required(
                flag: callbackAllowCIDRs, flagName: "callback-allow-cidrs", env: "CALLBACK_ALLOW_CIDRS", default: [], parse: cidrList,
                expected: "comma-separated CIDR blocks such as 10.0.0.0/8,2001:db8::/32"),
            trustedProxies: try resolver.required(
                flag: trustedProxyCIDRs, flagName: "trusted-proxy-cidrs", env: "TRUSTED_PROXY_CIDRS", default: [], parse: cidrList,
                expected: "comma-separated CIDR blocks")
        )
        let maxWait = try resolver.required(
            flag: maxWait, flagName: "max-wait", env: "MAX_WAIT", default: .seconds(60), parse: SettingParsers.duration,
            expected: "a duration such as 60s")
        let maxWaiters = try resolver.required(
            flag: maxWaiters, flagName: "max-waiters", env: "MAX_WAITERS", default: 1000, parse: SettingParsers.positiveInt,
            expected: "a positive whole number")
        let ciSettings = try CISettings.resolve(resolver)
        let verification = try VerificationSettings.resolve(resolver, flag: verifyCallbacks, ciConfigured: ciSettings.configuration != nil)
        let migrations = try database.migrationSet(resolver)
        let logger = try database.makeLogger(resolver)
        if ciSettings.configuration == nil {
            logger.notice("CI_SECRET_ID is not set: submitting jobs and reconciliation are off")
        }
        if accessPolicy.callbackTokens.isEmpty {
            logger.warning("CALLBACK_TOKENS is not set: anyone who can reach this service can post callbacks")
        }
        if accessPolicy.apiTokens.isEmpty {
            logger.warning("API_TOKENS is not set: anyone who can reach this service can read jobs")
        }
        let metrics = ServiceMetrics()
        MetricsSystem.bootstrap(metrics.metricsFactory)

        var poolConfiguration = PostgresPool.Configuration(conninfo: databaseURL)
        poolConfiguration.size = poolSize
        poolConfiguration.connection = databaseTimeouts.connection
        poolConfiguration.acquireTimeout = databaseTimeouts.acquireTimeout
        let pool = PostgresPool(configuration: poolConfiguration, logger: logger)
        do {
            if migrate {
                try await migrateWhenReachable(databaseURL: databaseURL, settings: databaseTimeouts.connection, migrations: migrations, logger: logger)
            }
            let listenerStatistics = ListenerStatistics()
            var listenerConfiguration = JobCompletionListener.Configuration(conninfo: databaseURL)
            listenerConfiguration.maxWaiters = maxWaiters
            listenerConfiguration.connection = databaseTimeouts.connection
            let completionListener = JobCompletionListener(configuration: listenerConfiguration, logger: logger)
            var applicationConfiguration = CallbackApplication.Configuration(
                requiredSchemaVersion: migrations.latestVersion, accessPolicy: accessPolicy)
            applicationConfiguration.maxWait = maxWait
            let submitter = ciSettings.submitter(logger: logger)
            let verificationSignal = verification.enabled ? VerificationSignal() : nil
            let application = CallbackApplication(
                store: JobStore(pool: pool, verificationSignal: verificationSignal),
                configuration: applicationConfiguration,
                logger: logger,
                metrics: metrics,
                listenerStatistics: listenerStatistics,
                completionListener: completionListener,
                submitter: submitter
            )
            let httpServer = HTTPServer(
                configuration: server, logger: logger, statistics: listenerStatistics, responder: application.respond(to:))
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
                .init(service: httpServer, successTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: CompletionListenerService(listener: completionListener)),
            ]
            if ciSettings.reconcile, let submitter {
                let reconciler = Reconciler(
                    store: JobStore(pool: pool), client: submitter.client, lock: SweepLock(conninfo: databaseURL, settings: databaseTimeouts.connection, logger: logger),
                    configuration: ciSettings.reconciler, metrics: metrics, logger: logger)
                services.append(.init(service: reconciler))
            }
            if let verificationSignal, let submitter {
                let verifier = CallbackVerifier(
                    store: JobStore(pool: pool), client: submitter.client, signal: verificationSignal,
                    configuration: verification.verifier, metrics: metrics, logger: logger)
                services.append(.init(service: verifier))
                logger.info("callbacks' final states are confirmed with CI before they apply (VERIFY_CALLBACKS)")
            }
            let group = ServiceGroup(
                configuration: .init(
                    services: services,
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger
                )
            )
            do {
                try await group.run()
            } catch let error as HTTPServerError {
                throw ListenFailure(underlying: error)
            }
        } catch {
            await pool.close()
            throw error
        }
        await pool.close()
        logger.info("stopped")
    }

    /// A service that starts before its database (a container restart, a host boot) waits for it a
    /// while instead of failing at once; any other migration error is fatal. Migrations run on a
    /// connection of their own, without the service's statement timeout
    /// (``PostgresConnectionSettings/forMigrations(ioTimeout:)``).
    private func migrateWhenReachable(
        databaseURL: String, settings: PostgresConnectionSettings, migrations: MigrationSet, logger: Logger
    ) async throws {
        var configuration = PostgresPool.Configuration(conninfo: databaseURL)
        configuration.size = 1
        configuration.connection = settings.forMigrations()
        let pool = PostgresPool(configuration: configuration, logger: logger)
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while true {
            do {
                _ = try await pool.withConnection { connection in
                    try Migrator(migrations: migrations, logger: logger).migrate(connection)
                }
                await pool.close()
                return
            } catch let error as PostgresError where error.isConnectionProblem && ContinuousClock.now < deadline {
                logger.warning("database not reachable yet; retrying migrations", metadata: ["error": "\(error)"])
                try await Task.sleep(for: .seconds(1))
            } catch {
                await pool.close()
                throw error
            }
        }
    }
}

/// `VERIFY_CALLBACKS` (`--verify-callbacks`) and `VERIFY_INTERVAL`.
struct VerificationSettings {
    /// Whether callbacks' final states wait for CI's confirmation.
    var enabled: Bool
    var verifier: CallbackVerifierConfiguration

    /// - Throws: `ValidationError` naming the setting for a bad value, or for verification without CI
    ///   credentials (it could never confirm anything, so every final callback would stay pending).
    static func resolve(_ resolver: SettingResolver, flag: String?, ciConfigured: Bool) throws -> VerificationSettings {
        let enabled = try resolver.required(
            flag: flag, flagName: "verify-callbacks", env: "VERIFY_CALLBACKS", default: false, parse: SettingParsers.bool,
            expected: "true or false")
        if enabled && !ciConfigured {
            throw ValidationError(
                "VERIFY_CALLBACKS=true (--verify-callbacks) needs CI credentials to ask CI: set CI_SECRET_ID, CI_SECRET_KEY, CI_BUCKET and CI_REGION")
        }
        var verifier = CallbackVerifierConfiguration()
        verifier.interval = try resolver.required(
            flag: nil, flagName: "", env: "VERIFY_INTERVAL", default: verifier.interval, parse: SettingParsers.duration,
            expected: "a duration such as 5s")
        return VerificationSettings(enabled: enabled, verifier: verifier)
    }
}

/// Prints the ingest statement, so `Benchmarks/bench.py` can measure PostgreSQL's own ceiling with
/// pgbench on exactly the SQL the service runs. Hidden: it is a benchmark aid, not an operator command.
struct IngestSQL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest-sql", abstract: "Prints the SQL statement that stores one callback.", shouldDisplay: false)

    @Option(name: .customLong("jobs-for"), help: "Print instead the jobs parameter ($13) the service binds for this callback body.")
    var callbackFile: String?

    func run() throws {
        guard let callbackFile else {
            print(JobStore.ingestStatementSQL)
            return
        }
        let body = try [UInt8](Data(contentsOf: URL(fileURLWithPath: callbackFile)))
        print(JobStore.jobsParameter(for: try CallbackDecoder.decode(body)))
    }
}

/// Runs the job-completion listener under the ServiceGroup, stopping when the group shuts down.
struct CompletionListenerService: Service {
    let listener: JobCompletionListener

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await listener.run()
        }
    }
}
