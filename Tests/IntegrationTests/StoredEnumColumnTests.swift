import CIModel
import PostgresLibPQ
import TestSupport
import Testing

@testable import JobStore

/// Enumerated text columns (`format`, `source`, `outcome`) decode into their enums, strictly: a value no
/// case names fails the read naming the column, never a string passed on for someone to compare.
@Suite("Stored enum columns")
struct StoredEnumColumnTests {
    @Test func enumColumns_knownValues_decodeToTheirCases() throws {
        let connection = try PostgresConnection.connect(testDatabaseURL)
        defer { connection.close() }
        let row = StrictRow(
            try connection.query("SELECT 'JSON'::text AS format, NULL::text AS no_format, 'reconcile'::text AS source, 'no_jobs'::text AS outcome")[0],
            read: "probe")
        #expect(try row.optionalValue("format", as: CallbackFormat.self) == .json)
        #expect(try row.optionalValue("no_format", as: CallbackFormat.self) == nil)
        #expect(try row.value("source", as: CallbackSource.self) == .reconcile)
        #expect(try row.value("outcome", as: StoredOutcome.self) == .noJobs)
        #expect(throws: StoredRowError.null("no_format", read: "probe")) { try row.value("no_format", as: CallbackFormat.self) }
    }

    @Test func enumColumns_unknownValue_isAMistypedStoredRowError() throws {
        let connection = try PostgresConnection.connect(testDatabaseURL)
        defer { connection.close() }
        let row = StrictRow(try connection.query("SELECT 'YAML'::text AS format, 'json'::text AS lower")[0], read: "probe")
        let error = try #require(throws: StoredRowError.self) { try row.optionalValue("format", as: CallbackFormat.self) }
        #expect(error.isMistyped)
        #expect(error.column == "format")
        #expect(error.description.contains("XML, JSON"))
        #expect(!error.description.contains("YAML"), "the value is stored data, not for the log")
        #expect(throws: StoredRowError.self) { try row.value("lower", as: CallbackFormat.self) }
    }
}
