import CLibPQ

extension PostgresConnection {
    /// Runs a batch of statements in pipeline mode (libpq ≥ 14) with ONE `PQpipelineSync`: one round trip
    /// and one implicit transaction, so the whole batch costs one commit (group commit).
    ///
    /// Returns one result per query, in order. When a query fails, it gets its error and every later query
    /// gets ``PostgresError/Code/queryFailed`` (SQLSTATE `nil`, message "pipeline aborted…"); the earlier
    /// queries show `.success` but were ROLLED BACK with the rest: if any element is a failure, nothing of
    /// the batch was committed, and the caller may retry the members one by one. Explicit `BEGIN`/`COMMIT`
    /// inside the batch change that, as in any pipeline.
    ///
    /// Deadlock avoidance: the connection is non-blocking; sending, flushing and reading are driven by one
    /// `poll` loop that reads results whenever the server has some, so a large batch never stalls with both
    /// sides' socket buffers full. Batch size is therefore bounded only by memory. The whole batch must be
    /// answered within the connection's I/O deadline (``PostgresConnectionSettings/ioTimeout``).
    ///
    /// - Throws: ``PostgresError/Code/connectionLost`` when the connection breaks, or
    ///   ``PostgresError/Code/serverTimeout`` when the deadline passes (the connection is then unusable;
    ///   once the Sync was handed to the socket the error carries ``PostgresError/outcomeUnknown``, since
    ///   the batch may have committed); ``PostgresError/Code/queryFailed`` (22021) before sending anything
    ///   when a text parameter holds a NUL byte.
    public func pipeline(_ queries: [SQLQuery]) throws(PostgresError) -> [Result<PostgresRows, PostgresError>] {
        guard !queries.isEmpty else { return [] }
        let operation = "pipeline"
        let handle = try self.liveHandle(operation: operation)
        guard PQpipelineStatus(handle) == PQ_PIPELINE_OFF, PQtransactionStatus(handle) != PQTRANS_ACTIVE else {
            throw .invalidResult("connection is already running a pipeline or a command", operation: operation)
        }
        var encoded: [EncodedParameters] = []
        encoded.reserveCapacity(queries.count)
        // A batch usually repeats one statement: scan each distinct text once (comparing a string with
        // itself is a pointer check), not a few KB of SQL per query.
        var checkedSQL: String?
        for query in queries {
            if query.sql != checkedSQL {
                guard !query.sql.utf8.contains(0) else { throw .nulInText(operation: operation) }
                checkedSQL = query.sql
            }
            encoded.append(try EncodedParameters(query.binds, operation: operation))
        }
        // An implicit transaction commits at the Sync; inside an explicit block nothing commits here.
        let commits = PQtransactionStatus(handle) == PQTRANS_IDLE
        guard PQenterPipelineMode(handle) == 1 else {
            throw .invalidResult(optionalString(PQerrorMessage(handle)) ?? "cannot enter pipeline mode", operation: operation)
        }
        var syncSent = false
        do throws(PostgresError) {
            let outcomes = try self.runPipeline(queries, encoded, handle: handle, syncSent: &syncSent)
            guard PQexitPipelineMode(handle) == 1 else {
                throw .invalidResult(optionalString(PQerrorMessage(handle)) ?? "cannot leave pipeline mode", operation: operation)
            }
            self.trimStatementCache(toAtMost: Self.preparedStatementCapacity)
            return outcomes
        } catch {
            // Half-read pipeline state cannot be recovered reliably: the connection is retired.
            self.broken = true
            throw error.withOutcomeUnknown(commits && syncSent && error.isConnectionProblem)
        }
    }

    private enum SlotKind {
        case prepare(StatementKey, name: String)
        case execute
    }

    private struct Slot {
        var query: Int
        var kind: SlotKind
    }

