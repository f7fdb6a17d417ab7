import CLibPQ

/// One libpq connection (`PGconn`).
///
/// Not `Sendable`: libpq allows one thread at a time per connection, and ``PostgresPool`` guarantees that by
/// giving each connection its own thread. Every call blocks the calling thread until the server answers, so
/// never call it on Swift concurrency's cooperative pool outside of tests; go through ``PostgresPool``.
///
/// Statements are prepared once per connection (named by a counter, cached by SQL text and parameter
/// types) and then run with `PQexecPrepared`: parsing and planning happen once for the few statements a
/// service repeats. Parameters go as text (format 0) except `bytea` (binary, format 1); results come back as
/// text. The cache holds at most ``preparedStatementCapacity`` statements (least recently used are
/// deallocated). Do not run `DEALLOCATE` or `DISCARD ALL` through ``execute(simpleSQL:)``: the cache would
/// still name the dropped statements.
///
/// Every wait for the server is bounded (``PostgresConnectionSettings``): the socket is non-blocking, and each
/// command's answers are awaited with `poll` until ``PostgresConnectionSettings/ioTimeout``; when that passes
/// the connection is marked broken (so the pool closes and replaces it) and the call throws
/// ``PostgresError/Code/serverTimeout``. A blocking libpq call (`PQexec`) would instead wait as long as the
/// kernel keeps a half-open connection.
public final class PostgresConnection {
    /// How many prepared statements one connection keeps before deallocating the least recently used.
    public static let preparedStatementCapacity = 256

    var handle: OpaquePointer?
    /// Set when a failure left the connection in a state it cannot be reused from (lost, mid-COPY,
    /// mid-pipeline): ``isHealthy`` turns false and the pool discards it.
    var broken = false
    var statements: [StatementKey: PreparedStatement] = [:]
    private var statementCounter = 0
    var useClock: UInt64 = 0
    private var savepointDepth = 0
    /// The deadline for each command's answers (``PostgresConnectionSettings/ioTimeout``).
    let ioTimeout: Duration

    struct StatementKey: Hashable {
        var sql: String
        var types: [UInt32]
    }

    struct PreparedStatement {
        var name: String
        var lastUse: UInt64
    }

    private init(handle: OpaquePointer, ioTimeout: Duration) {
        self.handle = handle
        self.ioTimeout = ioTimeout
    }

    deinit {
        self.close()
    }

    /// Opens a connection from a URI (`postgresql://user@host:port/db?…`) or a `key=value` string.
    ///
    /// The connection always uses UTF-8 (`client_encoding`). `settings` bound the connect, every later wait
    /// for the server, and each statement (`statement_timeout`); its libpq keys (`connect_timeout`,
    /// `keepalives…`, `tcp_user_timeout`) override the same keys in `conninfo`. On failure the half-open
    /// `PGconn` is freed and the error's message (redacted) says why.
    /// - Throws: ``PostgresError/Code/connectionFailed``.
    public static func connect(
        _ conninfo: String, settings: PostgresConnectionSettings = PostgresConnectionSettings()
    ) throws(PostgresError) -> PostgresConnection {
        try Self.connect(conninfo, settings: settings, defaults: [])
    }

