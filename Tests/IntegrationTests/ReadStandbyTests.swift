import CallbackService
import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

/// A hot standby of the test cluster, made by `scripts/pg-cluster standby` (pg_basebackup -R) in the
/// cluster's directory; `TEST_READ_DATABASE_URL` names another one instead.
enum TestStandby {
    /// The cluster directory of the test database: its Unix socket directory's parent.
    static var clusterDirectory: String? {
        guard let host = URLComponents(string: testDatabaseURL)?.queryItems?.first(where: { $0.name == "host" })?.value,
            host.hasSuffix("/run")
        else { return nil }
        return String(host.dropLast("/run".count))
    }

    static var databaseName: String {
        URLComponents(string: testDatabaseURL)?.path.split(separator: "/").last.map(String.init) ?? "ci_callbackd_test"
    }

    /// Starts the standby (making it first when missing) and returns its URL.
    static func start() async throws -> String {
        if let url = ProcessInfo.processInfo.environment["TEST_READ_DATABASE_URL"], !url.isEmpty { return url }
        let directory = try #require(clusterDirectory, "the test database is not a scripts/pg-cluster cluster; set TEST_READ_DATABASE_URL")
        var environment = ProcessInfo.processInfo.environment
        environment["PGCLUSTER_DB"] = databaseName
        // Output to a file (as ChildProcess always does): a PostgreSQL that pg_ctl starts inherits the
        // descriptor and keeps it open, so a pipe would never reach end-of-file.
        let script = repositoryRoot.appendingPathComponent("scripts/pg-cluster").path
        return try await ChildProcess.succeed(script, ["standby", directory], environment: environment, within: .seconds(600))
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether the tests may stop and start the standby: the one `scripts/pg-cluster standby` made, not
    /// one `TEST_READ_DATABASE_URL` names.
    static var isOwned: Bool {
        (ProcessInfo.processInfo.environment["TEST_READ_DATABASE_URL"] ?? "").isEmpty && clusterDirectory != nil
    }

    /// Stops the standby (`scripts/pg-cluster stop`, a fast shutdown that ends its connections);
    /// ``start()`` starts it again.
    static func stop() async throws {
        let directory = try #require(clusterDirectory, "the test database is not a scripts/pg-cluster cluster")
        let script = repositoryRoot.appendingPathComponent("scripts/pg-cluster").path
        try await ChildProcess.succeed(script, ["stop", directory + "/standby"], within: .seconds(360))
    }

    static func execute(_ url: String, _ sql: String) throws {
        let connection = try PostgresConnection.connect(url)
        defer { connection.close() }
        try connection.execute(simpleSQL: sql)
    }
}

/// Lookups and listings from a hot standby (`READ_DATABASE_URL`): they go there when it is fresh, and are
/// still right at once after an acknowledged callback when it lags or is gone. One standby for the suite,
/// so its tests take turns.
@Suite("Read standby", .serialized)
struct ReadStandbyTests {
    /// A service reading from the standby, with its lag probe running (unless `probing` is false: the test
    /// then probes with `store.checkReadStandby()` when it wants the service to learn the standby's state).
    private static func withService(
        maxLag: Duration, probing: Bool = true, _ body: (ServiceHarness, String) async throws -> Void
    ) async throws {
        let standbyURL = try await TestStandby.start()
        var routing = ReadStandby.Configuration()
        routing.maxLag = maxLag
        routing.checkInterval = .milliseconds(50)
        let service = try await ServiceHarness.start(readDatabaseURL: standbyURL, readRouting: routing)
        let monitor = Task { if probing { try await ReadStandbyMonitor(store: service.store).run() } }
        do {
            try await body(service, standbyURL)
        } catch {
            monitor.cancel()
            await service.stop()
            try? service.dropSchema()
            throw error
        }
        monitor.cancel()
        await service.stop()
        try service.dropSchema()
    }

    private static func callback(_ jobID: String, _ state: String) -> [UInt8] {
        Array(
            #"{"EventName":"TaskFinish","JobsDetail":{"JobId":"\#(jobID)","State":"\#(state)","Tag":"ExtractDigitalWatermark","Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1","Message":"m-\#(state)"}}}}"#
                .utf8)
    }

    private static func newJobID() -> String { "j" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased() }

