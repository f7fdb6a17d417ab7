import Foundation

/// An error from the PostgreSQL layer: connecting, querying, decoding or the connection pool.
///
/// `description` is safe to log and to show: it carries the code, the SQLSTATE and the server's primary
/// message, never SQL text, bind values, or a password from a connection string (messages coming from libpq
/// go through ``PostgresConnInfo/redacted(_:)``).
public struct PostgresError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What kind of failure this is; switch on it to decide how to answer (see ``isConnectionProblem``).
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case connectionFailed
            case connectionLost
            case queryFailed
            case poolClosed
            case invalidResult
            case timeout
            case serverTimeout
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// Could not connect: server down, bad URL, authentication refused, connect timeout.
        public static let connectionFailed = Code(.connectionFailed)
        /// The connection broke during a query (or the server is shutting the session down).
        public static let connectionLost = Code(.connectionLost)
        /// The server rejected the statement; ``PostgresError/sqlState`` says why.
        public static let queryFailed = Code(.queryFailed)
        /// The pool was closed before the work could run.
        public static let poolClosed = Code(.poolClosed)
        /// libpq returned a result this layer does not expect (COPY, wrong status), or decoding failed.
        public static let invalidResult = Code(.invalidResult)
        /// The work waited in the pool's queue longer than ``PostgresPool/Configuration/acquireTimeout``.
        public static let timeout = Code(.timeout)
        /// The server sent no answer within ``PostgresConnectionSettings/ioTimeout`` (a half-open or stuck
        /// connection); the connection was closed.
        public static let serverTimeout = Code(.serverTimeout)

        public var description: String { self.base.rawValue }
    }

    /// What kind of failure this is.
    public var code: Code
    /// The five-character SQLSTATE reported by the server (for example `23505`), when there is one.
    public var sqlState: String?
    /// The server's (or libpq's) primary message, redacted; never SQL text nor bind values.
    public var serverMessage: String?
    /// The libpq step that failed (for example `PQprepare`), for `debugDescription` only.
    var operation: String?
    /// `true` when the connection failed after a command that commits (a statement in an implicit
    /// transaction, a pipeline's Sync, `COMMIT`) was handed to the socket: the server may have committed it
    /// and only the answer was lost. `false` means the work certainly did not commit.
    public var outcomeUnknown = false

    /// Creates an error; `serverMessage` is redacted here so no caller can forget to.
    public init(code: Code, sqlState: String? = nil, serverMessage: String? = nil) {
        self.init(code: code, sqlState: sqlState, serverMessage: serverMessage, operation: nil)
    }

    init(code: Code, sqlState: String? = nil, serverMessage: String?, operation: String?) {
        self.code = code
        self.sqlState = sqlState
        self.serverMessage = serverMessage.map(Self.tidy)
        self.operation = operation
    }

    /// `true` for failures that mean "the database is unavailable right now" (connection failed or lost,
    /// or no pooled connection in time): an HTTP caller answers 503 and the client retries later.
    public var isConnectionProblem: Bool {
        self.code == .connectionFailed || self.code == .connectionLost || self.code == .timeout || self.code == .serverTimeout
    }

    /// `true` when the server cancelled the statement because it ran longer than `statement_timeout`
    /// (SQLSTATE 57014): the database is reachable but too slow right now; the connection stays usable.
    public var isStatementTimeout: Bool {
        self.code == .queryFailed && self.sqlState == "57014"
    }

    /// For example `PostgresError(queryFailed, sqlState: 23505): duplicate key value violates unique constraint "t_pkey"`.
    public var description: String {
        var text = "PostgresError(\(self.code)"
        if let sqlState = self.sqlState {
            text += ", sqlState: \(sqlState)"
        }
        text += ")"
        if let message = self.serverMessage {
            text += ": \(message)"
        }
        if self.outcomeUnknown {
            text += " (after a commit was sent: outcome unknown)"
        }
        return text
    }

    public var debugDescription: String {
        var parts = ["code: \(self.code)"]
        if let sqlState = self.sqlState {
            parts.append("sqlState: \(sqlState)")
        }
        if let message = self.serverMessage {
            parts.append("serverMessage: \(String(reflecting: message))")
        }
        if let operation = self.operation {
            parts.append("operation: \(operation)")
        }
        if self.outcomeUnknown {
            parts.append("outcomeUnknown: true")
        }
        return "PostgresError(\(parts.joined(separator: ", ")))"
    }

    /// libpq messages end with a newline and may span lines ("connection to server … failed: …\n\tIs the
    /// server running…"): one line reads better in logs. Redaction happens here too.
    private static func tidy(_ message: String) -> String {
        let lines = message.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        return PostgresConnInfo.redacted(lines.joined(separator: "; "))
    }
}

extension PostgresError {
    static func connectionFailed(_ message: String?, operation: String = "connect") -> PostgresError {
        PostgresError(code: .connectionFailed, serverMessage: message, operation: operation)
    }

    static func connectionLost(_ message: String?, operation: String) -> PostgresError {
        PostgresError(code: .connectionLost, serverMessage: message, operation: operation)
    }

    /// This error, marked as leaving a commit's outcome unknown when `mayCommit` is true.
    public func withOutcomeUnknown(_ mayCommit: Bool) -> PostgresError {
        var error = self
        error.outcomeUnknown = error.outcomeUnknown || mayCommit
        return error
    }

    static func serverTimeout(_ timeout: Duration, operation: String) -> PostgresError {
        PostgresError(
            code: .serverTimeout,
            serverMessage: "no answer from the server within \(timeout); the connection was closed",
            operation: operation
        )
    }

    static func invalidResult(_ message: String, operation: String) -> PostgresError {
        PostgresError(code: .invalidResult, serverMessage: message, operation: operation)
    }

