import Foundation
import JobStore
import PostgresLibPQ
import Dispatch
import Synchronization
import TestSupport
import Testing

/// `ci-callbackd reprocess` against real PostgreSQL: stored bodies re-decoded and re-applied.
@Suite("Reprocess")
struct ReprocessTests {
    static func reprocessor(_ service: ServiceHarness, pageSize: Int = 200) -> Reprocessor {
        var reprocessor = Reprocessor(
            conninfo: conninfo(testDatabaseURL, searchPath: service.schema), settings: PostgresConnectionSettings(), logger: serviceTestLogger)
        reprocessor.pageSize = pageSize
        return reprocessor
    }

    static func callback(_ jobID: String, state: String, message: String = "hi") -> [UInt8] {
        Array(
            #"{"EventName":"TaskFinish","JobsDetail":{"JobId":"\#(jobID)","State":"\#(state)","Tag":"ExtractDigitalWatermark","Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1","Message":"\#(message)"}}}}"#
                .utf8)
    }

    /// Everything reprocessing may write, as one comparable text.
    static func snapshot(_ service: ServiceHarness) async throws -> String {
        let rows = try await service.query(
            """
            SELECT (SELECT string_agg(j::text, '|' ORDER BY job_id) FROM ci_jobs j) AS jobs,
                   (SELECT string_agg(e::text, '|' ORDER BY job_id, callback_id) FROM ci_job_events e) AS events,
                   (SELECT string_agg(concat_ws(',', callback_id, outcome, rejection_reason, format, event_name, job_count), '|' ORDER BY callback_id)
                    FROM ci_callbacks) AS callbacks
            """)
        return "\(rows[0]["jobs"].string ?? "")\n\(rows[0]["events"].string ?? "")\n\(rows[0]["callbacks"].string ?? "")"
    }