    /// `defaults` come before the expanded connection string, so the string may override them; the
    /// settings' keys come after it, so they win (libpq processes `PQconnectdbParams` arrays in order).
    static func connect(
        _ conninfo: String,
        settings: PostgresConnectionSettings,
        defaults: [(key: String, value: String)]
    ) throws(PostgresError) -> PostgresConnection {
        let pairs =
            defaults + [(key: "dbname", value: conninfo)] + settings.libpqParameters + [(key: "client_encoding", value: "UTF8")]
        let connection = withCStringArray(pairs.map(\.key)) { keys in
            withCStringArray(pairs.map(\.value)) { values in
                PQconnectdbParams(keys, values, 1)
            }
        }
        guard let connection else {
            throw .connectionFailed("libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = optionalString(PQerrorMessage(connection))
            PQfinish(connection)
            throw .connectionFailed(message)
        }
        // libpq's default prints server NOTICEs ("drop cascades to …") on standard error, where they
        // would interleave with the service's structured logs. They are informational: drop them.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        // Non-blocking for good: sends only queue and flush what the socket takes, and every wait is this
        // layer's `poll` with a deadline (also PQfinish's farewell message, which would otherwise block on
        // a full socket).
        guard PQsetnonblocking(connection, 1) == 0 else {
            let message = optionalString(PQerrorMessage(connection))
            PQfinish(connection)
            throw .connectionFailed(message ?? "cannot switch the connection to non-blocking mode")
        }
        let wrapped = PostgresConnection(handle: connection, ioTimeout: settings.ioTimeout)
        do {
            try wrapped.execute(simpleSQL: settings.statementTimeoutSQL)
            try wrapped.execute(simpleSQL: PostgresConnectionSettings.jitOffSQL)
        } catch {
            wrapped.close()
            throw .connectionFailed(error.serverMessage)
        }
        return wrapped
    }

    // MARK: State

    /// `true` while the connection is open, not broken, and not inside a failed transaction.
    public var isHealthy: Bool {
        guard let handle = self.handle, !self.broken, PQstatus(handle) == CONNECTION_OK else { return false }
        let status = PQtransactionStatus(handle)
        return status == PQTRANS_IDLE || status == PQTRANS_INTRANS
    }

    /// The server process serving this connection (`pg_backend_pid()`), 0 when closed.
    public var backendPID: Int32 {
        self.handle.map { PQbackendPID($0) } ?? 0
    }

    /// Whether a transaction block is open (possibly failed), so the pool can roll it back.
    var isInTransaction: Bool {
        guard let handle = self.handle else { return false }
        let status = PQtransactionStatus(handle)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR
    }

    /// For a connection that sat idle: reads whatever the server sent meanwhile (for example the FATAL
    /// message and EOF of a server restart) without blocking, so a dead connection is noticed before use.
    func checkIdleConnection() -> Bool {
        guard self.isHealthy, let handle = self.handle else { return false }
        let socket = PQsocket(handle)
        guard socket >= 0 else { return false }
        // A restarting server sends a FATAL message and then closes: the two may arrive in separate
        // reads, and only reading the end of file marks the connection bad. So read until nothing is
        // pending (bounded: an idle connection gets at most a few server messages).
        for _ in 0..<8 {
            guard let readiness = try? SocketWait.wait(socket: socket, forWrite: false, timeout: .zero, operation: "poll") else {
                return false
            }
            guard readiness.readable else { break }
            if PQconsumeInput(handle) == 0 {
                self.broken = true
                break
            }
            // Parses what arrived; an idle connection has no result to wait for.
            _ = PQisBusy(handle)
        }
        return self.isHealthy
    }

    /// Closes the connection (`PQfinish`). Idempotent; also done on deinit.
    public func close() {
        if let handle = self.handle {
            PQfinish(handle)
            self.handle = nil
        }
        self.statements.removeAll()
    }

    // MARK: Queries

    /// Runs one statement with the extended protocol (prepared once per connection, then executed).
    /// - Returns: the rows (empty for commands) and the affected-row count.
    /// - Throws: ``PostgresError/Code/queryFailed`` with the SQLSTATE for a server error,
    ///   ``PostgresError/Code/connectionLost`` when the connection breaks,
    ///   ``PostgresError/Code/serverTimeout`` when no answer comes within the I/O deadline. Outside a
    ///   transaction block the statement commits by itself, so a connection-level error then carries
    ///   ``PostgresError/outcomeUnknown``.
    @discardableResult
    public func query(_ query: SQLQuery) throws(PostgresError) -> PostgresRows {
        let operation = "PQsendQueryPrepared"
        let handle = try self.liveHandle(operation: operation)
        let parameters = try EncodedParameters(query.binds, operation: operation)
        let name = try self.preparedStatementName(sql: query.sql, types: parameters.types, handle: handle)
        let commits = PQtransactionStatus(handle) == PQTRANS_IDLE
        let sent = parameters.withPointers { values, lengths, formats in
            name.withCString { PQsendQueryPrepared(handle, $0, parameters.count, values, lengths, formats, 0) }
        }
        guard sent == 1 else { throw self.sendFailure(handle, operation: operation) }
        return try self.awaitCommand(operation: operation, mayCommit: commits)
    }

    /// Runs SQL text with the simple protocol (`PQexec`): several statements separated by `;`, no
    /// parameters. For migrations and transaction control.
    public func execute(simpleSQL: String) throws(PostgresError) {
        _ = try self.simpleCommand(simpleSQL)
    }

    /// Runs `body` inside `BEGIN` … `COMMIT`. When `body` throws, the transaction is rolled back and the
    /// body's error is rethrown unchanged. Called inside an open transaction, it uses a savepoint instead.
    ///
    /// A `COMMIT` that the server turns into a rollback (because `body` caught a failed statement and
    /// went on) throws ``PostgresError/Code/queryFailed`` with SQLSTATE `25P02`.
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let handle = try self.liveHandle(operation: "BEGIN")
        switch PQtransactionStatus(handle) {
        case PQTRANS_IDLE:
            return try self.runTransaction(begin: "BEGIN", commit: "COMMIT", rollback: "ROLLBACK", isOutermost: true, body)
        case PQTRANS_INTRANS:
            self.savepointDepth += 1
            defer { self.savepointDepth -= 1 }
            let name = "ci_savepoint_\(self.savepointDepth)"
            return try self.runTransaction(
                begin: "SAVEPOINT \(name)",
                commit: "RELEASE SAVEPOINT \(name)",
                rollback: "ROLLBACK TO SAVEPOINT \(name); RELEASE SAVEPOINT \(name)",
                isOutermost: false,
                body
            )
        case PQTRANS_INERROR:
            throw PostgresError(
                code: .queryFailed,
                sqlState: "25P02",
                serverMessage: "current transaction is aborted, commands ignored until end of transaction block",
                operation: "BEGIN"
            )
        default:
            throw PostgresError.invalidResult("connection is busy with another command", operation: "BEGIN")
        }
    }