    /// The error a text parameter with a NUL byte gets: PostgreSQL text cannot hold 0x00, and a C string
    /// would silently cut the value at that byte. Same SQLSTATE the server reports for such input.
    static func nulInText(operation: String) -> PostgresError {
        PostgresError(
            code: .queryFailed,
            sqlState: "22021",
            serverMessage: "text value contains a NUL (0x00) byte, which PostgreSQL text cannot store",
            operation: operation
        )
    }
}

/// Helpers for connection strings (`key=value` lists and `postgresql://` URIs).
public enum PostgresConnInfo: Sendable {
    /// Returns `text` with every password hidden: `password=…` / `password='…'` key-value pairs, URI
    /// query parameters (`?password=…`) and URI user info (`user:secret@` → `user:***@`).
    ///
    /// Use it before logging a connection string or anything libpq said about one.
    public static func redacted(_ text: String) -> String {
        var output = Substring(text)
        output = Self.redactUserInfo(output)
        output = Self.redactPasswordPairs(output)
        return String(output)
    }

    /// `scheme://user:secret@host` → `scheme://user:***@host`, for every URI in the text.
    private static func redactUserInfo(_ text: Substring) -> Substring {
        var result = ""
        var rest = text
        while let schemeRange = rest.range(of: "://") {
            result += rest[..<schemeRange.upperBound]
            rest = rest[schemeRange.upperBound...]
            // The authority ends at the first '/', '?', '#' or whitespace; user info is before its last '@'.
            let authorityEnd = rest.firstIndex { "/?#".contains($0) || $0.isWhitespace } ?? rest.endIndex
            let authority = rest[..<authorityEnd]
            if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
                result += authority[...colon]
                result += "***"
                result += authority[at...]
                rest = rest[authorityEnd...]
            }
        }
        result += rest
        return Substring(result)
    }

    /// `password=secret`, `password = 'se cret'`, `?password=secret&…` (case-insensitive key).
    private static func redactPasswordPairs(_ text: Substring) -> Substring {
        var result = ""
        var rest = text
        while let keyRange = rest.range(of: "password", options: .caseInsensitive) {
            result += rest[..<keyRange.upperBound]
            rest = rest[keyRange.upperBound...]
            // Only a key followed by '=' (spaces allowed around it) introduces a value.
            let afterKey = rest.drop { $0 == " " }
            guard afterKey.first == "=" else { continue }
            let valueStart = afterKey.dropFirst().drop { $0 == " " }
            result += rest[..<valueStart.startIndex]
            result += "***"
            rest = valueStart[Self.endOfValue(valueStart)...]
        }
        result += rest
        return Substring(result)
    }

    /// The end of a conninfo value: a single-quoted string (with `\'` and `\\` escapes), or up to the next
    /// whitespace, `&` (URI query), `;`, `"` or `'` (the value is quoted inside a larger message).
    private static func endOfValue(_ value: Substring) -> Substring.Index {
        if value.first == "'" {
            var index = value.index(after: value.startIndex)
            while index < value.endIndex {
                let character = value[index]
                if character == "\\" {
                    index = value.index(after: index)
                    if index < value.endIndex { index = value.index(after: index) }
                    continue
                }
                index = value.index(after: index)
                if character == "'" { return index }
            }
            return value.endIndex
        }
        return value.firstIndex { $0.isWhitespace || "&;\"'".contains($0) } ?? value.endIndex
    }
}

/// Why the server refused a connection in a way that retrying cannot fix: someone has to create the
/// database or role, or correct the connection string or the server's rules.
public enum PostgresConnectionRefusal: Sendable, Hashable, CustomStringConvertible {
    case databaseDoesNotExist
    case roleDoesNotExist
    case authenticationFailed
    case passwordRequired
    case notAllowedByHostRules

    /// What to do, in terms of the connection string.
    public var description: String { remedy(connectionString: "the connection string") }

    /// What to do, naming where the connection string comes from (`DATABASE_URL`, say).
    public func remedy(connectionString: String) -> String {
        switch self {
        case .databaseDoesNotExist:
            "the database named in \(connectionString) does not exist: create it (createdb NAME) or correct the name"
        case .roleDoesNotExist:
            "the user named in \(connectionString) does not exist on the server: create the role or correct the user"
        case .authenticationFailed:
            "the server refused the password: correct it in \(connectionString) (or in the password file)"
        case .passwordRequired:
            "the server asks for a password and \(connectionString) gives none: add one (or a password file)"
        case .notAllowedByHostRules:
            "the server's pg_hba.conf allows no connection from this host for this user and database: add a rule, or change \(connectionString)"
        }
    }
}

extension PostgresError {
    /// A connection failure that retrying cannot fix, or `nil` (a server that is down or unreachable may
    /// come back).
    ///
    /// Before a session exists libpq reports the server's refusal as text only, with no SQLSTATE, so the
    /// server's (English) messages are matched. Under another `lc_messages` this finds nothing and the
    /// caller keeps treating the failure as transient: the hint is lost, nothing else.
    public var connectionRefusal: PostgresConnectionRefusal? {
        guard self.code == .connectionFailed, let message = self.serverMessage else { return nil }
        let patterns: [(String, PostgresConnectionRefusal)] = [
            ("\" does not exist", .databaseDoesNotExist),
            ("password authentication failed", .authenticationFailed),
            ("no password supplied", .passwordRequired),
            ("no pg_hba.conf entry", .notAllowedByHostRules),
        ]
        // `FATAL:  role "x" does not exist` and `FATAL:  database "x" does not exist` share their ending.
        if message.contains("role \""), message.contains("\" does not exist") { return .roleDoesNotExist }
        return patterns.first { message.contains($0.0) }?.1
    }
}
