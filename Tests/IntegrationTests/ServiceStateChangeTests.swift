import Foundation
import PostgresLibPQ
import Testing

/// `state_changed_at` (the receipt's `StateChangedTime`) is when the job's state last became what it is:
/// a callback that re-reports the current state, or an equal-rank one with the same state, does not move it.
@Suite("State change time")
struct ServiceStateChangeTests {
    private static func callback(_ jobID: String, state: String, progress: Int) -> [UInt8] {
        Array(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"\#(state)","Progress":"\#(progress)"}}"#.utf8)
    }

    private static func changedAt(_ jobID: String, _ service: ServiceHarness) async throws -> (changed: String, state: String, progress: Int?) {
        let rows = try await service.query(
            "SELECT to_char(state_changed_at, 'YYYY-MM-DD HH24:MI:SS.US') AS changed, state, progress FROM ci_jobs WHERE job_id = \(jobID)")
        return (try #require(rows.first?["changed"].string), try #require(rows.first?["state"].string), rows.first?["progress"].int)
    }

    @Test func reReportedState_keepsStateChangedAt_whileARealChangeMovesIt() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, state: "Running", progress: 10)).status == 200)
            let first = try await Self.changedAt(jobID, service)

            // Running again (a new body: more progress): the detail follows, the change time stays.
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, state: "Running", progress: 50)).status == 200)
            let again = try await Self.changedAt(jobID, service)
            #expect(again.progress == 50)
            #expect(again.changed == first.changed)

            // Pause has Running's rank but is another state: the change time moves.
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, state: "Pause", progress: 50)).status == 200)
            let paused = try await Self.changedAt(jobID, service)
            #expect(paused.state == "Pause")
            #expect(paused.changed > first.changed)

            // Success, then Success re-reported with another body: the second keeps the first's change time.
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, state: "Success", progress: 100)).status == 200)
            let success = try await Self.changedAt(jobID, service)
            #expect(success.changed > paused.changed)
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, state: "Success", progress: 99)).status == 200)
            let reSuccess = try await Self.changedAt(jobID, service)
            #expect(reSuccess.progress == 99)
            #expect(reSuccess.changed == success.changed)
        }
    }
}