    /// `db_reads_total` for one target (and reason), from `/metrics`.
    private static func reads(_ service: ServiceHarness, target: String, reason: String? = nil) async throws -> Int {
        let labels = reason.map { #"{target="\#(target)",reason="\#($0)"}"# } ?? #"{target="\#(target)"}"#
        let text = try await service.get("/metrics").text
        let line = text.split(separator: "\n").first { $0.hasPrefix(ReadStandby.readsMetric + labels + " ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") }.map { Int($0) } ?? 0
    }

    private static func standbyState(_ service: ServiceHarness) async throws -> String? {
        let ready = try await service.get("/readyz").json()
        return (ready["ReadStandby"] as? [String: Any])?["State"] as? String
    }

    /// Whether `path` is answered 200 by the standby (its counter moves by the request).
    private static func servedByStandby(_ service: ServiceHarness, _ path: String) async throws -> Bool {
        let before = try await reads(service, target: "standby")
        let reply = try await service.get(path)
        guard reply.status == 200 else { return false }
        return try await reads(service, target: "standby") > before
    }

    /// What a client reads about `jobID` (acknowledged as Success): the lookup, the watermark, the list,
    /// the history and its newest body all answer 200 and right, wherever they were read.
    private static func expectRightAnswers(_ service: ServiceHarness, _ jobID: String, callbacks: Int) async throws {
        let job = try await service.get("/v1/jobs/\(jobID)")
        #expect(job.status == 200)
        #expect((try job.json()["JobsDetail"] as? [String: Any])?["State"] as? String == "Success")
        let watermark = try await service.get("/v1/jobs/\(jobID)/watermark")
        #expect(watermark.status == 200)
        #expect(try watermark.json()["Message"] as? String == "m-Success")
        let list = try await service.get("/v1/jobs?limit=100")
        #expect(list.status == 200)
        let listed = (try list.json()["Jobs"] as? [[String: Any]])?.compactMap { ($0["JobsDetail"] as? [String: Any])?["JobId"] as? String }
        #expect(listed?.contains(jobID) == true)
        let history = try await service.get("/v1/jobs/\(jobID)/callbacks")
        #expect(history.status == 200)
        let entries = try #require(try history.json()["Callbacks"] as? [[String: Any]])
        #expect(entries.count == callbacks)
        let newest = try #require(entries.last?["BodyUrl"] as? String)
        #expect(try await service.get(newest).status == 200)
    }

    /// A standby that stops costs reads a fallback to the primary, never a wrong answer or a 503: at once
    /// (its connections fail), and once the service has found it down; `/readyz` stays ready and says so.
    /// Once it is back and caught up, reads go there again. The test probes the standby itself, so that
    /// reads come both before and after the service has noticed.
    @Test(.enabled(if: TestStandby.isOwned))
    func readStandby_Stopped_ReadsFallBackToThePrimaryUntilItIsBack() async throws {
        try await Self.withService(maxLag: .seconds(300), probing: false) { service, _ in
            // Up to 3 minutes: while the whole suite runs, the other tests' bulk loads put the standby's
            // replay 30 s and more behind the primary (seen in its log), and 60 s was once too short.
            let probeThenServed = { (path: String) in
                try await eventually(within: .seconds(180)) {
                    await service.store.checkReadStandby()
                    return try await Self.servedByStandby(service, path)
                }
            }
            let jobID = Self.newJobID()
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, "Running")).status == 200)
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, "Success")).status == 200)
            #expect(try await probeThenServed("/v1/jobs/\(jobID)"))
            try await TestStandby.stop()
            do {
                // Before a probe: the service still takes the standby for in sync, its reads there fail, and
                // the primary answers each of them.
                #expect(try await Self.standbyState(service) == "in_sync")
                let failedBefore = try await Self.reads(service, target: "primary", reason: "standby_error")
                try await Self.expectRightAnswers(service, jobID, callbacks: 2)
                #expect(try await Self.reads(service, target: "primary", reason: "standby_error") >= failedBefore + 5)
                // After a probe: down, still ready, and reads go straight to the primary.
                await service.store.checkReadStandby()
                let ready = try await service.get("/readyz")
                #expect(ready.status == 200)
                #expect(try ready.json()["Status"] as? String == "ready")
                #expect((try ready.json()["ReadStandby"] as? [String: Any])?["State"] as? String == "down")
                let written = Self.newJobID()  // replayed by the standby once it is back
                #expect(try await service.post("/v1/callbacks", Self.callback(written, "Success")).status == 200)
                let (standbyBefore, downBefore) = (
                    try await Self.reads(service, target: "standby"), try await Self.reads(service, target: "primary", reason: "standby_down")
                )
                try await Self.expectRightAnswers(service, jobID, callbacks: 2)
                try await Self.expectRightAnswers(service, written, callbacks: 1)
                #expect(try await Self.reads(service, target: "standby") == standbyBefore)
                #expect(try await Self.reads(service, target: "primary", reason: "standby_down") >= downBefore + 10)
                _ = try await TestStandby.start()
                #expect(
                    try await eventually(within: .seconds(120)) {
                        await service.store.checkReadStandby()
                        return try await Self.standbyState(service) == "in_sync"
                    })
                #expect(try await probeThenServed("/v1/jobs/\(written)"))
                #expect(try await probeThenServed("/v1/jobs/\(jobID)/watermark"))
                try await Self.expectRightAnswers(service, written, callbacks: 1)
            } catch {
                _ = try? await TestStandby.start()
                throw error
            }
        }
    }

    @Test func readStandby_InSync_LookupsListsAndHistoryReadTheStandby_ItsPreparedStatementsCountedApart() async throws {
        try await Self.withService(maxLag: .seconds(10)) { service, _ in
            let jobID = Self.newJobID()
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, "Success")).status == 200)
            #expect(try await eventually { try await Self.standbyState(service) == "in_sync" })
            for path in ["/v1/jobs/\(jobID)", "/v1/jobs/\(jobID)/watermark", "/v1/jobs?limit=5", "/v1/jobs/\(jobID)/callbacks"] {
                #expect(try await eventually { try await Self.servedByStandby(service, path) }, "\(path) never read the standby")
            }
            let history = try await service.get("/v1/jobs/\(jobID)/callbacks").json()
            let bodyURL = try #require((history["Callbacks"] as? [[String: Any]])?.first?["BodyUrl"] as? String)
            #expect(try await eventually { try await Self.servedByStandby(service, bodyURL) })
            // The standby's connections prepared the statements they ran, and say so apart from the primary's.
            let metrics = try await service.get("/metrics").text.split(separator: "\n")
            let prepared = metrics.first { $0.hasPrefix("db_read_statements_prepared_total ") }.flatMap { Double($0.split(separator: " ")[1]) }
            #expect((prepared ?? 0) >= 1, "\(metrics.filter { $0.contains("prepared") })")
        }
    }

    @Test func readStandby_ReplayPaused_AcknowledgedCallbackIsReadRightAtOnce() async throws {
        try await Self.withService(maxLag: .seconds(1)) { service, standbyURL in
            let jobID = Self.newJobID()
            #expect(try await service.post("/v1/callbacks", Self.callback(jobID, "Running")).status == 200)
            #expect(try await eventually { try await Self.servedByStandby(service, "/v1/jobs/\(jobID)") })
            try TestStandby.execute(standbyURL, "SELECT pg_wal_replay_pause()")
            do {
                // The standby still says Running; the acknowledged Success must be what a lookup sees, at once.
                #expect(try await service.post("/v1/callbacks", Self.callback(jobID, "Success")).status == 200)
                let job = try await service.get("/v1/jobs/\(jobID)").json()
                #expect((job["JobsDetail"] as? [String: Any])?["State"] as? String == "Success")
                let watermark = try await service.get("/v1/jobs/\(jobID)/watermark").json()
                #expect(watermark["Message"] as? String == "m-Success")
                let history = try await service.get("/v1/jobs/\(jobID)/callbacks").json()
                let callbacks = try #require(history["Callbacks"] as? [[String: Any]])
                #expect(callbacks.count == 2)
                let newest = try #require(callbacks.last?["BodyUrl"] as? String)
                #expect(try await service.get(newest).status == 200)
                // A job the standby has never seen.
                let other = Self.newJobID()
                #expect(try await service.post("/v1/callbacks", Self.callback(other, "Success")).status == 200)
                #expect(try await service.get("/v1/jobs/\(other)").status == 200)
                #expect(try await Self.reads(service, target: "primary", reason: "recent_write") >= 1)
                // Once the lag passes READ_MAX_LAG, listings go to the primary too and /readyz says so.
                #expect(try await eventually { try await Self.standbyState(service) == "lagging" })
                let list = try await service.get("/v1/jobs?limit=100").json()
                let listed = (list["Jobs"] as? [[String: Any]])?.compactMap { ($0["JobsDetail"] as? [String: Any])?["JobId"] as? String } ?? []
                #expect(listed.contains(other))
                #expect(try await Self.reads(service, target: "primary", reason: "lagging") >= 1)
            } catch {
                try? TestStandby.execute(standbyURL, "SELECT pg_wal_replay_resume()")
                throw error
            }
            try TestStandby.execute(standbyURL, "SELECT pg_wal_replay_resume()")
            #expect(try await eventually { try await Self.servedByStandby(service, "/v1/jobs/\(jobID)") })
        }
    }
}
