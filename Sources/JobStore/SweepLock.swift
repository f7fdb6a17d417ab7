import Dispatch
import Foundation
import Logging
import PostgresLibPQ
import Synchronization

/// Lets one replica at a time run a periodic task (the reconciler's sweep): a session-level
/// `pg_try_advisory_lock` held on a dedicated connection for the length of the task.
///
/// The pool cannot hold the lock: its connections are lent for one synchronous closure, and a
/// session lock left on a pooled connection would be owned by whoever borrows it next. So the lock
/// lives on a connection of its own, made on first use and remade after it breaks. If that connection
/// dies mid-task PostgreSQL releases the lock, and another replica may start a sweep early; sweeps
/// only store what CI reports, under the usual precedence, so an overlap wastes calls but corrupts nothing.
///
/// The lock key pairs a class id with `hashtext(current_schema())`, so services sharing a database
/// but not a schema (tests, staging beside production) do not exclude each other.
public final class SweepLock: Sendable {
    /// The first half of the advisory lock key: "ciRc".
    public static let defaultClassID: Int32 = 0x6369_5263

    private let conninfo: String
    private let settings: PostgresConnectionSettings
    private let classID: Int32
    private let logger: Logger
    /// libpq blocks; its calls run here, one at a time, off Swift's cooperative pool.
    private let queue = DispatchQueue(label: "ci-callbackd.sweep-lock")
    /// Touched only from `queue`; the Mutex makes that provable to the compiler rather than guarding races.
    private let connection = Mutex<PostgresConnection?>(nil)

    /// Creates a lock; nothing connects until ``withLock(_:)``.
    /// - Parameters:
    ///   - conninfo: The database (and search path) the service uses.
    ///   - settings: Connect timeout, I/O deadline and keepalives of the lock's connection.
    ///   - classID: The first half of the key; replicas of one service must agree on it.
    public init(
        conninfo: String, settings: PostgresConnectionSettings = PostgresConnectionSettings(), classID: Int32 = SweepLock.defaultClassID,
        logger: Logger
    ) {
        self.conninfo = conninfo
        self.settings = settings
        self.classID = classID
        self.logger = logger
    }

    /// Runs `body` if no other session holds the lock, releasing it afterwards.
    /// - Returns: `body`'s value, or `nil` when another replica holds the lock (nothing ran).
    /// - Throws: ``PostgresLibPQ/PostgresError`` when the lock cannot be asked for, or what `body` throws.
    public func withLock<T: Sendable>(_ body: () async throws -> T) async throws -> T? {
        guard try await tryAcquire() else { return nil }
        do {
            let value = try await body()
            await release()
            return value
        } catch {
            await release()
            throw error
        }
    }

    /// Closes the dedicated connection (releasing any lock it holds).
    public func close() async {
        await onQueue { [self] in
            self.connection.withLock { current in
                current?.close()
                current = nil
            }
        }
    }

    private func tryAcquire() async throws -> Bool {
        try await onQueue { [self] () throws -> Bool in
            try self.connection.withLock { current throws -> Bool in
                if let existing = current, !existing.isHealthy {
                    existing.close()
                    current = nil
                }
                let live = try current ?? PostgresConnection.connect(self.conninfo, settings: self.settings)
                current = live
                do {
                    let rows = try live.query(
                        "SELECT pg_try_advisory_lock(\(self.classID)::int4, hashtext(current_schema())) AS locked")
                    return try StrictRow(rows[0], read: "sweep lock").bool("locked")
                } catch {
                    live.close()
                    current = nil
                    throw error
                }
            }
        }
    }

    private func release() async {
        await onQueue { [self] in
            self.connection.withLock { current in
                guard let live = current else { return }
                do {
                    _ = try live.query("SELECT pg_advisory_unlock(\(self.classID)::int4, hashtext(current_schema())) AS unlocked")
                } catch {
                    // Dropping the session is the other way to release a session lock.
                    self.logger.warning("could not release the sweep lock; closing its connection", metadata: ["error": "\(error)"])
                    live.close()
                    current = nil
                }
            }
        }
    }

    private func onQueue<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try work() }) }
        }
    }

    private func onQueue(_ work: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { continuation in
            queue.async {
                work()
                continuation.resume()
            }
        }
    }
}
