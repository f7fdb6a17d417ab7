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

    struct StatementKey: Hashable {
        var sql: String
        var types: [UInt32]
    }

    struct PreparedStatement {
        var name: String
        var lastUse: UInt64
    }

    private init(handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        self.close()
    }

    /// Opens a connection from a URI (`postgresql://user@host:port/db?…`) or a `key=value` string.
    ///
    /// The connection always uses UTF-8 (`client_encoding`). On failure the half-open `PGconn` is freed
    /// and the error's message (redacted) says why.
    /// - Throws: ``PostgresError/Code/connectionFailed``.
    public static func connect(_ conninfo: String) throws(PostgresError) -> PostgresConnection {
        try Self.connect(conninfo, defaults: [], overrides: [])
    }

    /// `defaults` come before the expanded connection string, so the string may override them; `overrides`
    /// come after it, so they win (libpq processes `PQconnectdbParams` arrays in order).
    static func connect(
        _ conninfo: String,
        defaults: [(key: String, value: String)],
        overrides: [(key: String, value: String)]
    ) throws(PostgresError) -> PostgresConnection {
        let pairs = defaults + [(key: "dbname", value: conninfo)] + overrides + [(key: "client_encoding", value: "UTF8")]
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
        return PostgresConnection(handle: connection)
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
    ///   ``PostgresError/Code/connectionLost`` when the connection breaks.
    @discardableResult
    public func query(_ query: SQLQuery) throws(PostgresError) -> PostgresRows {
        let operation = "PQexecPrepared"
        let handle = try self.liveHandle(operation: operation)
        let parameters = try EncodedParameters(query.binds, operation: operation)
        let name = try self.preparedStatementName(sql: query.sql, types: parameters.types, handle: handle)
        let result = parameters.withPointers { values, lengths, formats in
            name.withCString { PQexecPrepared(handle, $0, parameters.count, values, lengths, formats, 0) }
        }
        return try self.rows(from: result, operation: operation)
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
        try self.execute(simpleSQL: begin)
        let value: T
        do {
            value = try body(self)
        } catch {
            try? self.execute(simpleSQL: rollback)
            throw error
        }
        let tag: String
        do {
            tag = try self.simpleCommand(commit)
        } catch {
            if self.isInTransaction { try? self.execute(simpleSQL: rollback) }
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

    /// Runs simple-protocol SQL and returns the last command tag.
    private func simpleCommand(_ sql: String) throws(PostgresError) -> String {
        let operation = "PQexec"
        let handle = try self.liveHandle(operation: operation)
        guard !sql.utf8.contains(0) else { throw .nulInText(operation: operation) }
        let result = PQexec(handle, sql)
        return try self.rows(from: result, operation: operation).commandTag
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
        guard !sql.utf8.contains(0) else { throw .nulInText(operation: "PQprepare") }
        self.trimStatementCache(toAtMost: Self.preparedStatementCapacity - 1)
        let name = self.nextStatementName()
        let result = name.withCString { namePointer in
            types.withUnsafeBufferPointer { typePointer in
                PQprepare(handle, namePointer, sql, Int32(types.count), typePointer.baseAddress)
            }
        }
        _ = try self.rows(from: result, operation: "PQprepare")
        self.statements[key] = PreparedStatement(name: name, lastUse: self.useClock)
        return name
    }

    func nextStatementName() -> String {
        self.statementCounter += 1
        return "ci_stmt_\(self.statementCounter)"
    }

    /// Deallocates least recently used statements until at most `limit` remain. Skipped inside a failed
    /// transaction (the server would refuse); the cache then stays over its limit until a later call.
    func trimStatementCache(toAtMost limit: Int) {
        while self.statements.count > limit, let handle = self.handle, PQtransactionStatus(handle) != PQTRANS_INERROR {
            guard let oldest = self.statements.min(by: { $0.value.lastUse < $1.value.lastUse }) else { return }
            guard let result = PQexec(handle, "DEALLOCATE \(oldest.value.name)") else { return }
            let succeeded = PQresultStatus(result) == PGRES_COMMAND_OK
            PQclear(result)
            guard succeeded else { return }
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

    /// Copies a result into ``PostgresRows`` or turns it into an error, and always frees it.
    private func rows(from result: OpaquePointer?, operation: String) throws(PostgresError) -> PostgresRows {
        guard let result else {
            // libpq returns NULL only when it could not even build an error result (out of memory, or
            // the connection is unusable).
            self.broken = true
            throw .connectionLost(self.handle.flatMap { optionalString(PQerrorMessage($0)) }, operation: operation)
        }
        defer { PQclear(result) }
        return try self.classify(result, operation: operation).get()
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