    private func runPipeline(
        _ queries: [SQLQuery],
        _ encoded: [EncodedParameters],
        handle: OpaquePointer,
        syncSent: inout Bool
    ) throws(PostgresError) -> [Result<PostgresRows, PostgresError>] {
        let operation = "pipeline"
        let deadline = ContinuousClock.now + self.ioTimeout
        var slots: [Slot] = []
        slots.reserveCapacity(queries.count * 2)
        // A statement new to this connection is prepared inside the batch, once even if it repeats.
        var preparing: [StatementKey: String] = [:]
        // The previous query's statement: a batch of one repeated statement hashes its text once.
        var previous: (key: StatementKey, name: String)?
        for (index, query) in queries.enumerated() {
            let parameters = encoded[index]
            let key = StatementKey(sql: query.sql, types: parameters.types)
            self.useClock &+= 1
            let name: String
            if let previous, previous.key == key {
                name = previous.name
            } else if let cached = self.statements.index(forKey: key) {
                self.statements.values[cached].lastUse = self.useClock
                name = self.statements.values[cached].name
            } else if let pending = preparing[key] {
                name = pending
            } else {
                name = self.nextStatementName()
                preparing[key] = name
                let sent = name.withCString { namePointer in
                    parameters.types.withUnsafeBufferPointer { types in
                        PQsendPrepare(handle, namePointer, query.sql, parameters.count, types.baseAddress)
                    }
                }
                guard sent == 1 else { throw self.sendFailure(handle, operation: operation) }
                slots.append(Slot(query: index, kind: .prepare(key, name: name)))
            }
            previous = (key, name)
            let sent = parameters.withPointers { values, lengths, formats in
                name.withCString { PQsendQueryPrepared(handle, $0, parameters.count, values, lengths, formats, 0) }
            }
            guard sent == 1 else { throw self.sendFailure(handle, operation: operation) }
            slots.append(Slot(query: index, kind: .execute))
        }
        // From here on the server may commit the batch, whatever happens to its answers.
        syncSent = true
        guard PQpipelineSync(handle) == 1 else { throw self.sendFailure(handle, operation: operation) }

        var outcomes = [Result<PostgresRows, PostgresError>?](repeating: nil, count: queries.count)
        for slot in slots {
            // Each command yields its result(s) then NULL; only the first result decides the outcome.
            var first: Result<PostgresRows, PostgresError>?
            while let result = try self.nextResult(handle, deadline: deadline, operation: operation) {
                if first == nil {
                    first = self.classify(result, operation: operation)
                }
                PQclear(result)
            }
            guard let first else {
                throw self.missingResult(handle, "pipeline returned no result for a command")
            }
            // A lost connection or a protocol surprise ends the batch; server errors do not.
            if self.broken, case .failure(let error) = first {
                throw error
            }
            switch slot.kind {
            case .prepare(let key, let name):
                if case .failure = first {
                    outcomes[slot.query] = first
                } else {
                    // The server keeps a named statement even when the batch's transaction rolls back.
                    self.statements[key] = PreparedStatement(name: name, lastUse: self.useClock)
                }
            case .execute:
                if outcomes[slot.query] == nil {
                    outcomes[slot.query] = first
                }
            }
        }
        guard let sync = try self.nextResult(handle, deadline: deadline, operation: operation) else {
            throw self.missingResult(handle, "pipeline ended without its sync result")
        }
        let status = PQresultStatus(sync)
        PQclear(sync)
        guard status == PGRES_PIPELINE_SYNC else {
            throw .invalidResult("expected the pipeline sync result", operation: operation)
        }
        if self.broken {
            throw .connectionLost(optionalString(PQerrorMessage(handle)), operation: operation)
        }
        return outcomes.map { $0! }
    }

    private func missingResult(_ handle: OpaquePointer, _ message: String) -> PostgresError {
        guard PQstatus(handle) == CONNECTION_OK else {
            return .connectionLost(optionalString(PQerrorMessage(handle)), operation: "pipeline")
        }
        return .invalidResult(message, operation: "pipeline")
    }
}
