import CIClient
import CIModel
import CISimulator
import COSSigning
import CallbackService
import Foundation
import JobStore
import Logging
import PostgresLibPQ
import Prometheus
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Reconciler logs are not asserted on.
private let loopTestLogger: Logger = {
    var logger = Logger(label: "loop-test")
    logger.logLevel = .critical
    return logger
}()

/// Reconciliation as the tests want it: at once, and often.
private func fastReconcile() -> ReconcilerConfiguration {
    var configuration = ReconcilerConfiguration()
    configuration.interval = .milliseconds(200)
    configuration.age = .zero
    configuration.discoveryInterval = .zero
    return configuration
}

/// A submitter to a CI on loopback `ciPort` (one of the test's own, or none at all) that sends each
/// request once, and gives CI no callback URL.
func singleAttemptSubmitter(ciPort: Int) -> WatermarkSubmitter {
    var configuration = CIConfiguration(
        credentials: .init(secretID: "AKIDx", secretKey: "k"), bucket: "examplebucket-1250000000", region: "ap-chongqing",
        endpoint: URL(string: "http://127.0.0.1:\(ciPort)"))
    configuration.maxAttempts = 1
    return WatermarkSubmitter(client: CIClient(configuration: configuration, logger: loopTestLogger), callbackURL: nil)
}

/// The simulator, the service pointed at it (and it at the service), and optionally a running reconciler.
private struct LoopRig {
    var simulator: CISimulatorTestHarness
    var service: ServiceHarness
    var metrics: ServiceMetrics
    var reconciler: Reconciler

    static func with<T>(
        simulator configure: @escaping (inout SimulatorConfiguration) -> Void = { _ in },
        reconcile: Bool = false,
        secretKey: String? = nil,
        _ body: (LoopRig) async throws -> T
    ) async throws -> T {
        try await CISimulatorTestHarness.with(configure) { simulator in
            // Another test may take the free port before the service binds it: try a few.
            var started: ServiceHarness?
            for attempt in 1...5 where started == nil {
                let port = try freeLoopbackPort()
                let submitter = WatermarkSubmitter(
                    client: simulator.client(secretKey: secretKey), callbackURL: "http://127.0.0.1:\(port)/v1/callbacks")
                do {
                    started = try await ServiceHarness.start(port: port, submitter: submitter)
                } catch where attempt < 5 {
                    continue
                }
            }
            let service = try #require(started)
            let metrics = ServiceMetrics()
            let reconciler = Reconciler(
                store: service.store, client: simulator.client(),
                lock: SweepLock(conninfo: conninfo(testDatabaseURL, searchPath: service.schema), logger: loopTestLogger),
                configuration: fastReconcile(), metrics: metrics, logger: loopTestLogger)
            let reconcileTask: Task<Void, any Error>? = reconcile ? Task { try await reconciler.run() } : nil
            let rig = LoopRig(simulator: simulator, service: service, metrics: metrics, reconciler: reconciler)
            do {
                let result = try await body(rig)
                reconcileTask?.cancel()
                _ = try? await reconcileTask?.value
                await service.stop()
                try service.dropSchema()
                return result
            } catch {
                reconcileTask?.cancel()
                _ = try? await reconcileTask?.value
                await service.stop()
                try? service.dropSchema()
                throw error
            }
        }
    }

    func submit(_ json: String) async throws -> ServiceHarness.Reply {
        try await service.post("/v1/watermark-extractions", Array(json.utf8), contentType: "application/json")
    }

    /// The job's history entries, oldest first.
    func history(_ jobID: String) async throws -> [[String: Any]] {
        let reply = try await service.get("/v1/jobs/\(jobID)/callbacks")
        return try #require(try reply.json()["Callbacks"] as? [[String: Any]])
    }

    func sources(_ jobID: String) async throws -> Set<String> {
        Set(try await history(jobID).compactMap { $0["Source"] as? String })
    }

    func metricsText() -> String {
        String(decoding: metrics.registry.emitToBuffer(), as: UTF8.self)
    }

    /// The value of one counter series (`name{labels}`) in the reconciler's metrics; 0 when absent.
    func counter(_ series: String) -> Int {
        for line in metricsText().split(separator: "\n") where line.hasPrefix(series + " ") {
            return Int(Double(line.dropFirst(series.count + 1)) ?? 0)
        }
        return 0
    }
}