    private func runTransaction<T>(
        begin: String,
        commit: String,
        rollback: String,
        isOutermost: Bool,
        _ body: (PostgresConnection) throws -> T
    ) throws -> T {
        _ = try self.simpleCommand(begin, mayCommit: false)
        let value: T
        do {
            value = try body(self)
        } catch {
            _ = try? self.simpleCommand(rollback, mayCommit: false)
            throw error
        }
        let tag: String
        do {
            tag = try self.simpleCommand(commit, mayCommit: isOutermost)
        } catch {
            if self.isInTransaction { _ = try? self.simpleCommand(rollback, mayCommit: false) }
            throw error
        }
        if isOutermost && tag == "ROLLBACK" {
            throw PostgresError(
                code: .queryFailed,
                sqlState: "25P02",
                serverMessage: "transaction was rolled back because a statement in it failed",
                operation: "COMMIT"
            )
        }
        return value
    }

    /// Runs simple-protocol SQL and returns the last command tag (the first error, if a statement failed).
    /// `mayCommit` says whether losing the connection leaves the outcome unknown; by default, whenever no
    /// transaction block is open (each statement then commits by itself).
    private func simpleCommand(_ sql: String, mayCommit: Bool? = nil) throws(PostgresError) -> String {
        let operation = "PQsendQuery"
        let handle = try self.liveHandle(operation: operation)
        guard !sql.utf8.contains(0) else { throw .nulInText(operation: operation) }
        let commits = mayCommit ?? (PQtransactionStatus(handle) == PQTRANS_IDLE)
        guard PQsendQuery(handle, sql) == 1 else { throw self.sendFailure(handle, operation: operation) }
        return try self.awaitCommand(operation: operation, mayCommit: commits).commandTag
    }

    // MARK: Waiting for the server

    /// Collects every result of the command just sent, up to the NULL that ends it, within the I/O
    /// deadline; returns the last result, or the first error (as `PQexec` does).
    func awaitCommand(operation: String, mayCommit: Bool) throws(PostgresError) -> PostgresRows {
        let handle = try self.liveHandle(operation: operation)
        let deadline = ContinuousClock.now + self.ioTimeout
        var outcome: Result<PostgresRows, PostgresError>?
        do throws(PostgresError) {
            while let result = try self.nextResult(handle, deadline: deadline, operation: operation) {
                let classified = self.classify(result, operation: operation)
                PQclear(result)
                if case .failure = outcome {} else { outcome = classified }
                // A COPY or other mid-stream state never ends by reading: the connection is retired.
                if self.broken { break }
            }
        } catch {
            self.broken = true
            throw error.withOutcomeUnknown(mayCommit)
        }
        guard let outcome else {
            self.broken = true
            throw PostgresError.connectionLost(optionalString(PQerrorMessage(handle)) ?? "no result", operation: operation)
                .withOutcomeUnknown(mayCommit)
        }
        switch outcome {
        case .success(let rows):
            return rows
        case .failure(let error):
            // A session-ending error (for example a shutdown's FATAL) may follow the commit's own answer.
            throw error.isConnectionProblem ? error.withOutcomeUnknown(mayCommit) : error
        }
    }

