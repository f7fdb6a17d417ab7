import CLibPQ

/// One `NOTIFY` received on a channel this connection listens to.
public struct PostgresNotification: Sendable, Hashable {
    /// The channel name, as given to `NOTIFY` / `pg_notify`.
    public var channel: String
    /// The payload (empty when none was given).
    public var payload: String
    /// The server process that sent the notification (compare with ``PostgresConnection/backendPID`` to
    /// ignore one's own).
    public var backendPID: Int32

    public init(channel: String, payload: String, backendPID: Int32) {
        self.channel = channel
        self.payload = payload
        self.backendPID = backendPID
    }
}

extension PostgresConnection {
    /// Starts listening on `channel` (`LISTEN`), quoting it as an identifier, so any string is safe and
    /// case is kept exactly.
    public func listen(_ channel: String) throws(PostgresError) {
        try self.execute(simpleSQL: "LISTEN \(try self.quotedIdentifier(channel))")
    }

    /// Stops listening on `channel` (`UNLISTEN`).
    public func unlisten(_ channel: String) throws(PostgresError) {
        try self.execute(simpleSQL: "UNLISTEN \(try self.quotedIdentifier(channel))")
    }

    /// Sends a notification with `pg_notify` (channel and payload are bound, not spliced into SQL).
    public func notify(_ channel: String, payload: String = "") throws(PostgresError) {
        try self.query("SELECT pg_notify(\(channel), \(payload))")
    }

    /// Returns the notifications already received, or waits up to `timeout` for at least one (`poll` on the
    /// connection's socket, then `PQconsumeInput` and `PQnotifies`). Returns an empty array on timeout.
    ///
    /// Blocks the calling thread: run it on a thread of its own.
    /// - Throws: ``PostgresError/Code/connectionLost`` when the connection breaks.
    public func waitForNotifications(timeout: Duration) throws(PostgresError) -> [PostgresNotification] {
        let operation = "waitForNotifications"
        let handle = try self.liveHandle(operation: operation)
        let deadline = ContinuousClock.now + timeout
        while true {
            guard PQconsumeInput(handle) == 1 else {
                self.broken = true
                throw .connectionLost(optionalString(PQerrorMessage(handle)), operation: operation)
            }
            let received = Self.drainNotifications(handle)
            if !received.isEmpty {
                return received
            }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return [] }
            let socket = PQsocket(handle)
            guard socket >= 0 else {
                self.broken = true
                throw .connectionLost("connection has no socket", operation: operation)
            }
            _ = try SocketWait.wait(socket: socket, forWrite: false, timeout: remaining, operation: operation)
        }
    }

    private static func drainNotifications(_ handle: OpaquePointer) -> [PostgresNotification] {
        var received: [PostgresNotification] = []
        while let notify = PQnotifies(handle) {
            received.append(
                PostgresNotification(
                    channel: optionalString(notify.pointee.relname) ?? "",
                    payload: optionalString(notify.pointee.extra) ?? "",
                    backendPID: notify.pointee.be_pid
                )
            )
            PQfreemem(notify)
        }
        return received
    }

    /// `PQescapeIdentifier`: double-quotes the name and doubles embedded quotes, using the connection's
    /// encoding rules.
    private func quotedIdentifier(_ identifier: String) throws(PostgresError) -> String {
        let operation = "PQescapeIdentifier"
        let handle = try self.liveHandle(operation: operation)
        let utf8 = Array(identifier.utf8)
        guard !utf8.contains(0) else { throw .nulInText(operation: operation) }
        let escaped = utf8.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { PQescapeIdentifier(handle, $0.baseAddress, $0.count) }
        }
        guard let escaped else {
            throw PostgresError(
                code: .queryFailed,
                sqlState: "22021",
                serverMessage: optionalString(PQerrorMessage(handle)) ?? "invalid identifier",
                operation: operation
            )
        }
        defer { PQfreemem(escaped) }
        return String(cString: escaped)
    }
}
