import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

/// Retention by partition against a real service and PostgreSQL: runs are given a clock ("now" days
/// ahead) instead of waiting for days to pass.
@Suite("Retention")
struct RetentionTests {
    static let day: TimeInterval = 86_400

    static func runner(_ service: ServiceHarness, policy: RetentionPolicy = RetentionPolicy()) -> RetentionRunner {
        RetentionRunner(
            conninfo: conninfo(testDatabaseURL, searchPath: service.schema), settings: PostgresConnectionSettings(), policy: policy,
            logger: serviceTestLogger)
    }

    static func callback(_ jobID: String, state: String = "Success") -> [UInt8] {
        Array(
            #"{"EventName":"TaskFinish","JobsDetail":{"JobId":"\#(jobID)","State":"\#(state)","Tag":"ExtractDigitalWatermark","Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1","Message":"hi"}}}}"#
                .utf8)
    }

    static func partitions(_ service: ServiceHarness, of table: String) async throws -> [String] {
        try await service.query(
            "SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(\(table)) ORDER BY 1"
        ).map { $0["name"].string ?? "" }
    }

    /// Makes a stored callback `days` older: its body, digest and history rows (moving them to the partitions of then).
    static func age(_ service: ServiceHarness, callbackID: Int, days: Int) async throws {
        for table in ["ci_callbacks", "ci_callback_digests", "ci_job_events"] {
            _ = try await service.query(
                "UPDATE \(unsafeRaw: table) SET received_at = received_at - \(days)::int * interval '1 day' WHERE callback_id = \(callbackID)")
        }
    }

