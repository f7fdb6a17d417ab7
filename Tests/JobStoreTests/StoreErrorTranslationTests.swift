import PostgresLibPQ
import Testing

@testable import JobStore

/// The driver's errors as the store reports them: callers above ``JobStore`` see store-level values only.
@Suite("Store error translation")
struct StoreErrorTranslationTests {
    private static func translated(_ error: PostgresError) -> StoreUnavailableError? {
        StoreUnavailableError.translating(error) as? StoreUnavailableError
    }

    @Test func translating_refusedConnection_isUnreachable_andCarriesTheRefusal() throws {
        let refused = PostgresError(code: .connectionFailed, serverMessage: #"FATAL:  database "nope" does not exist"#)
        let error = try #require(Self.translated(refused))
        #expect(error.reason == .unreachable)
        #expect(error.cause.isConnectionProblem)
        #expect(error.cause.refusal?.remedy(connectionString: "DATABASE_URL") == refused.connectionRefusal?.remedy(connectionString: "DATABASE_URL"))
        #expect(error.cause.message == refused.serverMessage)
        #expect(error.description == "StoreUnavailableError(unreachable): \(refused)", "logs keep the driver's redacted line")
    }

    @Test func translating_serverDown_isUnreachable_withoutARefusal() throws {
        let error = try #require(Self.translated(PostgresError(code: .connectionFailed, serverMessage: "Connection refused")))
        #expect(error.reason == .unreachable && error.cause.refusal == nil)
    }

    @Test func translating_statementTimeout_isOverloaded_withItsSQLState() throws {
        let error = try #require(Self.translated(PostgresError(code: .queryFailed, sqlState: "57014", serverMessage: "canceling statement")))
        #expect(error.reason == .overloaded)
        #expect(error.cause.sqlState == "57014" && !error.cause.isConnectionProblem)
    }

    @Test func translating_lostAfterCommitWasSent_isOutcomeUnknown() throws {
        let lost = PostgresError(code: .connectionLost, serverMessage: "server closed the connection").withOutcomeUnknown(true)
        #expect(try #require(Self.translated(lost)).reason == .outcomeUnknown)
    }

    @Test func translating_poolWaitAndClosedPool_areOverloadedAndUnreachable() {
        #expect(Self.translated(PostgresError(code: .timeout))?.reason == .overloaded)
        #expect(Self.translated(PostgresError(code: .poolClosed))?.reason == .unreachable)
    }

    @Test func translating_statementError_isLeftAsItIs() {
        let failed = PostgresError(code: .queryFailed, sqlState: "23505", serverMessage: "duplicate key")
        #expect(Self.translated(failed) == nil)
    }
}
