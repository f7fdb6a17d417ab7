import CIModel
import Foundation
import PostgresLibPQ
import TestSupport
import Testing

@testable import JobStore

/// Reads decode every column strictly: a schema that is not the one the migrations made fails the read
/// with an error naming the column, never a plausible zero, empty string or default.
@Suite("Strict reads")
struct ServiceStrictReadTests {
    @Test func strictReads_renamedJobColumn_failsNamingIt_andAnswers500() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = #"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Tag":"Transcode","QueueId":"q-text"}}"#
            #expect(try await service.post("/v1/callbacks", Array(body.utf8)).status == 200)
            // An operator's slip in a scratch copy: callback_count moved aside, a text column in its place.
            _ = try await service.query("ALTER TABLE ci_jobs RENAME COLUMN callback_count TO callback_count_moved")
            _ = try await service.query("ALTER TABLE ci_jobs RENAME COLUMN queue_id TO callback_count")

            let store = service.store
            let error = try await #require(throws: StoredRowError.self) { try await store.job(jobID) }
            #expect(error.column == "callback_count")
            #expect(error.isMistyped)
            #expect(error.read == "job lookup")
            #expect(!error.description.contains("q-text"), "the value is customer data, not for the log")
            let listError = try await #require(throws: StoredRowError.self) { try await store.jobs(JobListQuery()) }
            #expect(listError.column == "callback_count")

            for path in ["/v1/jobs/\(jobID)", "/v1/jobs/\(jobID)/watermark", "/v1/jobs"] {
                let reply = try await service.get(path)
                #expect(reply.status == 500, "\(path): \(reply.text)")
                let error = try #require(try reply.json()["Error"] as? [String: Any])
                #expect(error["Code"] as? String == "InternalError", "\(path)")
            }
        }
    }

    @Test func strictReads_nullWhereTheSchemaForbidsIt_failsNamingTheColumn() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = #"{"JobsDetail":{"JobId":"\#(jobID)","State":"Running","Tag":"Transcode"}}"#
            #expect(try await service.post("/v1/callbacks", Array(body.utf8)).status == 200)
            // body_size moved aside; rejection_reason, NULL for an accepted callback, answers in its place.
            _ = try await service.query("ALTER TABLE ci_callbacks RENAME COLUMN body_size TO body_size_moved")
            _ = try await service.query("ALTER TABLE ci_callbacks RENAME COLUMN rejection_reason TO body_size")

            let store = service.store
            let error = try await #require(throws: StoredRowError.self) { try await store.callbacks(forJob: jobID) }
            #expect(error.column == "body_size")
            #expect(error.isNull)
            #expect(error.read == "callback history")

            let reply = try await service.get("/v1/jobs/\(jobID)/callbacks")
            #expect(reply.status == 500)
            #expect((try reply.json()["Error"] as? [String: Any])?["Code"] as? String == "InternalError")
        }
    }

    @Test func strictReads_eachAccessor_refusesAMissingNullOrMistypedColumn() throws {
        let connection = try PostgresConnection.connect(testDatabaseURL)
        defer { connection.close() }
        let row = StrictRow(
            try connection.query("SELECT 7::int8 AS n, 'seven'::text AS t, NULL::int4 AS none, true AS b, '\\x0001'::bytea AS raw")[0],
            read: "probe")
        #expect(try row.int("n") == 7)
        #expect(try row.string("t") == "seven")
        #expect(try row.optionalInt("none") == nil)
        #expect(try row.bool("b"))
        #expect(try row.bytes("raw") == [0, 1])
        #expect(throws: StoredRowError.missing("absent", read: "probe")) { try row.optionalString("absent") }
        #expect(throws: StoredRowError.null("none", read: "probe")) { try row.int("none") }
        for error in [
            #expect(throws: StoredRowError.self) { try row.int("t") },
            #expect(throws: StoredRowError.self) { try row.string("n") },
            #expect(throws: StoredRowError.self) { try row.bool("n") },
            #expect(throws: StoredRowError.self) { try row.bytes("t") },
        ] {
            #expect(error?.isMistyped == true)
        }
    }

    // Columns holding one of a closed set of values (a job's `state_source`, a callback's `outcome`) reach
    // callers as enums: a value this build does not know fails the read naming the column.

    @Test func strictReads_unknownStateSource_failsTheJobLookupNamingTheColumn() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = #"{"JobsDetail":{"JobId":"\#(jobID)","State":"Running","Tag":"Transcode"}}"#
            #expect(try await service.post("/v1/callbacks", Array(body.utf8)).status == 200)
            #expect(try await service.store.job(jobID)?.stateSource == .callback)

            _ = try await service.query("UPDATE ci_jobs SET state_source = 'replay' WHERE job_id = \(jobID)")
            let store = service.store
            let error = try await #require(throws: StoredRowError.self) { try await store.job(jobID) }
            #expect(error.column == "state_source")
            #expect(error.isMistyped)
        }
    }

    @Test func strictReads_unknownOutcome_failsTheConsoleRecordNamingTheColumn() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = #"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Tag":"Transcode"}}"#
            #expect(try await service.post("/v1/callbacks", Array(body.utf8)).status == 200)
            let ids = try await service.query("SELECT callback_id FROM ci_callbacks ORDER BY callback_id DESC LIMIT 1").compactMap { $0["callback_id"].int }
            let callbackID = Int64(try #require(ids.first))
            guard case .stored(let record) = try await service.store.callbackLookup(callbackID) else {
                Issue.record("callback \(callbackID) is stored")
                return
            }
            #expect(record.outcome == .accepted && record.source == .callback && record.format == .json)

            // A value a later build might write: the CHECK constraint is this build's, so it goes too.
            _ = try await service.query("ALTER TABLE ci_callbacks DROP CONSTRAINT ci_callbacks_outcome_check")
            _ = try await service.query("UPDATE ci_callbacks SET outcome = 'replayed' WHERE callback_id = \(callbackID)")
            let store = service.store
            let error = try await #require(throws: StoredRowError.self) { try await store.callbackLookup(callbackID) }
            #expect(error.column == "outcome")
            #expect(error.isMistyped)
        }
    }
}
