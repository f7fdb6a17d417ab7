import CIClient
import CIModel
import CISimulator
import COSSigning
import CallbackService
import Foundation
import JobStore
import Logging
import PostgresLibPQ
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

/// Verifier logs are not asserted on.
private let verifyTestLogger: Logger = {
    var logger = Logger(label: "verify-test")
    logger.logLevel = .critical
    return logger
}()

/// A CI client nothing answers: port 1 (tcpmux), where no unprivileged test can listen.
private func unreachableCIClient() -> CIClient {
    var configuration = CIConfiguration(
        credentials: .init(secretID: "AKIDx", secretKey: "k"), bucket: "examplebucket-1250000000", region: "ap-chongqing",
        endpoint: URL(string: "http://127.0.0.1:1"))
    configuration.maxAttempts = 1
    return CIClient(configuration: configuration, logger: verifyTestLogger)
}

/// The simulator, the service with `VERIFY_CALLBACKS` on (pointed at the simulator, and it at the
/// service), and a verifier that runs only when asked to.
private struct VerifyRig {
    var simulator: CISimulatorTestHarness
    var service: ServiceHarness
    var metrics: ServiceMetrics
    var signal: VerificationSignal
    var verifier: CallbackVerifier

    static func with<T>(
        simulator configure: @escaping (inout SimulatorConfiguration) -> Void = { _ in },
        runVerifier: Bool = true,
        _ body: (VerifyRig) async throws -> T
    ) async throws -> T {
        try await CISimulatorTestHarness.with(configure) { simulator in
            let metrics = ServiceMetrics()
            let signal = VerificationSignal()
            // Another test may take the free port before the service binds it: try a few.
            var started: ServiceHarness?
            for attempt in 1...5 where started == nil {
                let port = try freeLoopbackPort()
                let submitter = WatermarkSubmitter(client: simulator.client(), callbackURL: "http://127.0.0.1:\(port)/v1/callbacks")
                do {
                    started = try await ServiceHarness.start(port: port, submitter: submitter, verificationSignal: signal, metrics: metrics)
                } catch where attempt < 5 {
                    continue
                }
            }
            let service = try #require(started)
            let verifier = makeVerifier(service: service, client: simulator.client(), signal: signal, metrics: metrics)
            let task: Task<Void, any Error>? = runVerifier ? Task { try await verifier.run() } : nil
            let rig = VerifyRig(simulator: simulator, service: service, metrics: metrics, signal: signal, verifier: verifier)
            do {
                let result = try await body(rig)
                task?.cancel()
                _ = try? await task?.value
                await service.stop()
                try service.dropSchema()
                return result
            } catch {
                task?.cancel()
                _ = try? await task?.value
                await service.stop()
                try? service.dropSchema()
                throw error
            }
        }
    }

    static func makeVerifier(service: ServiceHarness, client: CIClient, signal: VerificationSignal, metrics: ServiceMetrics) -> CallbackVerifier {
        var configuration = CallbackVerifierConfiguration()
        // Long enough that the wake-up from ingest, not the sweep, is what verifies in these tests.
        configuration.interval = .seconds(2)
        return CallbackVerifier(
            store: service.store, client: client, signal: signal, configuration: configuration, metrics: metrics,
            logger: verifyTestLogger)
    }