    @Test func retention_bodyRedelivered29DaysLater_isStillADuplicate() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = Self.callback(jobID)
            let first = try await service.post("/v1/callbacks", body)
            #expect(try first.json()["Duplicate"] as? Bool == false)
            try await Self.age(service, callbackID: try #require(try first.json()["CallbackId"] as? Int), days: 29)
            let report = try await Self.runner(service).run()
            #expect(report.dropped.isEmpty, "\(report)")
            let again = try await service.post("/v1/callbacks", body)
            #expect(again.status == 200)
            #expect(try again.json()["Duplicate"] as? Bool == true)
        }
    }

    @Test func retention_afterTheWindow_dropsBodiesAndDigests_historySaysBodyPruned_bodyAnswers410() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = Self.callback(jobID)
            let first = try await service.post("/v1/callbacks", body)
            let callbackID = try #require(try first.json()["CallbackId"] as? Int)
            #expect(try await service.get("/v1/jobs/\(jobID)/callbacks/\(callbackID)/body").status == 200)

            // 40 days old, in the partition of everything before the migration; a run 30 days on drops that one.
            try await Self.age(service, callbackID: callbackID, days: 40)
            let before = try await Self.partitions(service, of: "ci_callbacks")
            let report = try await Self.runner(service).run(now: Date().addingTimeInterval(30 * Self.day))
            let after = try await Self.partitions(service, of: "ci_callbacks")
            #expect(report.dropped == ["ci_callbacks_legacy"])
            #expect(Set(report.dropped).isSubset(of: Set(before)) && Set(report.dropped).isDisjoint(with: Set(after)))
            #expect(report.digestsDeleted == 1, "\(report)")
            // The history (JOB_RETENTION, forever by default) is untouched.
            #expect(try await Self.partitions(service, of: "ci_job_events").contains("ci_job_events_legacy"))

            let history = try await service.get("/v1/jobs/\(jobID)/callbacks")
            #expect(history.status == 200)
            let entry = try #require((try history.json()["Callbacks"] as? [[String: Any]])?.first)
            #expect(entry["BodyPruned"] as? Bool == true)
            #expect(entry["CallbackId"] as? Int == callbackID)
            #expect(entry["State"] as? String == "Success")
            #expect(entry["BodyUrl"] == nil)

            let pruned = try await service.get("/v1/jobs/\(jobID)/callbacks/\(callbackID)/body")
            #expect(pruned.status == 410)
            #expect((try pruned.json()["Error"] as? [String: Any])?["Code"] as? String == "BodyPruned")
            // The job and its watermark text outlive the body.
            let watermark = try await service.get("/v1/jobs/\(jobID)/watermark")
            #expect(try watermark.json()["Message"] as? String == "hi")
            // A callback that was never stored is still unknown.
            #expect(try await service.get("/v1/jobs/\(jobID)/callbacks/\(callbackID + 1000)/body").status == 404)

            // Past the window the same bytes are news again: stored anew, not a duplicate.
            let later = try await service.post("/v1/callbacks", body)
            #expect(try later.json()["Duplicate"] as? Bool == false)
        }
    }

    @Test func retention_runTwice_secondChangesNothing_andPartitionsExistAhead() async throws {
        try await ServiceHarness.with { service in
            let now = Date()
            var policy = RetentionPolicy()
            policy.daysAhead = 9
            let first = try await Self.runner(service, policy: policy).run(now: now)
            let second = try await Self.runner(service, policy: policy).run(now: now)
            #expect(second == RetentionReport(), "\(second)")
            let names = try await Self.partitions(service, of: "ci_callbacks")
            let ninth = PartitionedTable.callbacks.partitionName(startingAt: now.addingTimeInterval(9 * Self.day))
            #expect(names.contains(ninth), "\(first) \(names)")
            // A callback received on that ninth day has a partition to go to.
            _ = try await service.query(
                """
                INSERT INTO ci_callbacks (body_sha256, body, body_size, outcome, job_count, received_at)
                VALUES (sha256('ahead'::bytea), 'ahead', 5, 'accepted', 0, now() + interval '9 days')
                """)
        }
    }

    @Test func retention_jobRetention_deletesJobsSilentThatLong_keepsRecentOnes() async throws {
        try await ServiceHarness.with { service in
            let old = RequestIDForTests.jobID()
            let recent = RequestIDForTests.jobID()
            _ = try await service.post("/v1/callbacks", Self.callback(old))
            _ = try await service.post("/v1/callbacks", Self.callback(recent))
            _ = try await service.query(
                "UPDATE ci_jobs SET first_received_at = now() - interval '400 days', last_received_at = now() - interval '400 days' WHERE job_id = \(old)")
            var policy = RetentionPolicy()
            policy.jobRetention = .seconds(365 * 86_400)
            policy.deleteBatch = 1
            let report = try await Self.runner(service, policy: policy).run()
            #expect(report.jobsDeleted == 1)
            #expect(try await service.get("/v1/jobs/\(old)").status == 404)
            #expect(try await service.get("/v1/jobs/\(recent)").status == 200)
        }
    }

    @Test func retention_dryRun_reportsButChangesNothing() async throws {
        try await ServiceHarness.with { service in
            let posted = try await service.post("/v1/callbacks", Self.callback(RequestIDForTests.jobID()))
            try await Self.age(service, callbackID: try #require(try posted.json()["CallbackId"] as? Int), days: 40)
            let before = try await Self.partitions(service, of: "ci_callbacks")
            let report = try await Self.runner(service).run(now: Date().addingTimeInterval(30 * Self.day), dryRun: true)
            #expect(!report.dropped.isEmpty && !report.created.isEmpty && report.digestsDeleted == 1)
            #expect(try await Self.partitions(service, of: "ci_callbacks") == before)
            #expect(try await service.query("SELECT count(*)::int AS n FROM ci_callback_digests")[0]["n"].int == 1)
        }
    }

    /// The drop of a partition full of rows while callbacks keep arriving: DETACH … CONCURRENTLY takes no
    /// lock that ingest waits on, so every callback is answered 200 and stored.
    @Test(.timeLimit(.minutes(5)))
    func retention_dropWhileCallbacksArrive_everyCallbackAnswered200() async throws {
        var unbounded = PostgresConnectionSettings()
        unbounded.statementTimeout = .zero
        try await ServiceHarness.with(connection: unbounded) { service in
            // Old rows fill the legacy partition (everything before the migration).
            _ = try await service.query(
                """
                INSERT INTO ci_callbacks (body_sha256, body, body_size, outcome, job_count, received_at)
                SELECT sha256(int8send(n)), convert_to(repeat('x', 500), 'UTF8'), 500, 'accepted', 0, now() - interval '40 days'
                FROM generate_series(1, 100000) AS n
                """)
            let ingest = IngestLoad()
            let posters = (0..<4).map { _ in Task { await ingest.post(to: service) } }
            try await ingest.waitForAnswers(20)
            // Cutoff = now: only partitions entirely before now (the legacy one) go.
            let report = try await Self.runner(service).run(now: Date().addingTimeInterval(30 * Self.day))
            try await ingest.waitForAnswers(ingest.answered + 20)
            ingest.stop()
            for poster in posters { await poster.value }
            #expect(report.dropped == ["ci_callbacks_legacy"], "\(report)")
            let statuses = ingest.outcome().statuses
            #expect(statuses.keys.sorted() == [200], "\(statuses)")
            let stored = try await service.query("SELECT count(*)::int AS n FROM ci_callbacks")[0]["n"].int
            #expect(stored == statuses[200])
        }
    }
}