@Suite("Closing the loop with CI")
struct LoopTests {
    @Test
    func loop_SubmitThenCallbackThenLookup_ReturnsWatermarkText() async throws {
        try await LoopRig.with { rig in
            let reply = try await rig.submit(#"{"Object":"input/demo.mp4","UserData":"order-17","JobLevel":1}"#)
            #expect(reply.status == 201)
            let body = try reply.json()
            let jobID = try #require(body["JobId"] as? String)
            #expect(body["LookupUrl"] as? String == "/v1/jobs/\(jobID)")
            #expect(body["WatermarkUrl"] as? String == "/v1/jobs/\(jobID)/watermark")

            let watermark = try await rig.service.get("/v1/jobs/\(jobID)/watermark?wait=20s").json()
            #expect(watermark["State"] as? String == "Success")
            #expect(watermark["Message"] as? String == "wm-demo.mp4")

            // CI's answer and CI's callback race to the store. The answer's State is the job's stored state
            // once CI's answer was stored: `Submitted` when the answer came first, the callback's `Success`
            // when the callback overtook it (a final state is never replaced by an older one).
            let history = try await rig.history(jobID)
            #expect(Set(history.compactMap { $0["Source"] as? String }) == ["submit", "callback"])
            let submitted = try #require(history.first { $0["Source"] as? String == "submit" })
            let callback = try #require(history.first { $0["Source"] as? String == "callback" })
            #expect(submitted["State"] as? String == "Submitted")
            #expect(callback["State"] as? String == "Success" && callback["Applied"] as? Bool == true)
            let answered = try #require(body["State"] as? String)
            let answerStoredFirst = try #require(submitted["Applied"] as? Bool)
            #expect(answered == (answerStoredFirst ? "Submitted" : "Success"), "history: \(history)")

            let simulated = try #require(rig.simulator.simulator.job(jobID))
            #expect(simulated.callbackURL == "http://127.0.0.1:\(rig.service.port)/v1/callbacks")
        }
    }

    @Test
    func loop_DroppedCallback_ReconcilerBringsJobToSuccess() async throws {
        try await LoopRig.with(simulator: { $0.dropProbability = 1 }, reconcile: true) { rig in
            let reply = try await rig.submit(#"{"Object":"input/dropped.mp4"}"#)
            let jobID = try #require(try reply.json()["JobId"] as? String)
            let watermark = try await rig.service.get("/v1/jobs/\(jobID)/watermark?wait=20s").json()
            #expect(watermark["State"] as? String == "Success")
            #expect(watermark["Message"] as? String == "wm-dropped.mp4")
            let sources = try await rig.sources(jobID)
            #expect(sources.contains("submit") && sources.contains("reconcile") && !sources.contains("callback"))
            #expect(rig.simulator.simulator.statistics.dropped == 1)
            // The sweep that stored Success counts the job as `corrected` when the store already held it
            // (CI's submit answer was stored before the sweep read the job), or as `discovered` when the
            // sweep's listing found the finished job first: the reconciler runs alongside the submit, so
            // either can happen. It records its metrics after the commit that woke the lookup; polled
            // against a generous deadline, as on a loaded machine the sweep's tail can take seconds.
            let counted = try await eventually {
                rig.counter(#"ci_reconcile_jobs_total{outcome="corrected"}"#)
                    + rig.counter(#"ci_reconcile_jobs_total{outcome="discovered"}"#) >= 1
            }
            #expect(counted, "\(rig.metricsText())")
            #expect(rig.counter(#"ci_reconcile_sweeps_total{result="ok"}"#) >= 1)
        }
    }

    @Test
    func loop_TwentyPercentCallbacksDropped_AllJobsReachFinalState() async throws {
        let jobCount = 20
        try await LoopRig.with(
            simulator: { configuration in
                configuration.dropProbability = 0.2
                configuration.seed = 42
            }, reconcile: true
        ) { rig in
            let started = ContinuousClock.now
            var jobIDs: [String] = []
            for index in 0..<jobCount {
                let reply = try await rig.submit(#"{"Object":"input/batch-\#(index).mp4"}"#)
                try #require(reply.status == 201)
                jobIDs.append(try #require(try reply.json()["JobId"] as? String))
            }
            for (index, jobID) in jobIDs.enumerated() {
                let watermark = try await rig.service.get("/v1/jobs/\(jobID)/watermark?wait=20s").json()
                #expect(watermark["State"] as? String == "Success", "job \(index)")
                #expect(watermark["Message"] as? String == "wm-batch-\(index).mp4")
            }
            let elapsed = started.duration(to: .now)
            let dropped = rig.simulator.simulator.statistics.dropped
            print("loop: \(jobCount) jobs final in \(elapsed) with \(dropped) final callbacks dropped")
            #expect(dropped > 0, "the seed should drop some callbacks, or this test proves nothing")
        }
    }

    @Test
    func loop_JobNeverHeardOf_IsDiscoveredByListing() async throws {
        try await LoopRig.with { rig in
            // Submitted behind the service's back, with no callback: only the listing can find it.
            let request = WatermarkExtractionRequest(object: "input/unknown.mp4", callbackURL: "no")
            let jobID = try #require(try await rig.simulator.client().submitWatermarkExtraction(request).envelope.jobs.first?.jobID)
            for _ in 0..<200 where rig.simulator.simulator.job(jobID)?.state(at: Date()).isFinal != true {
                try await Task.sleep(for: .milliseconds(20))
            }
            let report = await rig.reconciler.sweep()
            #expect(report.result == .ok)
            #expect(report.discovered == 1)
            let job = try await rig.service.get("/v1/jobs/\(jobID)/watermark").json()
            #expect(job["State"] as? String == "Success")
            #expect(try await rig.sources(jobID) == ["reconcile"])
            // The second sweep finds nothing new: the job is final locally.
            let again = await rig.reconciler.sweep()
            #expect(again.discovered == 0 && again.corrected == 0)
        }
    }

    @Test
    func loop_OpenJobWithIdCICannotHaveIssued_DoesNotBreakTheSweep() async throws {
        // No callbacks: the submitted job stays open locally, so the sweep must describe it.
        try await LoopRig.with(simulator: { $0.dropProbability = 1 }) { rig in
            let forged = #"{"JobsDetail":{"JobId":"not a ci id","State":"Running","Tag":"ExtractDigitalWatermark"}}"#
            let stored = try await rig.service.post("/v1/callbacks", Array(forged.utf8), contentType: "application/json")
            #expect(stored.status == 200, "\(stored.text)")
            let reply = try await rig.submit(#"{"Object":"input/alongside.mp4"}"#)
            let jobID = try #require(try reply.json()["JobId"] as? String)
            for _ in 0..<200 where rig.simulator.simulator.job(jobID)?.state(at: Date()).isFinal != true {
                try await Task.sleep(for: .milliseconds(20))
            }
            let report = await rig.reconciler.sweep()
            #expect(report.result == .ok)
            #expect(report.checked == 1)
        }
    }

    @Test
    func loop_SweepWhileAnotherReplicaHoldsTheLock_IsSkipped() async throws {
        try await LoopRig.with { rig in
            let other = SweepLock(conninfo: conninfo(testDatabaseURL, searchPath: rig.service.schema), logger: loopTestLogger)
            let report = try await other.withLock { await rig.reconciler.sweep() }
            #expect(report?.result == .skipped)
            #expect(await rig.reconciler.sweep().result == .ok)
            await other.close()
            #expect(rig.metricsText().contains(#"ci_reconcile_sweeps_total{result="skipped"} 1"#))
        }
    }

    @Test(arguments: [
        (#"{"Object":"input/a.mp4","UserData":"caf\u00e9"}"#, "UserData"),
        (#"{"Object":"input/a.mp4","JobLevel":3}"#, "JobLevel"),
        (#"{"Object":"input/a.mp4","JobLevel":"high"}"#, "JobLevel"),
        (#"{"UserData":"x"}"#, "Object"),
        (#"{"Object":""}"#, "Object"),
        (#"{"Object":"input/a.mp4","CallBackFormat":"yaml"}"#, "CallBackFormat"),
        (#"{"Object":"input/a.mp4","UserData":null}"#, "UserData"),
        (#"{"Object":"input/a.mp4","JobLevel":1.5}"#, "JobLevel"),
    ])
    func loop_InvalidSubmission_Answers400NamingTheFieldWithoutCallingCI(body: String, field: String) async throws {
        try await LoopRig.with { rig in
            let reply = try await rig.submit(body)
            #expect(reply.status == 400)
            let error = try #require(try reply.json()["Error"] as? [String: Any])
            #expect((error["Message"] as? String)?.contains("'\(field)'") == true, "\(reply.text)")
            #expect(rig.simulator.simulator.statistics.requests == 0)
        }
    }

    @Test
    func loop_MalformedJSON_Answers400() async throws {
        try await LoopRig.with { rig in
            for body in ["{", "[1,2]", "not json", ""] {
                let reply = try await rig.submit(body)
                #expect(reply.status == 400, "\(body)")
            }
            #expect(rig.simulator.simulator.statistics.requests == 0)
        }
    }

    @Test
    func loop_WrongSecretKey_Answers502CIErrorWithCIsCode() async throws {
        try await LoopRig.with(secretKey: "not-the-key") { rig in
            let reply = try await rig.submit(#"{"Object":"input/a.mp4"}"#)
            #expect(reply.status == 502)
            let error = try #require(try reply.json()["Error"] as? [String: Any])
            #expect(error["Code"] as? String == "CIError")
            let message = try #require(error["Message"] as? String)
            #expect(message.contains("403") && message.contains("SignatureDoesNotMatch") && message.contains("RequestId"))
        }
    }

    @Test
    func loop_CIUnreachable_Answers502() async throws {
        // Port 1 (tcpmux): nothing listens there, and no unprivileged test can start listening.
        let service = try await ServiceHarness.start(submitter: singleAttemptSubmitter(ciPort: 1))
        let reply = try await service.post("/v1/watermark-extractions", Array(#"{"Object":"input/a.mp4"}"#.utf8))
        await service.stop()
        try service.dropSchema()
        #expect(reply.status == 502)
        #expect(try (reply.json()["Error"] as? [String: Any])?["Code"] as? String == "CIUnreachable")
    }

    @Test
    func loop_CINotConfigured_Answers503() async throws {
        try await ServiceHarness.with { service in
            let reply = try await service.post("/v1/watermark-extractions", Array(#"{"Object":"input/a.mp4"}"#.utf8))
            #expect(reply.status == 503)
            let error = try #require(try reply.json()["Error"] as? [String: Any])
            #expect(error["Code"] as? String == "CINotConfigured")
            #expect((error["Message"] as? String)?.contains("CI_SECRET_ID") == true)
        }
    }
}
