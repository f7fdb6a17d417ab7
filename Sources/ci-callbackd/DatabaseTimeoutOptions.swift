import ArgumentParser
import PostgresLibPQ

/// How long the service waits for PostgreSQL: `DB_CONNECT_TIMEOUT`, `DB_IO_TIMEOUT`,
/// `DB_STATEMENT_TIMEOUT` and `DB_ACQUIRE_TIMEOUT`. Keepalives keep ``PostgresConnectionSettings``' defaults.
struct DatabaseTimeoutOptions: ParsableArguments {
    @Option(name: .customLong("db-connect-timeout"), help: "Time to establish a PostgreSQL connection, e.g. 5s. [env: DB_CONNECT_TIMEOUT, default: 5s]")
    var connectTimeout: String?

    @Option(
        name: .customLong("db-io-timeout"),
        help: "Longest wait for PostgreSQL's answer; a connection that misses it is closed and replaced (also tcp_user_timeout). Must exceed the statement timeout. [env: DB_IO_TIMEOUT, default: 8s]")
    var ioTimeout: String?

    @Option(
        name: .customLong("db-statement-timeout"),
        help: "statement_timeout of the service's queries (ingest and lookups; migrations have none), 0 = none. [env: DB_STATEMENT_TIMEOUT, default: 5s]")
    var statementTimeout: String?

    @Option(name: .customLong("db-acquire-timeout"), help: "Longest wait for a free pooled connection, e.g. 10s. [env: DB_ACQUIRE_TIMEOUT, default: 10s]")
    var acquireTimeout: String?

    struct Resolved {
        var connection: PostgresConnectionSettings
        var acquireTimeout: Duration
    }

    /// - Throws: `ValidationError` naming the setting for a bad value, or when the I/O deadline would cut
    ///   off statements the server is still allowed to run.
    func resolve(_ resolver: SettingResolver) throws -> Resolved {
        var settings = PostgresConnectionSettings()
        settings.connectTimeout = try resolver.required(
            flag: connectTimeout, flagName: "db-connect-timeout", env: "DB_CONNECT_TIMEOUT", default: settings.connectTimeout,
            parse: SettingParsers.duration, expected: "a duration such as 5s")
        settings.ioTimeout = try resolver.required(
            flag: ioTimeout, flagName: "db-io-timeout", env: "DB_IO_TIMEOUT", default: settings.ioTimeout, parse: SettingParsers.duration,
            expected: "a duration such as 10s")
        settings.statementTimeout = try resolver.required(
            flag: statementTimeout, flagName: "db-statement-timeout", env: "DB_STATEMENT_TIMEOUT", default: settings.statementTimeout,
            parse: SettingParsers.durationOrZero, expected: "a duration such as 5s, or 0")
        let acquire = try resolver.required(
            flag: acquireTimeout, flagName: "db-acquire-timeout", env: "DB_ACQUIRE_TIMEOUT", default: Duration.seconds(10),
            parse: SettingParsers.duration, expected: "a duration such as 10s")
        if settings.statementTimeout > .zero && settings.ioTimeout <= settings.statementTimeout {
            throw ValidationError(
                "DB_IO_TIMEOUT (--db-io-timeout, \(settings.ioTimeout)) must exceed DB_STATEMENT_TIMEOUT (--db-statement-timeout, \(settings.statementTimeout)): the server must be able to answer a statement before the service gives up on it"
            )
        }
        return Resolved(connection: settings, acquireTimeout: acquire)
    }
}
