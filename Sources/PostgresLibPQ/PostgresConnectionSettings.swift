import TimeUnits
/// How long a connection may wait for PostgreSQL, and how a dead peer is noticed: one set of bounds for every
/// connection the service makes (the pool, the LISTEN connection, the sweep lock, migrations).
///
/// Three layers, each for a failure the others miss:
/// - ``ioTimeout`` is the service's own deadline on every wait for the server's answer. It is the one that
///   catches a half-open connection whose packets are acknowledged but never answered (a stuck proxy, a
///   frozen server): the connection is then closed and the caller gets
///   ``PostgresError/Code/serverTimeout``.
/// - ``statementTimeout`` (`SET statement_timeout`) makes the server cancel a statement that runs too long
///   (SQLSTATE 57014), so no single query holds a pooled connection; the connection stays usable.
/// - TCP keepalives and ``tcpUserTimeout`` let the kernel notice a peer that vanished, also on idle
///   connections and while a long statement runs (libpq ignores them on Unix sockets).
///
/// The server should answer before the service gives up on it: keep ``ioTimeout`` above
/// ``statementTimeout``.
public struct PostgresConnectionSettings: Sendable, Hashable {
    /// Time allowed to establish a connection (libpq `connect_timeout`, whole seconds, at least 2 in libpq's
    /// reading; rounded up). Default 5 s.
    public var connectTimeout: Duration = .seconds(5)
    /// Longest wait for the answers to one command or pipeline, and for the reply to a liveness check.
    /// On expiry the connection is closed (`PQfinish`) and replaced. Default 8 s: a request that meets a silent
    /// server gets its 503 within 10 s, the bound the fault suite (`scripts/chaos blackhole`) holds it to.
    public var ioTimeout: Duration = .seconds(8)
    /// Server-side bound on each statement (`statement_timeout`); `.zero` turns it off. Default 5 s.
    public var statementTimeout: Duration = .seconds(5)
    /// Idle time before the first TCP keepalive probe (`keepalives_idle`). Default 10 s.
    public var keepalivesIdle: Duration = .seconds(10)
    /// Time between unanswered keepalive probes (`keepalives_interval`). Default 5 s.
    public var keepalivesInterval: Duration = .seconds(5)
    /// Unanswered probes before the kernel drops the connection (`keepalives_count`). Default 3.
    public var keepalivesCount: Int = 3
    /// Time transmitted data may stay unacknowledged before the kernel drops the connection
    /// (`tcp_user_timeout`); `nil` uses ``ioTimeout``. Default `nil`.
    public var tcpUserTimeout: Duration?

    public init() {}

    /// For migrations: a migration may rewrite a large table and `pg_advisory_lock` waits for another
    /// replica's migrations, so there is no statement timeout and the I/O deadline is `ioTimeout` (default
    /// 1 h); keepalives and `tcp_user_timeout` still notice a vanished server within seconds.
    public func forMigrations(ioTimeout: Duration = .seconds(3600)) -> PostgresConnectionSettings {
        var settings = self
        settings.statementTimeout = .zero
        settings.ioTimeout = max(ioTimeout, self.ioTimeout)
        settings.tcpUserTimeout = self.effectiveTCPUserTimeout
        return settings
    }

    var effectiveTCPUserTimeout: Duration { self.tcpUserTimeout ?? self.ioTimeout }

    /// The libpq parameters these settings set; they override the same keys in a connection string.
    public var libpqParameters: [(key: String, value: String)] {
        [
            (key: "connect_timeout", value: String(Self.wholeSeconds(self.connectTimeout))),
            (key: "keepalives", value: "1"),
            (key: "keepalives_idle", value: String(Self.wholeSeconds(self.keepalivesIdle))),
            (key: "keepalives_interval", value: String(Self.wholeSeconds(self.keepalivesInterval))),
            (key: "keepalives_count", value: String(max(1, self.keepalivesCount))),
            (key: "tcp_user_timeout", value: String(max(0, self.effectiveTCPUserTimeout.inMillisecondsRoundedUp))),
        ]
    }

    /// The `SET` that applies ``statementTimeout`` (milliseconds; 0 is PostgreSQL's "no limit").
    public var statementTimeoutSQL: String {
        "SET statement_timeout = \(max(0, self.statementTimeout.inMillisecondsRoundedUp))"
    }

    /// The `SET` that turns JIT compilation off for the session. PostgreSQL compiles a statement whose
    /// estimated cost passes `jit_above_cost`, and the estimate, not the work done, decides: a delivery
    /// lease that read 16 rows in under 1 ms (a walk of an index that stops at its LIMIT, estimated as if it
    /// might read the whole table) spent 83 ms compiling. Every statement here is a short, indexed one, for
    /// which compilation can only cost time.
    public static let jitOffSQL = "SET jit = off"

    /// Rounded up, and at least 1, so a sub-second setting never becomes libpq's "no timeout" (0).
    static func wholeSeconds(_ duration: Duration) -> Int {
        max(1, Int((duration / .seconds(1)).rounded(.up)))
    }

}