    @Test func reprocess_staleJobColumns_areRewrittenFromTheBody_secondRunChangesNothing() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID, state: "Running"))
            _ = try await service.post("/v1/callbacks", Self.callback(jobID, state: "Success", message: "found"))
            let untouched = try await Self.snapshot(service)
            // Nothing to fix yet: a run over correct data writes nothing.
            let idle = try await Self.reprocessor(service).run(ReprocessScope())
            #expect(idle.read == 2 && idle.jobsApplied == 0 && idle.eventsWritten == 0, "\(idle)")
            #expect(try await Self.snapshot(service) == untouched)

            // What an old decoder might have stored: the wrong text, and the late Running as current.
            let running = try #require(
                try await service.query("SELECT callback_id FROM ci_job_events WHERE job_id = \(jobID) AND state = 'Running'")[0]["callback_id"].int)
            _ = try await service.query(
                """
                UPDATE ci_jobs SET watermark_message = 'garbled', state = 'Running', state_rank = 1, is_final = false,
                       state_callback_id = \(running)::int8 WHERE job_id = \(jobID)
                """)
            let fixed = try await Self.reprocessor(service).run(ReprocessScope())
            #expect(fixed.jobsApplied >= 1, "\(fixed)")
            let watermark = try await service.get("/v1/jobs/\(jobID)/watermark").json()
            #expect(watermark["State"] as? String == "Success")
            #expect(watermark["Message"] as? String == "found")

            let after = try await Self.snapshot(service)
            let again = try await Self.reprocessor(service).run(ReprocessScope())
            #expect(again.jobsApplied == 0 && again.eventsWritten == 0 && again.rejectedNowAccepted == 0, "\(again)")
            #expect(try await Self.snapshot(service) == after)
        }
    }

    @Test func reprocess_previouslyRejectedBodyThatNowDecodes_isApplied_once() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = Self.callback(jobID, state: "Success", message: "late but right")
            // Stored as an older decoder would have: refused, with its reason.
            _ = try await service.query(
                """
                WITH d AS (
                    INSERT INTO ci_callback_digests (body_sha256, received_at, last_received_at) VALUES (sha256(\(body)), now(), now())
                    RETURNING callback_id, received_at
                )
                INSERT INTO ci_callbacks (callback_id, body_sha256, body, body_size, format, outcome, rejection_reason, job_count, received_at)
                SELECT callback_id, sha256(\(body)), \(body), \(body.count), 'JSON', 'rejected', 'an old decoder bug', 0, received_at FROM d
                """)
            #expect(try await service.get("/v1/jobs/\(jobID)").status == 404)

            let counts = try await Self.reprocessor(service).run(ReprocessScope())
            #expect(counts.rejectedNowAccepted == 1 && counts.jobsApplied == 1 && counts.eventsWritten == 1, "\(counts)")
            let watermark = try await service.get("/v1/jobs/\(jobID)/watermark").json()
            #expect(watermark["Message"] as? String == "late but right")
            let history = try #require(try await service.get("/v1/jobs/\(jobID)/callbacks").json()["Callbacks"] as? [[String: Any]])
            #expect(history.count == 1 && history.first?["Applied"] as? Bool == true)
            let stored = try await service.query("SELECT outcome, rejection_reason FROM ci_callbacks")
            #expect(stored[0]["outcome"].string == "accepted" && stored[0]["rejection_reason"].string == nil)

            let again = try await Self.reprocessor(service).run(ReprocessScope())
            #expect(again.rejectedNowAccepted == 0 && again.jobsApplied == 0 && again.eventsWritten == 0, "\(again)")
            // The same bytes arriving now are a duplicate of the stored body.
            #expect(try await service.post("/v1/callbacks", body).json()["Duplicate"] as? Bool == true)
        }
    }

    @Test func reprocess_stillRefusedBody_staysRejected_andIsCounted() async throws {
        try await ServiceHarness.with { service in
            #expect(try await service.post("/v1/callbacks", Array("<Response><JobsDetail></Response>".utf8)).status == 400)
            let counts = try await Self.reprocessor(service).run(ReprocessScope())
            #expect(counts.stillRejected == 1 && counts.rejectedNowAccepted == 0, "\(counts)")
            #expect(try await service.query("SELECT outcome FROM ci_callbacks")[0]["outcome"].string == "rejected")
        }
    }

    @Test func reprocess_interrupted_resumesAfterTheLastCommittedPage() async throws {
        try await ServiceHarness.with { service in
            for _ in 0..<6 {
                _ = try await service.post("/v1/callbacks", Self.callback(RequestIDForTests.jobID(), state: "Success"))
            }
            let reprocessor = Self.reprocessor(service, pageSize: 1)
            // The run's thread stops in its progress report after two committed pages until the test has
            // cancelled it: an interruption at a known place, without timing.
            let reached = DispatchSemaphore(value: 0)
            let proceed = DispatchSemaphore(value: 0)
            let reports = Atomic<Int>(0)
            let task = Task {
                try await reprocessor.run(ReprocessScope()) { _ in
                    // The first report announces the total; each later one follows a committed page.
                    if reports.add(1, ordering: .relaxed).newValue == 3 {
                        reached.signal()
                        proceed.wait()
                    }
                }
            }
            await withCheckedContinuation { continuation in
                DispatchQueue.global().async {
                    reached.wait()
                    continuation.resume()
                }
            }
            task.cancel()
            proceed.signal()
            await #expect(throws: CancellationError.self) { try await task.value }
            let checkpoint = try await service.query("SELECT after_callback_id FROM ci_reprocess_checkpoints")
            let after = try #require(checkpoint.first?["after_callback_id"].int)
            let ids = try await service.query("SELECT callback_id FROM ci_callbacks ORDER BY callback_id").compactMap { $0["callback_id"].int }
            #expect(ids.contains(after) && after < ids.last!)

            let resumed = try await reprocessor.run(ReprocessScope())
            #expect(resumed.total == ids.filter { $0 > after }.count && resumed.read == resumed.total, "\(resumed)")
            #expect(try await service.query("SELECT count(*)::int AS n FROM ci_reprocess_checkpoints")[0]["n"].int == 0)
        }
    }

    @Test func reprocess_jobScope_readsOnlyThatJobsCallbacks_dryRunWritesNothing() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(jobID, state: "Running"))
            _ = try await service.post("/v1/callbacks", Self.callback(jobID, state: "Success"))
            _ = try await service.post("/v1/callbacks", Self.callback(RequestIDForTests.jobID(), state: "Success"))
            _ = try await service.query("UPDATE ci_jobs SET watermark_message = 'garbled' WHERE job_id = \(jobID)")
            let before = try await Self.snapshot(service)
            let dry = try await Self.reprocessor(service).run(ReprocessScope(jobID: jobID), dryRun: true)
            #expect(dry.total == 2 && dry.read == 2 && dry.jobsApplied == 1, "\(dry)")
            #expect(try await Self.snapshot(service) == before)
            let real = try await Self.reprocessor(service).run(ReprocessScope(jobID: jobID))
            #expect(real.jobsApplied == 1)
            #expect(try await service.get("/v1/jobs/\(jobID)/watermark").json()["Message"] as? String == "hi")
        }
    }
}
