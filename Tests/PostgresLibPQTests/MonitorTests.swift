import Testing

@testable import PostgresLibPQ

/// The pool's mutex and conditions: pthread failures stop the process instead of passing unnoticed.
///
/// Debug builds use an error-checking mutex, so a wait that did not give the lock back would make the
/// final `unlock()` fail its check and stop the test process.
@Suite("Monitor")
struct MonitorTests {
    @Test func monitor_TimedWaitReachesItsDeadline_ReturnsHoldingTheLock() {
        let monitor = Monitor(conditionCount: 2)
        monitor.lock()
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(20))
        // Spurious wake-ups may return early: wait as the pool does, until the deadline has passed.
        while ContinuousClock.now < deadline {
            monitor.wait(1, until: deadline)
        }
        // An error-checking mutex refuses this unlock unless the wait gave the lock back.
        monitor.unlock()
    }

    @Test func monitor_SignalAndBroadcastWithoutWaiters_AreHarmless() {
        let monitor = Monitor(conditionCount: 2)
        monitor.lock()
        monitor.signal(0)
        monitor.broadcast(1)
        monitor.unlock()
    }
}

/// Which connection failures retrying cannot fix, from the server's own messages as libpq reports them.
@Suite("Connection refusals")
struct ConnectionRefusalTests {
    private static func failure(_ message: String) -> PostgresError {
        PostgresError(code: .connectionFailed, serverMessage: message)
    }

    @Test func refusal_ServerMessages_AreClassified() {
        let cases: [(String, PostgresConnectionRefusal?)] = [
            (#"connection to server on socket "/tmp/.s.PGSQL.5432" failed: FATAL:  database "nope" does not exist"#, .databaseDoesNotExist),
            (#"connection to server at "127.0.0.1", port 5432 failed: FATAL:  role "ghost" does not exist"#, .roleDoesNotExist),
            (#"connection to server at "db", port 5432 failed: FATAL:  password authentication failed for user "app""#, .authenticationFailed),
            ("connection to server at \"db\", port 5432 failed: fe_sendauth: no password supplied", .passwordRequired),
            (#"FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "app", database "ci", no encryption"#, .notAllowedByHostRules),
            (#"connection to server at "127.0.0.1", port 5432 failed: Connection refused; Is the server running on that host and accepting TCP/IP connections?"#, nil),
            ("connection to server at \"db\" (10.0.0.2), port 5432 failed: timeout expired", nil),
        ]
        for (message, expected) in cases {
            #expect(Self.failure(message).connectionRefusal == expected, "\(message)")
        }
    }

    @Test func refusal_OnlyForConnectionFailures() {
        let query = PostgresError(code: .queryFailed, sqlState: "42P01", serverMessage: #"relation "jobs" does not exist"#)
        #expect(query.connectionRefusal == nil)
    }

    @Test func refusal_Remedy_NamesWhereTheConnectionStringComesFrom() {
        let remedy = PostgresConnectionRefusal.databaseDoesNotExist.remedy(connectionString: "DATABASE_URL")
        #expect(remedy.contains("the database named in DATABASE_URL does not exist"))
        #expect(remedy.contains("createdb"))
    }
}