    /// The next result of the command (or pipeline) in flight, without ever blocking inside libpq:
    /// flushes pending output, and waits for the socket (readable, or writable while output remains)
    /// until a result is complete or `deadline` passes (then the connection is broken).
    func nextResult(_ handle: OpaquePointer, deadline: ContinuousClock.Instant, operation: String) throws(PostgresError) -> OpaquePointer? {
        while true {
            let flushed = PQflush(handle)
            guard flushed >= 0 else {
                self.broken = true
                throw .connectionLost(optionalString(PQerrorMessage(handle)), operation: operation)
            }
            if PQisBusy(handle) == 0 {
                return PQgetResult(handle)
            }
            let socket = PQsocket(handle)
            guard socket >= 0 else {
                self.broken = true
                throw .connectionLost(optionalString(PQerrorMessage(handle)), operation: operation)
            }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else {
                self.broken = true
                throw .serverTimeout(self.ioTimeout, operation: operation)
            }
            let readiness = try SocketWait.wait(socket: socket, forWrite: flushed == 1, timeout: remaining, operation: operation)
            if readiness.readable, PQconsumeInput(handle) == 0 {
                self.broken = true
                throw .connectionLost(optionalString(PQerrorMessage(handle)), operation: operation)
            }
        }
    }

    func sendFailure(_ handle: OpaquePointer, operation: String) -> PostgresError {
        if PQstatus(handle) != CONNECTION_OK { self.broken = true }
        return .connectionLost(optionalString(PQerrorMessage(handle)) ?? "could not send the command", operation: operation)
    }

    // MARK: Prepared statements

    private func preparedStatementName(sql: String, types: [UInt32], handle: OpaquePointer) throws(PostgresError) -> String {
        let key = StatementKey(sql: sql, types: types)
        self.useClock &+= 1
        // One hash of the (often multi-KB) SQL text per call, not one per read and write.
        if let index = self.statements.index(forKey: key) {
            self.statements.values[index].lastUse = self.useClock
            return self.statements.values[index].name
        }
        guard !sql.utf8.contains(0) else { throw .nulInText(operation: "PQsendPrepare") }
        self.trimStatementCache(toAtMost: Self.preparedStatementCapacity - 1)
        let name = self.nextStatementName()
        let sent = name.withCString { namePointer in
            types.withUnsafeBufferPointer { typePointer in
                PQsendPrepare(handle, namePointer, sql, Int32(types.count), typePointer.baseAddress)
            }
        }
        guard sent == 1 else { throw self.sendFailure(handle, operation: "PQsendPrepare") }
        _ = try self.awaitCommand(operation: "PQsendPrepare", mayCommit: false)
        self.statements[key] = PreparedStatement(name: name, lastUse: self.useClock)
        return name
    }

    /// Statements this connection has prepared (`PQsendPrepare`), counting one prepared again after its
    /// eviction from the cache. It levels off once each statement run on the connection has been prepared;
    /// a count that keeps rising with the work done means a statement whose text changes from call to call,
    /// parsed and planned again on every run.
    public var statementsPrepared: Int { self.statementCounter }

    func nextStatementName() -> String {
        self.statementCounter += 1
        return "ci_stmt_\(self.statementCounter)"
    }

    /// Deallocates least recently used statements until at most `limit` remain. Skipped inside a failed
    /// transaction (the server would refuse); the cache then stays over its limit until a later call.
    func trimStatementCache(toAtMost limit: Int) {
        while self.statements.count > limit, let handle = self.handle, PQtransactionStatus(handle) != PQTRANS_INERROR {
            guard let oldest = self.statements.min(by: { $0.value.lastUse < $1.value.lastUse }) else { return }
            guard (try? self.simpleCommand("DEALLOCATE \(oldest.value.name)", mayCommit: false)) != nil else { return }
            self.statements[oldest.key] = nil
        }
    }

    // MARK: Results and errors

