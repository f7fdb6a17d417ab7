import Foundation
import JobStore
import Logging
import TestSupport
import Testing

/// The sweep lock speaks for the store like every other entry point: a database it cannot reach, or one
/// that refuses it, is a ``StoreUnavailableError``, never the driver's error.
@Suite("Sweep lock errors")
struct SweepLockErrorTests {
    private static let logger = Logger(label: "sweep-lock-test") { _ in SwiftLogNoOpLogHandler() }

    @Test func sweepLock_missingDatabase_isUnreachable_withTheRefusal() async throws {
        let missing = testDatabaseURL.replacingOccurrences(of: "/ci_callbackd_test", with: "/ci_callbackd_no_such_database")
        try #require(missing != testDatabaseURL, "the test database URL names ci_callbackd_test")
        let lock = SweepLock(conninfo: missing, logger: Self.logger)
        let error = try await #require(throws: StoreUnavailableError.self) { try await lock.withLock { true } }
        await lock.close()
        #expect(error.reason == .unreachable)
        #expect(error.cause.refusal?.remedy(connectionString: "DATABASE_URL").contains("does not exist") == true, "\(error)")
    }

    @Test func sweepLock_nothingListening_isUnreachable_withoutARefusal() async throws {
        // A free port: nothing listens, so connecting is refused at once.
        let port = try freeLoopbackPort()
        let lock = SweepLock(conninfo: "postgresql://postgres@127.0.0.1:\(port)/x?connect_timeout=5", logger: Self.logger)
        let error = try await #require(throws: StoreUnavailableError.self) { try await lock.withLock { true } }
        await lock.close()
        #expect(error.reason == .unreachable)
        #expect(error.cause.isConnectionProblem && error.cause.refusal == nil)
    }
}