    func submit(_ object: String) async throws -> String {
        let reply = try await service.post("/v1/watermark-extractions", Array(#"{"Object":"\#(object)"}"#.utf8), contentType: "application/json")
        try #require(reply.status == 201, "\(reply.text)")
        return try #require(try reply.json()["JobId"] as? String)
    }

    func postCallback(jobID: String, state: String) async throws -> [String: Any] {
        let body = #"{"EventName":"TaskFinish","JobsDetail":{"JobId":"\#(jobID)","State":"\#(state)","Tag":"ExtractDigitalWatermark","Operation":{"ExtractDigitalWatermark":{"Type":"Text","Version":"V1","Message":"forged"}}}}"#
        let reply = try await service.post("/v1/callbacks", Array(body.utf8), contentType: "application/json")
        try #require(reply.status == 200, "\(reply.text)")
        return try reply.json()
    }

    func history(_ jobID: String) async throws -> [[String: Any]] {
        let reply = try await service.get("/v1/jobs/\(jobID)/callbacks")
        try #require(reply.status == 200, "\(reply.text)")
        return try #require(try reply.json()["Callbacks"] as? [[String: Any]])
    }

    /// The job's callback-sourced history entries (not submit or reconcile).
    func callbackEntries(_ jobID: String) async throws -> [[String: Any]] {
        try await history(jobID).filter { $0["Source"] as? String == "callback" }
    }

    func state(_ jobID: String) async throws -> String? {
        let reply = try await service.get("/v1/jobs/\(jobID)")
        guard reply.status == 200 else { return nil }
        return (try reply.json()["JobsDetail"] as? [String: Any])?["State"] as? String
    }

    func metricsText() async throws -> String {
        try await service.get("/metrics").text
    }
}

@Suite("Callback verification against CI")
struct VerifyCallbackTests {
    @Test
    func verify_ForgedSuccessForRunningJob_IsContradictedFlaggedAndCounted() async throws {
        // The job runs for a minute: CI reports Running for the whole test, and sends no callback.
        try await VerifyRig.with(simulator: {
            $0.runningAfter = .zero
            $0.jobDuration = .seconds(60)
        }) { rig in
            let jobID = try await rig.submit("input/long.mp4")
            let answer = try await rig.postCallback(jobID: jobID, state: "Success")
            #expect(answer["Verification"] as? String == "pending")
            #expect(answer["State"] as? String == "Success")
            #expect(answer["CurrentState"] as? String == "Submitted")

            let flagged = try await eventually {
                try await rig.callbackEntries(jobID).first?["Verification"] as? String == "contradicted"
            }
            #expect(flagged)
            let entry = try #require(try await rig.callbackEntries(jobID).first)
            #expect(entry["VerificationNote"] as? String == "CI reports Running")
            #expect(entry["Applied"] as? Bool == false)
            // CI's own answer is stored as a reconcile sweep would, right after the flag (same pass): the
            // job moves to Running, never Success.
            #expect(try await eventually { try await rig.state(jobID) == "Running" })
            #expect(try await rig.history(jobID).contains { $0["Source"] as? String == "reconcile" })
            // Counted when the batch ends, a moment after the flag is visible: polled, not assumed.
            let counted = try await eventually {
                try await rig.metricsText().contains(#"ci_callback_verifications_total{result="contradicted"} 1"#)
            }
            #expect(counted)
            let text = try await rig.metricsText()
            #expect(!text.contains(#"ci_callback_verifications_total{result="confirmed"}"#))
        }
    }

    @Test
    func verify_ForgedSuccessForJobsCINeverIssued_AreContradictedAndHistoryStillAnswers() async throws {
        try await VerifyRig.with { rig in
            let unknown = RequestIDForTests.jobID()
            let impossible = "not-a-ci-id.!"
            for jobID in [unknown, impossible] {
                let answer = try await rig.postCallback(jobID: jobID, state: "Success")
                #expect(answer["Verification"] as? String == "pending")
                #expect(answer["CurrentState"] is NSNull, "a job known only from held callbacks has no state yet")
            }
            for (jobID, note) in [(unknown, VerificationVerdict.unknownJobNote), (impossible, VerificationVerdict.impossibleJobIDNote)] {
                let flagged = try await eventually {
                    try await rig.callbackEntries(jobID).first?["Verification"] as? String == "contradicted"
                }
                #expect(flagged, "\(jobID)")
                #expect(try await rig.callbackEntries(jobID).first?["VerificationNote"] as? String == note)
                #expect(try await rig.service.get("/v1/jobs/\(jobID)").status == 404, "a contradicted callback must not create the job")
            }
            let counted = try await eventually {
                try await rig.metricsText().contains(#"ci_callback_verifications_total{result="contradicted"} 2"#)
            }
            #expect(counted)
        }
    }

    @Test
    func verify_GenuineCallbacks_ReachSuccessThroughConfirmationAndWakeWaiters() async throws {
        let jobCount = 4
        try await VerifyRig.with(simulator: {
            $0.runningAfter = .milliseconds(100)
            $0.jobDuration = .milliseconds(400)
        }) { rig in
            var jobIDs: [String] = []
            for index in 0..<jobCount { jobIDs.append(try await rig.submit("input/genuine-\(index).mp4")) }
            // Waiters start before any callback arrives; only the confirmation can wake them.
            let service = rig.service
            try await withThrowingTaskGroup(of: (String, String?, String?).self) { group in
                for jobID in jobIDs {
                    group.addTask {
                        let watermark = try await service.get("/v1/jobs/\(jobID)/watermark?wait=20s").json()
                        return (jobID, watermark["State"] as? String, watermark["Message"] as? String)
                    }
                }
                for try await (jobID, state, message) in group {
                    #expect(state == "Success", "\(jobID)")
                    #expect(message?.hasPrefix("wm-genuine-") == true)
                }
            }
            var delays: [Double] = []
            for jobID in jobIDs {
                let entry = try #require(try await rig.callbackEntries(jobID).first)
                #expect(entry["Verification"] as? String == "confirmed")
                #expect(entry["Applied"] as? Bool == true)
                #expect(entry["VerificationNote"] is NSNull)
                let job = try await rig.service.get("/v1/jobs/\(jobID)").json()
                let receipt = try #require(job["Receipt"] as? [String: Any])
                #expect(receipt["StateSource"] as? String == "callback")
                if let received = (entry["ReceivedTime"] as? String).flatMap(Self.instant),
                    let changed = (receipt["StateChangedTime"] as? String).flatMap(Self.instant)
                {
                    delays.append(changed.timeIntervalSince(received))
                }
            }
            #expect(delays.count == jobCount)
            print("verify: callback received → confirmed and applied in \(delays.map { String(format: "%.1f ms", $0 * 1000) })")
            // Counted, and the backlog gauge refreshed, when the batch ends: polled, not assumed.
            let counted = try await eventually {
                let text = try await rig.metricsText()
                return text.contains(#"ci_callback_verifications_total{result="confirmed"} \#(jobCount)"#)
                    && text.contains("ci_callback_verifications_pending 0")
            }
            #expect(counted)
        }
    }

    @Test
    func verify_CIUnreachable_CallbackStaysPendingThenConfirmsWhenCIIsBack() async throws {
        try await VerifyRig.with(
            simulator: {
                $0.runningAfter = .zero
                $0.jobDuration = .milliseconds(200)
            }, runVerifier: false
        ) { rig in
            let jobID = try await rig.submit("input/outage.mp4")
            let held = try await eventually {
                try await rig.callbackEntries(jobID).first?["Verification"] as? String == "pending"
            }
            try #require(held, "the simulator's Success callback should arrive and be held")

            let down = VerifyRig.makeVerifier(service: rig.service, client: unreachableCIClient(), signal: VerificationSignal(), metrics: rig.metrics)
            let report = await down.verifyPending()
            #expect(report.errors == 1 && report.confirmed == 0 && report.contradicted == 0)
            #expect(try await rig.callbackEntries(jobID).first?["Verification"] as? String == "pending")
            #expect(try await rig.state(jobID) == "Submitted")
            let during = try await rig.metricsText()
            #expect(during.contains(#"ci_callback_verifications_total{result="error"} 1"#), "\(during)")
            #expect(during.contains("ci_callback_verifications_pending 1"))

            // CI is back (a verifier that reaches it starts, as after a restart): its first pass confirms.
            let task = Task { try await rig.verifier.run() }
            defer { task.cancel() }
            let watermark = try await rig.service.get("/v1/jobs/\(jobID)/watermark?wait=20s").json()
            #expect(watermark["State"] as? String == "Success")
            #expect(try await rig.callbackEntries(jobID).first?["Verification"] as? String == "confirmed")
        }
    }

    @Test
    func verify_TwoReplicasVerifyingAtOnce_ApplyAndCountEachCallbackOnce() async throws {
        try await VerifyRig.with(
            simulator: {
                $0.runningAfter = .zero
                $0.jobDuration = .milliseconds(200)
            }, runVerifier: false
        ) { rig in
            let jobID = try await rig.submit("input/replicas.mp4")
            let held = try await eventually {
                try await rig.callbackEntries(jobID).first?["Verification"] as? String == "pending"
            }
            try #require(held)
            let other = VerifyRig.makeVerifier(service: rig.service, client: rig.simulator.client(), signal: VerificationSignal(), metrics: rig.metrics)
            async let first = rig.verifier.verifyPending()
            async let second = other.verifyPending()
            let reports = await [first, second]
            #expect(reports.map(\.confirmed).reduce(0, +) == 1, "\(reports)")
            #expect(reports.map(\.errors).reduce(0, +) == 0)
            let job = try await rig.service.get("/v1/jobs/\(jobID)").json()
            #expect((job["JobsDetail"] as? [String: Any])?["State"] as? String == "Success")
            // The submit answer and the confirmed callback: the second replica added nothing.
            #expect((job["Receipt"] as? [String: Any])?["CallbackCount"] as? Int == 2)
        }
    }

    @Test
    func verify_MixedCallback_AppliesNonFinalStatesAtOnceAndHoldsOnlyFinalOnes() async throws {
        try await VerifyRig.with(runVerifier: false) { rig in
            let running = RequestIDForTests.jobID()
            let finished = RequestIDForTests.jobID()
            let body = #"{"JobsDetail":[{"JobId":"\#(running)","State":"Running"},{"JobId":"\#(finished)","State":"Failed"}]}"#
            let reply = try await rig.service.post("/v1/callbacks", Array(body.utf8), contentType: "application/json")
            #expect(reply.status == 200)
            let jobs = try #require(try reply.json()["Jobs"] as? [[String: Any]])
            let byID = Dictionary(uniqueKeysWithValues: jobs.compactMap { job in (job["JobId"] as? String).map { ($0, job) } })
            #expect(byID[running]?["CurrentState"] as? String == "Running")
            #expect(byID[running]?["Verification"] == nil)
            #expect(byID[finished]?["Verification"] as? String == "pending")
            #expect(try await rig.state(running) == "Running")
            #expect(try await rig.state(finished) == nil)
            #expect(try await rig.callbackEntries(running).first?["Verification"] == nil)
            // Re-delivering the same bytes holds nothing new.
            let again = try await rig.service.post("/v1/callbacks", Array(body.utf8), contentType: "application/json").json()
            #expect(again["Duplicate"] as? Bool == true)
            #expect(try await rig.callbackEntries(finished).count == 1)
        }
    }

    @Test
    func verify_Off_CallbackAppliesAtOnceWithoutVerificationFields() async throws {
        try await ServiceHarness.with { service in
            let jobID = RequestIDForTests.jobID()
            let body = #"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Tag":"ExtractDigitalWatermark"}}"#
            let answer = try await service.post("/v1/callbacks", Array(body.utf8), contentType: "application/json").json()
            #expect(answer["CurrentState"] as? String == "Success")
            #expect(answer["Verification"] == nil)
            let history = try await service.get("/v1/jobs/\(jobID)/callbacks").json()
            let entry = try #require((history["Callbacks"] as? [[String: Any]])?.first)
            #expect(entry["Applied"] as? Bool == true)
            #expect(entry["Verification"] == nil && entry["VerificationNote"] == nil)
        }
    }

    private static func instant(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }
}

@Suite("Callback verification verdicts")
struct VerifyVerdictTests {
    @Test(arguments: [JobState.success, .failed, .cancel])
    func verdict_CIReportsTheClaimedState_Confirms(state: JobState) {
        #expect(VerificationVerdict.judge(claimed: state, reported: state) == .confirmed)
    }

    @Test
    func verdict_CIReportsAnotherState_ContradictsNamingCIsState() {
        #expect(VerificationVerdict.judge(claimed: .success, reported: .running) == .contradicted(note: "CI reports Running"))
        #expect(VerificationVerdict.judge(claimed: .success, reported: .failed) == .contradicted(note: "CI reports Failed"))
    }

    @Test
    func verdict_CIDoesNotKnowTheJob_Contradicts() {
        #expect(VerificationVerdict.judge(claimed: .failed, reported: nil) == .contradicted(note: "CI does not know this job"))
    }
}
