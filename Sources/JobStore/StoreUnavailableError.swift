import PostgresLibPQ

/// The store could not do what was asked right now, and says what is known about the write: the service
/// answers 503 with `Retry-After`, and the client retries.
///
/// ``JobStore`` turns the driver's connection-level failures, statement timeouts and pool waits into this
/// error, so callers decide on what the store knows rather than on libpq's codes.
public struct StoreUnavailableError: Error, Sendable, CustomStringConvertible {
    /// Why the store is unavailable, and whether a write may have happened anyway.
    public struct Reason: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case unreachable
            case overloaded
            case outcomeUnknown
        }

        private let base: Base

        private init(_ base: Base) { self.base = base }

        /// PostgreSQL could not be reached, or the connection broke or went silent, before anything was
        /// committed: nothing of the request was stored.
        public static let unreachable = Reason(.unreachable)
        /// PostgreSQL is reachable but too slow: a statement ran into `statement_timeout`, or no pooled
        /// connection became free in time. Nothing of the request was stored.
        public static let overloaded = Reason(.overloaded)
        /// The connection broke after the commit was sent and no later attempt settled it: the write may
        /// or may not be stored. Repeating it is safe (an identical body is stored once).
        public static let outcomeUnknown = Reason(.outcomeUnknown)

        public var description: String { self.base.rawValue }
    }

    public var reason: Reason
    /// What the database (or the connection to it) said, as plain values: for logs and for deciding, e.g.
    /// on a refusal that retrying cannot fix (``StoreFailureDetail/refusal``).
    public var cause: StoreFailureDetail

    public init(reason: Reason, cause: StoreFailureDetail) {
        self.reason = reason
        self.cause = cause
    }

    init(reason: Reason, cause: PostgresError) {
        self.init(reason: reason, cause: StoreFailureDetail(cause))
    }

    public var description: String { "StoreUnavailableError(\(reason)): \(cause)" }

    /// `error` as the store reports it: connection problems (a refusal too, with
    /// ``StoreFailureDetail/refusal`` set), statement timeouts and a closed pool become
    /// ``StoreUnavailableError``; anything else is returned unchanged.
    static func translating(_ error: any Error) -> any Error {
        guard let error = error as? PostgresError else { return error }
        if error.outcomeUnknown && (error.isConnectionProblem || error.isStatementTimeout) {
            return StoreUnavailableError(reason: .outcomeUnknown, cause: error)
        }
        if error.isStatementTimeout || error.code == .timeout {
            return StoreUnavailableError(reason: .overloaded, cause: error)
        }
        if error.isConnectionProblem || error.code == .poolClosed {
            return StoreUnavailableError(reason: .unreachable, cause: error)
        }
        return error
    }
}

/// A database failure as the store reports it: the server's SQLSTATE and message and how the connection
/// failed, as plain values, so that nothing above ``JobStore`` needs the driver's types to handle one.
public struct StoreFailureDetail: Sendable, Hashable, CustomStringConvertible {
    /// The five-character SQLSTATE the server reported (for example `57014`), when there is one.
    public var sqlState: String?
    /// The server's (or the client library's) primary message, redacted: never SQL text, bind values or
    /// a password.
    public var message: String?
    /// The connection failed, broke, went silent, or no pooled connection became free in time: the
    /// database is unavailable right now, and trying again later may work.
    public var isConnectionProblem: Bool
    /// Set when the server refused the connection in a way that retrying cannot fix.
    public var refusal: StoreConnectionRefusal?
    /// The whole failure in one line, safe to log (the same redaction as ``message``).
    public var description: String

    init(_ error: PostgresError) {
        self.sqlState = error.sqlState
        self.message = error.serverMessage
        self.isConnectionProblem = error.isConnectionProblem
        self.refusal = error.connectionRefusal.map(StoreConnectionRefusal.init)
        self.description = error.description
    }
}

/// Why the server refused a connection in a way that only an operator can fix: a missing database or role,
/// a wrong password, or the server's host rules.
public struct StoreConnectionRefusal: Sendable, Hashable, CustomStringConvertible {
    private let refusal: PostgresConnectionRefusal

    init(_ refusal: PostgresConnectionRefusal) { self.refusal = refusal }

    /// What to do, naming where the connection string comes from (`DATABASE_URL`, say).
    public func remedy(connectionString: String) -> String { refusal.remedy(connectionString: connectionString) }

    /// What to do, in terms of "the connection string".
    public var description: String { refusal.description }
}

extension StoreUnavailableError {
    /// Runs blocking or asynchronous store work outside ``JobStore`` (the sweep lock, a migration, a
    /// retention or reprocess run), translating the driver's errors as ``JobStore`` does.
    static func translatingErrors<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw translating(error)
        }
    }
}

extension JobStore {
    /// Runs a store operation, translating the driver's errors (see ``StoreUnavailableError``).
    func translatingErrors<T>(_ body: () async throws -> T) async throws -> T {
        try await StoreUnavailableError.translatingErrors(body)
    }

    /// ``PostgresPool/withConnection(_:)`` with the driver's errors translated.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        try await translatingErrors { try await pool.withConnection(body) }
    }
}
