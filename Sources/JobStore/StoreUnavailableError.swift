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
    /// The driver's error, for logs (redacted: no SQL, no values, no passwords).
    public var cause: PostgresError

    public init(reason: Reason, cause: PostgresError) {
        self.reason = reason
        self.cause = cause
    }

    public var description: String { "StoreUnavailableError(\(reason)): \(cause)" }

    /// `error` as the store reports it: connection problems, statement timeouts and a closed pool become
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

extension JobStore {
    /// Runs a store operation, translating the driver's errors (see ``StoreUnavailableError``).
    func translatingErrors<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw StoreUnavailableError.translating(error)
        }
    }

    /// ``PostgresPool/withConnection(_:)`` with the driver's errors translated.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        try await translatingErrors { try await pool.withConnection(body) }
    }
}
