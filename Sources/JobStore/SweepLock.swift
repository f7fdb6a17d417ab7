import Foundation
import Logging
import PostgresLibPQ

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
    /// The lock's connection lives on a thread of its own (libpq blocks; see PostgresLibPQ's
    /// BlockingThread.swift), made on first use and kept between sweeps as that thread's state.
    private let thread = BlockingThread<PostgresConnection?>(name: "pg-sweep-lock") { nil }

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
    /// - Throws: ``StoreUnavailableError`` when the database cannot be reached to ask for the lock, the
    ///   store's error when asking fails otherwise, or what `body` throws.
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

    /// Closes the dedicated connection (releasing any lock it holds) and ends its thread.
    public func close() async {
        await thread.finish { connection in
            connection?.close()
            connection = nil
        }
    }

    private func tryAcquire() async throws -> Bool {
        let (conninfo, settings, classID) = (self.conninfo, self.settings, self.classID)
        return try await StoreUnavailableError.translatingErrors {
            try await thread.run { connection throws -> Bool in
                if let existing = connection, !existing.isHealthy {
                    existing.close()
                    connection = nil
                }
                let live = try connection ?? PostgresConnection.connect(conninfo, settings: settings)
                connection = live
                do {
                    let rows = try live.query("SELECT pg_try_advisory_lock(\(classID)::int4, hashtext(current_schema())) AS locked")
                    return try StrictRow(rows[0], read: "sweep lock").bool("locked")
                } catch {
                    live.close()
                    connection = nil
                    throw error
                }
            }
        }
    }

    private func release() async {
        let (classID, logger) = (self.classID, self.logger)
        _ = try? await thread.run { connection in
            guard let live = connection else { return }
            do {
                _ = try live.query("SELECT pg_advisory_unlock(\(classID)::int4, hashtext(current_schema())) AS unlocked")
            } catch {
                // Dropping the session is the other way to release a session lock.
                logger.warning("could not release the sweep lock; closing its connection", metadata: ["error": "\(error)"])
                live.close()
                connection = nil
            }
        }
    }
}
