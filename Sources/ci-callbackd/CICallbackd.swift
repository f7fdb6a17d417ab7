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
        subcommands: [Serve.self, Migrate.self, Submit.self, IngestSQL.self, Retention.self, Reprocess.self]
    )

    /// ArgumentParser's own `main`, except that a `ValidationError` thrown by a subcommand's `run` (a
    /// setting read from the environment, say) is shown with that subcommand's usage, as one found while
    /// parsing is, rather than with the root command's.
    static func main() async {
        let command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            var command = command
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ValidationError {
            let subcommand = type(of: command)
            let name = subcommand._commandName == _commandName ? _commandName : "\(_commandName) \(subcommand._commandName)"
            let message = "Error: \(error.message)\nUsage: \(usageString(for: subcommand))\n  See '\(name) --help' for more information.\n"
            FileHandle.standardError.write(Data(message.utf8))
            exit(withError: ExitCode.validationFailure)
        } catch {
            exit(withError: error)
        }
    }
}

/// Options every subcommand that talks to the database shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "libpq URI or conninfo. [env: DATABASE_URL]")
    var databaseURL: String?

    @Option(name: .customLong("migrations-dir"), help: "Folder of NNNN_description.sql files to apply instead of the migrations compiled in. [env: MIGRATIONS_DIR]")
    var migrationsDirectory: String?

    @Option(
        name: .customLong("migration-lock-timeout"),
        help: "PostgreSQL lock_timeout for each migration statement, e.g. 5s. [env: MIGRATION_LOCK_TIMEOUT, default: 5s]")
    var migrationLockTimeout: String?

    @Option(
        name: .customLong("migration-lock-attempts"),
        help: "Tries of a migration whose lock times out, before startup fails. [env: MIGRATION_LOCK_ATTEMPTS, default: 5]")
    var migrationLockAttempts: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical. [env: LOG_LEVEL, default: \(ServeDefaults.logLevel)]")
    var logLevel: String?

    @Option(name: .customLong("log-format"), help: "text (human-readable) or json (one object per line). [env: LOG_FORMAT, default: \(ServeDefaults.logFormat)]")
    var logFormat: String?

    @Option(
        name: .customLong("log-buffer-bytes"),
        help: "Log bytes held for a slow standard error before lines are dropped (and counted), e.g. 4m. [env: LOG_BUFFER_BYTES, default: \(SettingFormat.byteSize(ServeDefaults.logBufferBytes))]")
    var logBufferBytes: String?

    /// The migrations compiled in, unless a folder is named explicitly (to try a schema change without
    /// rebuilding, or to benchmark one schema against another).
    func migrationSet(_ resolver: SettingResolver) throws -> MigrationSet {
        let explicit = migrationsDirectory ?? resolver.environment["MIGRATIONS_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        guard let explicit else { return try MigrationSet.embedded() }
        return try MigrationSet.load(from: URL(fileURLWithPath: explicit, isDirectory: true))
    }

    /// How long migrations wait for PostgreSQL's locks before giving up.
    func migratorConfiguration(_ resolver: SettingResolver) throws -> MigratorConfiguration {
        var configuration = MigratorConfiguration()
        configuration.lockTimeout = try resolver.required(
            flag: migrationLockTimeout, flagName: "migration-lock-timeout", env: "MIGRATION_LOCK_TIMEOUT",
            default: configuration.lockTimeout, parse: SettingParsers.duration, expected: "a duration such as 5s")
        configuration.lockAttempts = try resolver.required(
            flag: migrationLockAttempts, flagName: "migration-lock-attempts", env: "MIGRATION_LOCK_ATTEMPTS",
            default: configuration.lockAttempts, parse: SettingParsers.positiveInt, expected: "a positive whole number")
        return configuration
    }

    func makeLogger(_ resolver: SettingResolver) throws -> Logger {
        let level = try resolver.required(
            flag: logLevel, flagName: "log-level", env: "LOG_LEVEL", default: ServeDefaults.logLevel, parse: SettingParsers.logLevel,
            expected: "trace, debug, info, notice, warning, error or critical"
        )
        let json = try resolver.required(
            flag: logFormat, flagName: "log-format", env: "LOG_FORMAT", default: ServeDefaults.logFormat == "json",
            parse: { ["json": true, "text": false][$0.lowercased()] }, expected: "text or json")
        let bufferBytes = try resolver.required(
            flag: logBufferBytes, flagName: "log-buffer-bytes", env: "LOG_BUFFER_BYTES", default: ServeDefaults.logBufferBytes,
            parse: SettingParsers.byteSize, expected: "a size such as 4m")
        LogOutput.standardError.configure(bufferLimit: bufferBytes, format: json ? .json : .text)
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
        let migrator = Migrator(migrations: migrations, configuration: try database.migratorConfiguration(resolver), logger: logger)
        let settings = try timeouts.resolve(resolver).connection
        do {
            let applied = try await migrator.migrate(conninfo: databaseURL, settings: settings)
            print(applied.isEmpty ? "schema is up to date (version \(migrations.latestVersion))" : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
        } catch {
            throw DatabaseStartupError.translating(error)
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Runs the HTTP service (migrating the database first unless told not to).",
        discussion: environmentOnlySettings
    )

    /// The settings that have no flag (credentials stay out of `ps`; the CI and reconciler settings are
    /// set once per deployment), listed in the help so that it names every setting.
    static let environmentOnlySettings = """
        Settings read only from the environment:
          CI_SECRET_ID, CI_SECRET_KEY, CI_SESSION_TOKEN
                                  CI credentials; without CI_SECRET_ID submitting and reconciling are off.
          CI_BUCKET, CI_REGION    e.g. examplebucket-1250000000, ap-chongqing (required with credentials).
          CI_QUEUE_ID, CI_ENDPOINT
                                  CI queue, and API base URL (default: CI's own).
          PUBLIC_CALLBACK_URL     The callback URL CI is given, token included (default: the queue's).
          RECONCILE               Run the reconciler: true or false (default: true with credentials).
          RECONCILE_INTERVAL      Pause between reconcile sweeps (default: \(SettingFormat.duration(ServeDefaults.reconciler.interval))).
          RECONCILE_AFTER         Silence after which an open job is asked about; 0 = at once (default: \(SettingFormat.duration(ServeDefaults.reconciler.age))).
          RECONCILE_WINDOW        How far back jobs are asked about and listed (default: \(SettingFormat.duration(ServeDefaults.reconciler.window))).
          RECONCILE_DISCOVERY_INTERVAL
                                  Least time between two discovery listings; 0 = every sweep (default: \(SettingFormat.duration(ServeDefaults.reconciler.discoveryInterval))).
          VERIFY_INTERVAL         Pause between sweeps of callbacks pending verification (default: \(SettingFormat.duration(ServeDefaults.verifier.interval))).
        """ + "\n" + WebhookSettings.help

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var timeouts: DatabaseTimeoutOptions
    @OptionGroup var retention: RetentionOptions
    @OptionGroup var readStandby: ReadStandbyOptions

    @Option(
        name: .customLong("retention-interval"),
        help: "Pause between retention runs (partitions ahead, expired ones dropped). [env: RETENTION_INTERVAL, default: \(SettingFormat.duration(ServeDefaults.retentionInterval))]")
    var retentionInterval: String?

    @Option(help: "Address to listen on: an IPv4 or IPv6 literal, or localhost. [env: HOST, default: \(ServeDefaults.server.host)]")
    var host: String?

    @Option(help: "TCP port. [env: PORT, default: \(ServeDefaults.server.port)]")
    var port: String?

    @Option(name: .customLong("pool-size"), help: "PostgreSQL connections. [env: DB_POOL_SIZE, default: \(ServeDefaults.pool.size)]")
    var poolSize: String?

    @Option(
        name: .customLong("list-concurrency"),
        help: "Listings (job lists, histories, rejected callbacks) holding a PostgreSQL connection at once. [env: LIST_CONCURRENCY, default: \(ServeDefaults.listing.concurrency)]")
    var listConcurrency: String?

    @Option(
        name: .customLong("list-queue"),
        help: "Listings waiting for one of those; more are answered 503. [env: LIST_QUEUE, default: \(ServeDefaults.listing.maxWaiting)]")
    var listQueue: String?

    @Option(
        name: .customLong("list-yield"),
        help:
            "While callbacks wait for the database, how long after it began a listing keeps its slot (0: no longer than it runs). [env: LIST_YIELD, default: \(SettingFormat.duration(ServeDefaults.listing.yieldUnderIngestLoad))]"
    )
    var listYield: String?

    @Option(
        name: .customLong("max-header-bytes"),
        help: "Request line plus headers, e.g. 16k. [env: MAX_HEADER_BYTES, default: \(SettingFormat.byteSize(ServeDefaults.server.limits.parser.maxHeaderBytes))]")
    var maxHeaderBytes: String?

    @Option(
        name: .customLong("max-body-bytes"),
        help: "Request body, e.g. 1m. [env: MAX_BODY_BYTES, default: \(SettingFormat.byteSize(ServeDefaults.server.limits.parser.maxBodyBytes))]")
    var maxBodyBytes: String?

    @Option(
        name: .customLong("max-inflight-body-bytes"),
        help: "Request-body bytes in memory at once across connections, e.g. 64m; beyond it 503. [env: MAX_INFLIGHT_BODY_BYTES, default: \(SettingFormat.byteSize(ServeDefaults.server.limits.maxInflightBodyBytes))]")
    var maxInflightBodyBytes: String?

    @Option(
        name: .customLong("request-read-timeout"),
        help: "Time to receive a whole request, head and body, once it starts, e.g. 10s. [env: REQUEST_READ_TIMEOUT, default: \(SettingFormat.duration(ServeDefaults.server.limits.requestReadTimeout))]")
    var requestReadTimeout: String?

    @Option(
        name: .customLong("header-timeout"),
        help: "Deprecated name of --request-read-timeout (it always bounded the body too). [env: HEADER_TIMEOUT, deprecated name of REQUEST_READ_TIMEOUT]")
    var headerTimeout: String?

    @Option(
        name: .customLong("idle-timeout"),
        help: "Idle keep-alive connections close after this, e.g. 60s. [env: IDLE_TIMEOUT, default: \(SettingFormat.duration(ServeDefaults.server.limits.idleTimeout))]")
    var idleTimeout: String?

    @Option(
        name: .customLong("max-connections"),
        help: "Open client connections; at the limit idle and slow ones are evicted, then 503. [env: MAX_CONNECTIONS, default: \(ServeDefaults.server.limits.maxConnections)]")
    var maxConnections: String?

    @Option(
        name: .customLong("max-connections-per-peer"),
        help: "Open connections from one IP address; raise to max-connections behind a proxy. [env: MAX_CONNECTIONS_PER_PEER, default: \(ServeDefaults.server.limits.maxConnectionsPerPeer)]")
    var maxConnectionsPerPeer: String?

    @Option(
        name: .customLong("shutdown-grace"),
        help: "On SIGTERM, time for in-flight requests to finish. [env: SHUTDOWN_GRACE, default: \(SettingFormat.duration(ServeDefaults.server.shutdownGracePeriod))]")
    var shutdownGrace: String?

    @Flag(
        name: .customLong("auto-migrate"), inversion: .prefixedNo,
        help: "Apply migrations at start. [env: AUTO_MIGRATE=true|false, default: \(ServeDefaults.autoMigrate)]")
    var autoMigrate: Bool?

    @Option(
        name: .customLong("max-wait"),
        help: "Longest ?wait= a lookup waits; a longer one is shortened to this, e.g. 60s. [env: MAX_WAIT, default: \(SettingFormat.duration(ServeDefaults.application.maxWait))]")
    var maxWait: String?

    @Option(
        name: .customLong("max-waiters"),
        help: "Lookups waiting at once; more get 503. [env: MAX_WAITERS, default: \(ServeDefaults.listener.maxWaiters)]")
    var maxWaiters: String?

    @Option(
        name: .customLong("console-session-lifetime"),
        help: "How long a console login lasts, e.g. 12h. [env: CONSOLE_SESSION_LIFETIME, default: \(SettingFormat.duration(ServeDefaults.application.consoleSessionLifetime))]")
    var consoleSessionLifetime: String?

    @Option(
        name: .customLong("console-rollup-interval"),
        help: "Pause between rollups of callbacks into the overview's per-minute counts, e.g. 30s. [env: CONSOLE_ROLLUP_INTERVAL, default: \(SettingFormat.duration(ServeDefaults.consoleRollupInterval))]")
    var consoleRollupInterval: String?

    @Option(
        name: .customLong("console-login-attempts"),
        help: "Failed console logins a client address may make per minute; more get 429. [env: CONSOLE_LOGIN_ATTEMPTS, default: \(ServeDefaults.application.consoleLoginAttempts)]")
    var consoleLoginAttempts: String?

    @Option(name: .customLong("callback-tokens"), help: "Comma-separated tokens a callback URL must carry; unset = open. Prefer the environment: flags show in ps. [env: CALLBACK_TOKENS]")
    var callbackTokens: String?

    @Option(name: .customLong("api-tokens"), help: "Comma-separated bearer tokens for /v1/jobs; unset = open. Prefer the environment. [env: API_TOKENS]")
    var apiTokens: String?

    @Option(name: .customLong("callback-allow-cidrs"), help: "Comma-separated CIDR blocks callbacks may come from. [env: CALLBACK_ALLOW_CIDRS, default: anywhere]")
    var callbackAllowCIDRs: String?

    @Option(name: .customLong("trusted-proxy-cidrs"), help: "Comma-separated CIDR blocks of proxies whose X-Forwarded-For is believed. [env: TRUSTED_PROXY_CIDRS]")
    var trustedProxyCIDRs: String?

    @Flag(
        name: .customLong("verify-callbacks"), inversion: .prefixedNo,
        help: "Confirm a callback's final state with CI (DescribeMediaJob) before it becomes the job's; needs CI credentials. [env: VERIFY_CALLBACKS=true|false, default: \(ServeDefaults.verifyCallbacks)]")
    var verifyCallbacks: Bool?

    func run() async throws {
        let resolver = SettingResolver()
        let databaseURL = try resolver.databaseURL(database.databaseURL)
        var server = HTTPServerConfiguration()
        server.host = try resolver.required(flag: host, flagName: "host", env: "HOST", default: server.host, parse: { $0.isEmpty ? nil : $0 }, expected: "an address")
        server.port = try resolver.required(flag: port, flagName: "port", env: "PORT", default: server.port, parse: SettingParsers.port, expected: "a port from 0 to 65535")
        server.limits.parser.maxHeaderBytes = try resolver.required(
            flag: maxHeaderBytes, flagName: "max-header-bytes", env: "MAX_HEADER_BYTES", default: server.limits.parser.maxHeaderBytes,
            parse: SettingParsers.byteSize, expected: "a size such as 16k")
        server.limits.parser.maxBodyBytes = try resolver.required(
            flag: maxBodyBytes, flagName: "max-body-bytes", env: "MAX_BODY_BYTES", default: server.limits.parser.maxBodyBytes,
            parse: SettingParsers.byteSize, expected: "a size such as 1m")
        server.limits.maxInflightBodyBytes = try resolver.required(
            flag: maxInflightBodyBytes, flagName: "max-inflight-body-bytes", env: "MAX_INFLIGHT_BODY_BYTES",
            default: server.limits.maxInflightBodyBytes, parse: SettingParsers.byteSize, expected: "a size such as 64m")
        server.limits.requestReadTimeout = try resolver.requestReadTimeout(
            flag: requestReadTimeout, deprecatedFlag: headerTimeout, default: server.limits.requestReadTimeout)
        server.limits.idleTimeout = try resolver.required(
            flag: idleTimeout, flagName: "idle-timeout", env: "IDLE_TIMEOUT", default: server.limits.idleTimeout,
            parse: SettingParsers.duration, expected: "a duration such as 60s")
        server.limits.maxConnections = try resolver.required(
            flag: maxConnections, flagName: "max-connections", env: "MAX_CONNECTIONS", default: server.limits.maxConnections,
            parse: SettingParsers.positiveInt, expected: "a positive whole number")
        server.limits.maxConnectionsPerPeer = try resolver.required(
            flag: maxConnectionsPerPeer, flagName: "max-connections-per-peer", env: "MAX_CONNECTIONS_PER_PEER",
            default: server.limits.maxConnectionsPerPeer, parse: SettingParsers.positiveInt, expected: "a positive whole number")
        server.shutdownGracePeriod = try resolver.required(
            flag: shutdownGrace, flagName: "shutdown-grace", env: "SHUTDOWN_GRACE", default: server.shutdownGracePeriod,
            parse: SettingParsers.duration, expected: "a duration such as 10s")
        let poolSize = try resolver.required(
            flag: poolSize, flagName: "pool-size", env: "DB_POOL_SIZE", default: ServeDefaults.pool.size, parse: SettingParsers.positiveInt,
            expected: "a positive whole number")
        let listing = ListingLimit.Configuration(
            concurrency: try resolver.required(
                flag: listConcurrency, flagName: "list-concurrency", env: "LIST_CONCURRENCY", default: ServeDefaults.listing.concurrency,
                parse: SettingParsers.positiveInt, expected: "a positive whole number"),
            maxWaiting: try resolver.required(
                flag: listQueue, flagName: "list-queue", env: "LIST_QUEUE", default: ServeDefaults.listing.maxWaiting,
                parse: SettingParsers.nonNegativeInt, expected: "a whole number"),
            yieldUnderIngestLoad: try resolver.required(
                flag: listYield, flagName: "list-yield", env: "LIST_YIELD", default: ServeDefaults.listing.yieldUnderIngestLoad,
                parse: SettingParsers.durationOrZero, expected: "a duration such as 100ms, or 0"))
        let databaseTimeouts = try timeouts.resolve(resolver)
        let reads = try readStandby.resolve(resolver)
        let migrate = try resolver.required(
            flag: autoMigrate.map(String.init), flagName: "auto-migrate", env: "AUTO_MIGRATE", default: ServeDefaults.autoMigrate, parse: SettingParsers.bool,
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
            flag: maxWait, flagName: "max-wait", env: "MAX_WAIT", default: ServeDefaults.application.maxWait, parse: SettingParsers.duration,
            expected: "a duration such as 60s")
        let consoleSessionLifetime = try resolver.required(
            flag: consoleSessionLifetime, flagName: "console-session-lifetime", env: "CONSOLE_SESSION_LIFETIME",
            default: ServeDefaults.application.consoleSessionLifetime, parse: SettingParsers.duration, expected: "a duration such as 12h")
        let maxWaiters = try resolver.required(
            flag: maxWaiters, flagName: "max-waiters", env: "MAX_WAITERS", default: ServeDefaults.listener.maxWaiters, parse: SettingParsers.positiveInt,
            expected: "a positive whole number")
        let consoleLoginAttempts = try resolver.required(
            flag: consoleLoginAttempts, flagName: "console-login-attempts", env: "CONSOLE_LOGIN_ATTEMPTS",
            default: ServeDefaults.application.consoleLoginAttempts, parse: SettingParsers.positiveInt, expected: "a positive whole number")
        let retentionPolicy = try retention.resolve(resolver)
        let consoleRollupInterval = try resolver.required(
            flag: consoleRollupInterval, flagName: "console-rollup-interval", env: "CONSOLE_ROLLUP_INTERVAL", default: ServeDefaults.consoleRollupInterval,
            parse: SettingParsers.duration, expected: "a duration such as 30s")
        let retentionInterval = try resolver.required(
            flag: retentionInterval, flagName: "retention-interval", env: "RETENTION_INTERVAL", default: ServeDefaults.retentionInterval,
            parse: SettingParsers.duration, expected: "a duration such as 1h")
        let ciSettings = try CISettings.resolve(resolver)
        let verification = try VerificationSettings.resolve(resolver, flag: verifyCallbacks.map(String.init), ciConfigured: ciSettings.configuration != nil)
        let webhooks = try WebhookSettings.resolve(resolver)
        let migrations = try database.migrationSet(resolver)
        let migrator = try database.migratorConfiguration(resolver)
        let logger = try database.makeLogger(resolver)
        if ciSettings.configuration == nil {
            logger.notice("CI_SECRET_ID is not set: submitting jobs and reconciliation are off")
        }
        if accessPolicy.callbackTokens.isEmpty {
            logger.warning("CALLBACK_TOKENS is not set: anyone who can reach this service can post callbacks")
        }
        if accessPolicy.apiTokens.isEmpty {
            logger.warning("API_TOKENS is not set: anyone who can reach this service can read jobs, and the console at /console/ is open")
        }
        server.limits.maxConnections = Self.fitConnectionsToOpenFileLimit(server, poolSize: poolSize + (reads?.poolSize ?? 0), logger: logger)
        let metrics = ServiceMetrics()
        MetricsSystem.bootstrap(metrics.metricsFactory)
        let memoryReturn = MemoryReturn(logger: logger)
        memoryReturn.configureAllocator()

        var poolConfiguration = PostgresPool.Configuration(conninfo: databaseURL)
        poolConfiguration.size = poolSize
        poolConfiguration.connection = databaseTimeouts.connection
        poolConfiguration.acquireTimeout = databaseTimeouts.acquireTimeout
        let pool = PostgresPool(configuration: poolConfiguration, logger: logger)
        let readPool = reads.map { reads in
            var configuration = poolConfiguration
            configuration.conninfo = reads.url
            configuration.size = reads.poolSize
            return PostgresPool(configuration: configuration, logger: logger)
        }
        do {
            try await prepareDatabase(
                databaseURL: databaseURL, settings: databaseTimeouts.connection,
                migrator: Migrator(migrations: migrations, configuration: migrator, logger: logger), migrate: migrate, logger: logger)
            let listenerStatistics = ListenerStatistics()
            var listenerConfiguration = JobCompletionListener.Configuration(conninfo: databaseURL)
            listenerConfiguration.maxWaiters = maxWaiters
            listenerConfiguration.connection = databaseTimeouts.connection
            // The sequencer wakes when this process commits a state change (the store raises `newEvents`);
            // delivery workers wake on the sequencer's NOTIFY, from any replica, heard by the LISTEN connection.
            let newEvents = WakeSignal()
            let newDeliveries = WakeSignal()
            listenerConfiguration.signals = [JobStore.sequencedEventsChannel: newDeliveries]
            let completionListener = JobCompletionListener(configuration: listenerConfiguration, logger: logger)
            var applicationConfiguration = CallbackApplication.Configuration(
                requiredSchemaVersion: migrations.latestVersion, accessPolicy: accessPolicy)
            applicationConfiguration.maxWait = maxWait
            applicationConfiguration.maxSubscriptions = webhooks.maxSubscriptions
            applicationConfiguration.webhookDelivery = webhooks.delivery
            applicationConfiguration.consoleSessionLifetime = consoleSessionLifetime
            applicationConfiguration.consoleLoginAttempts = consoleLoginAttempts
            let submitter = ciSettings.submitter(logger: logger)
            applicationConfiguration.workerStatus = WorkerStatus(
                reconcile: ciSettings.reconcile && submitter != nil, reconcileInterval: ciSettings.reconciler.interval,
                verifyCallbacks: verification.enabled)
            let verificationSignal = verification.enabled ? VerificationSignal() : nil
            // The one store of the process: the API and the workers share its batchers, so the batch limits
            // hold for the process and its batch metrics count all ingest.
            let store = JobStore(
                pool: pool, verificationSignal: verificationSignal, stateEventSignal: newEvents, logger: logger,
                metricsFactory: metrics.metricsFactory, readPool: readPool, readRouting: reads?.routing ?? ReadStandby.Configuration(),
                listing: listing)
            if reads != nil {
                logger.info("lookups and listings read the standby at READ_DATABASE_URL while it is within READ_MAX_LAG")
            }
            let application = CallbackApplication(
                store: store,
                configuration: applicationConfiguration,
                logger: logger,
                metrics: metrics,
                listenerStatistics: listenerStatistics,
                completionListener: completionListener,
                submitter: submitter
            )
            let httpServer = HTTPServer(
                configuration: server, logger: logger, statistics: listenerStatistics, hooks: application.listenerHooks,
                responder: application.respond(to:))
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
                .init(service: httpServer, successTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: CompletionListenerService(listener: completionListener)),
                .init(service: memoryReturn),
                .init(
                    service: RetentionSweeper(
                        runner: RetentionRunner(conninfo: databaseURL, settings: databaseTimeouts.connection, policy: retentionPolicy, logger: logger),
                        lock: SweepLock(
                            conninfo: databaseURL, settings: databaseTimeouts.connection, classID: RetentionSweeper.lockClassID, logger: logger),
                        interval: retentionInterval, logger: logger)),
                .init(service: CallbackRateRollup(store: store, interval: consoleRollupInterval, logger: logger)),
                .init(
                    service: EventSequencer(
                        store: store, signal: newEvents, configuration: ServeDefaults.sequencer, metrics: metrics, logger: logger)),
            ]
            if reads != nil {
                // Only with a standby: a service that returns ends the whole group.
                services.append(.init(service: ReadStandbyMonitor(store: store)))
            }
            if webhooks.deliver {
                services.append(
                    .init(
                        service: WebhookDeliveryWorker(
                            store: store, signal: newDeliveries, configuration: webhooks.delivery, metrics: metrics, logger: logger)))
            }
            if ciSettings.reconcile, let submitter {
                let reconciler = Reconciler(
                    store: store, client: submitter.client, lock: SweepLock(conninfo: databaseURL, settings: databaseTimeouts.connection, logger: logger),
                    configuration: ciSettings.reconciler, metrics: metrics, logger: logger)
                services.append(.init(service: reconciler))
            }
            if let verificationSignal, let submitter {
                let verifier = CallbackVerifier(
                    store: store, client: submitter.client, signal: verificationSignal,
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
            await readPool?.close()
            throw error
        }
        await pool.close()
        await readPool?.close()
        logger.info("stopped")
    }

    /// Raises the open-file limit to the hard limit, logs what it got, and lowers `MAX_CONNECTIONS` to what
    /// it leaves room for: past the limit `accept` fails with `EMFILE` and the listener backs off for every
    /// client, where a full listener still evicts slow connections and answers 503.
    private static func fitConnectionsToOpenFileLimit(_ server: HTTPServerConfiguration, poolSize: Int, logger: Logger) -> Int {
        let requested = server.limits.maxConnections
        guard let limit = OpenFileLimit.raiseToHardLimit() else {
            logger.warning("open-file limit unreadable; MAX_CONNECTIONS kept", metadata: ["http.max_connections": "\(requested)"])
            return requested
        }
        let reserved = OpenFileLimit.reservedDescriptors(eventLoops: server.eventLoopCount, otherDescriptors: poolSize + 64)
        let fitting = OpenFileLimit.connections(requested: requested, limit: limit.after, reserved: reserved)
        logger.info(
            "open-file limit",
            metadata: ["limit.before": "\(limit.before)", "limit.after": "\(limit.after)", "limit.hard": "\(limit.hard)"])
        if fitting < requested {
            logger.warning(
                "MAX_CONNECTIONS lowered to fit the open-file limit; raise the hard limit (ulimit -Hn, LimitNOFILE=) for more",
                metadata: ["http.max_connections": "\(fitting)", "http.max_connections_requested": "\(requested)", "limit.hard": "\(limit.hard)"])
        }
        return fitting
    }

    /// A service that starts before its database (a container restart, a host boot) waits for it a
    /// while instead of failing at once. A refusal that retrying cannot fix (no such database, wrong
    /// password) stops it at once with what to do; so does any other migration error. Migrations run on a
    /// connection of their own, without the service's statement timeout
    /// (``PostgresConnectionSettings/forMigrations(ioTimeout:)``).
    private func prepareDatabase(
        databaseURL: String, settings: PostgresConnectionSettings, migrator: Migrator, migrate: Bool, logger: Logger
    ) async throws {
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while true {
            do {
                try await migrator.migrate(conninfo: databaseURL, settings: settings, applying: migrate)
                return
            } catch let error as StoreUnavailableError
                where error.cause.refusal == nil && error.cause.isConnectionProblem && ContinuousClock.now < deadline
            {
                logger.warning("database not reachable yet; retrying", metadata: ["error": "\(error.cause)"])
                try await Task.sleep(for: .seconds(1))
            } catch {
                throw DatabaseStartupError.translating(error)
            }
        }
    }
}

/// The database refused `serve` or `migrate` in a way that only an operator can fix; the message (shown
/// by ArgumentParser, exit status 1) says what to do.
struct DatabaseStartupError: Error, CustomStringConvertible {
    var refusal: StoreConnectionRefusal
    var cause: StoreFailureDetail

    var description: String {
        "cannot use the database: \(refusal.remedy(connectionString: "DATABASE_URL (--database-url)")) (\(cause))"
    }
}

extension DatabaseStartupError {
    /// `error` as the command reports it: a refusal only an operator can fix becomes this error (its message
    /// says what to do); anything else is returned unchanged.
    static func translating(_ error: any Error) -> any Error {
        guard let error = error as? StoreUnavailableError, let refusal = error.cause.refusal else { return error }
        return DatabaseStartupError(refusal: refusal, cause: error.cause)
    }
}

/// Each setting's default, taken from the library type that owns it (or, for the few that belong to the
/// command itself, written here once), so the help text and the resolved value cannot disagree.
enum ServeDefaults {
    static let server = HTTPServerConfiguration()
    static let pool = PostgresPool.Configuration(conninfo: "")
    static let readPoolSize = 8
    static let listing = ListingLimit.Configuration()
    static let readRouting = ReadStandby.Configuration()
    static let listener = JobCompletionListener.Configuration(conninfo: "")
    static let application = CallbackApplication.Configuration(requiredSchemaVersion: 0)
    static let reconciler = ReconcilerConfiguration()
    static let verifier = CallbackVerifierConfiguration()
    static let retention = RetentionPolicy()
    static let retentionInterval: Duration = .seconds(3600)
    static let consoleRollupInterval: Duration = .seconds(30)
    static let sequencer = EventSequencerConfiguration()
    static let webhooks = WebhookDeliveryConfiguration()
    static let autoMigrate = true
    static let verifyCallbacks = false
    static let logLevel = Logger.Level.info
    static let logFormat = "text"
    static let logBufferBytes = LogOutput.Configuration().bufferLimit
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
            flag: flag, flagName: "verify-callbacks", env: "VERIFY_CALLBACKS", default: ServeDefaults.verifyCallbacks, parse: SettingParsers.bool,
            expected: "true or false")
        if enabled && !ciConfigured {
            throw ValidationError(
                "VERIFY_CALLBACKS=true (--verify-callbacks) needs CI credentials to ask CI: set CI_SECRET_ID, CI_SECRET_KEY, CI_BUCKET and CI_REGION")
        }
        var verifier = ServeDefaults.verifier
        verifier.interval = try resolver.required(
            flag: nil, flagName: "", env: "VERIFY_INTERVAL", default: verifier.interval, parse: SettingParsers.duration,
            expected: "a duration such as 5s")
        return VerificationSettings(enabled: enabled, verifier: verifier)
    }
}

/// Prints the ingest statement, so `Benchmarks/bench.py` can measure PostgreSQL's own ceiling with
/// pgbench on exactly the SQL the service runs (see Benchmarks/README.md).
struct IngestSQL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest-sql",
        abstract: "Prints the SQL statement that stores one callback (for pgbench; Benchmarks/bench.py uses it).")

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