    func liveHandle(operation: String) throws(PostgresError) -> OpaquePointer {
        guard let handle = self.handle else {
            throw .connectionLost("connection is closed", operation: operation)
        }
        guard PQstatus(handle) == CONNECTION_OK, !self.broken else {
            self.broken = true
            throw .connectionLost(optionalString(PQerrorMessage(handle)) ?? "connection is broken", operation: operation)
        }
        return handle
    }

    /// The outcome of one result, which stays owned by the caller.
    func classify(_ result: OpaquePointer, operation: String) -> Result<PostgresRows, PostgresError> {
        let status = PQresultStatus(result)
        switch status {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return .success(Self.copyRows(result))
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
            return .failure(self.serverError(result, operation: operation))
        case PGRES_PIPELINE_ABORTED:
            return .failure(
                PostgresError(
                    code: .queryFailed,
                    serverMessage: "pipeline aborted: not executed because an earlier query in the batch failed",
                    operation: operation
                )
            )
        default:
            // COPY and single-row modes leave the protocol mid-stream; this layer never starts them, so the
            // connection cannot be trusted afterwards.
            self.broken = true
            let name = optionalString(PQresStatus(status)) ?? "\(status.rawValue)"
            return .failure(.invalidResult("unexpected result status \(name)", operation: operation))
        }
    }

    private func serverError(_ result: OpaquePointer, operation: String) -> PostgresError {
        let sqlState = optionalString(PQresultErrorField(result, Int32(UInt8(ascii: "C"))))
        var message =
            optionalString(PQresultErrorField(result, Int32(UInt8(ascii: "M"))))
            ?? optionalString(PQresultErrorMessage(result))
        // Data exceptions (class 22) quote the offending input, which is a bind value: hide it.
        if sqlState?.hasPrefix("22") == true {
            message = message.map(Self.hidingQuotedValues)
        }
        // Class 08 (connection exception) and 57P01-57P03 (server shutting down) end the session even
        // when libpq has not yet seen the socket close.
        let endsSession =
            sqlState.map { $0.hasPrefix("08") || $0 == "57P01" || $0 == "57P02" || $0 == "57P03" } ?? false
        if endsSession || self.handle.map({ PQstatus($0) != CONNECTION_OK }) ?? true {
            self.broken = true
            return PostgresError(code: .connectionLost, sqlState: sqlState, serverMessage: message, operation: operation)
        }
        return PostgresError(code: .queryFailed, sqlState: sqlState, serverMessage: message, operation: operation)
    }

    /// `invalid input syntax for type integer: "abc"` → `invalid input syntax for type integer: "***"`.
    static func hidingQuotedValues(_ message: String) -> String {
        var result = ""
        var inQuotes = false
        for character in message {
            if character == "\"" {
                if inQuotes { result += "***" }
                inQuotes.toggle()
                result.append(character)
            } else if !inQuotes {
                result.append(character)
            }
        }
        if inQuotes { result += "***" }
        return result
    }

    private static func copyRows(_ result: OpaquePointer) -> PostgresRows {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        var columns: [String] = []
        var types: [UInt32] = []
        columns.reserveCapacity(columnCount)
        types.reserveCapacity(columnCount)
        for column in 0..<Int32(columnCount) {
            columns.append(optionalString(PQfname(result, column)) ?? "")
            types.append(PQftype(result, column))
        }
        var values: [String?] = []
        values.reserveCapacity(rowCount * columnCount)
        for row in 0..<Int32(rowCount) {
            for column in 0..<Int32(columnCount) {
                if PQgetisnull(result, row, column) == 1 {
                    values.append(nil)
                } else {
                    let bytes = UnsafeRawBufferPointer(
                        start: PQgetvalue(result, row, column),
                        count: Int(PQgetlength(result, row, column))
                    )
                    values.append(String(decoding: bytes, as: UTF8.self))
                }
            }
        }
        let tag = optionalString(PQcmdStatus(result)) ?? ""
        let affected = optionalString(PQcmdTuples(result)).flatMap { Int($0) } ?? 0
        return PostgresRows(
            columns: columns,
            typeOIDs: types,
            values: values,
            rowCount: rowCount,
            affectedRows: affected,
            commandTag: tag
        )
    }
}

/// A `PGconn` must not be used by two threads at once: the type is deliberately not `Sendable`.
@available(*, unavailable)
extension PostgresConnection: Sendable {}
