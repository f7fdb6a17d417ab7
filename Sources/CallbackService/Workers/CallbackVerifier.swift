import CIClient
import CIModel
import Foundation
import JobStore
import Logging
import ServiceLifecycle
import TimeUnits

/// How the ``CallbackVerifier`` paces itself.
public struct CallbackVerifierConfiguration: Sendable, Hashable {
    /// Pause between periodic sweeps of the pending queue (`VERIFY_INTERVAL`), and the back-off after a
    /// pass in which CI could not be asked. Ingest also wakes the verifier at once, so this bounds only
    /// how long a callback held by another replica, or before a restart or a CI outage, waits. Default: 5 s.
    public var interval: Duration = .seconds(5)
    /// Most distinct jobs one verification batch settles. DescribeMediaJob calls are split further by
    /// ``CIClient/CIClient/describeBatches(_:)`` (its per-request limit). Default: 50.
    public var maxJobsPerBatch: Int = 50

    /// The defaults.
    public init() {}
}

/// CI's answer about a held callback, judged: the pure part of verification.
public enum VerificationVerdict: Sendable, Hashable {
    /// CI reports the state the callback claimed.
    case confirmed
    /// CI reports another state, or does not know the job; `note` says which, for the history.
    case contradicted(note: String)

    /// Compares the state a callback claimed with what CI reports for the job.
    /// - Parameters:
    ///   - claimed: The state in the callback.
    ///   - reported: CI's state for the job; nil when CI listed the job in `NonExistJobIds`.
    public static func judge(claimed: JobState, reported: JobState?) -> VerificationVerdict {
        guard let reported else { return .contradicted(note: unknownJobNote) }
        return reported == claimed ? .confirmed : .contradicted(note: "CI reports \(reported.rawValue)")
    }

    /// The note for a job CI answers it does not know.
    public static let unknownJobNote = "CI does not know this job"
    /// The note for a JobId CI could not have issued (DescribeMediaJob would refuse to look it up).
    public static let impossibleJobIDNote = "CI does not issue JobIds like this one"
}

/// What one verification batch did; also what its log line reports.
public struct VerificationReport: Sendable, Hashable, CustomStringConvertible {
    /// Held callbacks CI confirmed, now applied.
    public var confirmed = 0
    /// Held callbacks CI contradicted, now flagged.
    public var contradicted = 0
    /// Held callbacks left pending because CI or the database failed.
    public var errors = 0
    /// Held callbacks another replica settled first.
    public var settledElsewhere = 0

    public init() {}

    static func += (lhs: inout VerificationReport, rhs: VerificationReport) {
        lhs.confirmed += rhs.confirmed
        lhs.contradicted += rhs.contradicted
        lhs.errors += rhs.errors
        lhs.settledElsewhere += rhs.settledElsewhere
    }

    public var description: String {
        "confirmed=\(confirmed) contradicted=\(contradicted) errors=\(errors) settledElsewhere=\(settledElsewhere)"
    }
}

/// Confirms callbacks' final states with CI before they become jobs' states (`VERIFY_CALLBACKS`).
///
/// CI signs nothing, so a forged `Success` callback could otherwise set a job's result. With
/// verification on, ingest stores such a state as pending (``JobStore/JobStore/verificationSignal``) and
/// wakes this service, which asks CI (DescribeMediaJob) about the pending jobs, oldest first, and per
/// callback:
/// - CI reports the same state → the callback is applied under the usual precedence and marked
///   `confirmed` (``JobStore/JobStore/confirmVerification(_:verifiedAt:)``); `?wait=` lookups wake as usual;
/// - CI reports another state or does not know the job → the callback is marked `contradicted` with a
///   note, counted and logged; CI's own answer is stored exactly as the ``Reconciler`` stores answers;
/// - CI cannot be reached or fails → the callback stays pending and is tried again later.
///
/// Besides the wake-ups it sweeps every ``CallbackVerifierConfiguration/interval``, so callbacks held
/// before a restart, by another replica, or during a CI outage are verified too.
///
/// Several replicas may run it at once without a lock: settling an event requires it to be `pending`
/// (`WHERE verification = 'pending'`, under a row lock) and applying is idempotent, so a replica that
/// comes second writes nothing and counts nothing; the cost is at most a duplicate DescribeMediaJob call.
public final class CallbackVerifier: Service, Sendable {
    private let store: JobStore
    private let client: CIClient
    private let signal: VerificationSignal
    private let configuration: CallbackVerifierConfiguration
    private let metrics: ServiceMetrics
    private let logger: Logger

    /// Creates a verifier; nothing happens until ``run()`` or ``verifyPending()``.
    /// - Parameters:
    ///   - store: Where pending callbacks are read and settled.
    ///   - client: Asks CI about jobs.
    ///   - signal: The wake-up the ingest path raises; give the same object to the ingesting store.
    public init(
        store: JobStore, client: CIClient, signal: VerificationSignal, configuration: CallbackVerifierConfiguration,
        metrics: ServiceMetrics, logger: Logger
    ) {
        self.store = store
        self.client = client
        self.signal = signal
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
    }

    /// Verifies whenever woken and at every interval, until graceful shutdown or cancellation.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                // The periodic sweep raises the same signal ingest does, so one loop serves both and a
                // sweep that comes due while a pass runs collapses into the next pass.
                group.addTask { [signal = self.signal, interval = self.configuration.interval] in await signal.signalEvery(interval) }
                // What was held before this process started is verified at once.
                self.signal.signal()
                for await _ in self.signal.wakeups {
                    let report = await self.verifyPending()
                    if report.errors > 0 {
                        // CI (or the database) is failing: wake-ups during the back-off collapse into one
                        // pass afterwards instead of a request per callback.
                        do {
                            try await Task.sleep(for: self.configuration.interval)
                        } catch {
                            break
                        }
                    }
                }
                group.cancelAll()
            }
        }
    }

    /// Verifies every pending callback now, batch by batch, recording metrics and one log line per batch.
    /// Jobs whose batch failed are not retried within the same pass.
    @discardableResult
    public func verifyPending() async -> VerificationReport {
        var total = VerificationReport()
        var failedJobs: [String] = []
        while !Task.isCancelled {
            let pending: [PendingVerification]
            do {
                pending = try await store.pendingVerifications(maxJobs: configuration.maxJobsPerBatch, excluding: failedJobs)
            } catch {
                logger.warning("reading callbacks pending verification failed", metadata: ["error": "\(error)"])
                total.errors += 1
                metrics.recordVerifications(result: "error", count: 1)
                break
            }
            if pending.isEmpty { break }
            let started = ContinuousClock.now
            let (report, failed) = await verifyBatch(pending)
            total += report
            failedJobs += failed
            metrics.recordVerifications(result: "confirmed", count: report.confirmed)
            metrics.recordVerifications(result: "contradicted", count: report.contradicted)
            metrics.recordVerifications(result: "error", count: report.errors)
            logger.info(
                "callback verification batch",
                metadata: [
                    "verify.callbacks": "\(pending.count)", "verify.confirmed": "\(report.confirmed)",
                    "verify.contradicted": "\(report.contradicted)", "verify.errors": "\(report.errors)",
                    "verify.settled_elsewhere": "\(report.settledElsewhere)",
                    "duration_ms": "\(started.duration(to: .now).inMilliseconds)",
                ])
        }
        await recordBacklog()
        return total
    }

    /// Settles one batch; returns its report and the JobIds left pending by a failure.
    private func verifyBatch(_ pending: [PendingVerification]) async -> (VerificationReport, [String]) {
        var report = VerificationReport()
        var failedJobs: Set<String> = []
        let byJob = Dictionary(grouping: pending, by: \.jobID)
        var jobIDs: [String] = []
        for event in pending where !jobIDs.contains(event.jobID) { jobIDs.append(event.jobID) }

        // A JobId CI could not have issued would make CI refuse the whole DescribeMediaJob request; no
        // answer could confirm it anyway.
        for event in pending where !CIJobAnswers.isAskable(event.jobID) {
            do {
                try await settle(event, verdict: .contradicted(note: VerificationVerdict.impossibleJobIDNote), reported: nil, into: &report)
            } catch {
                logger.warning("flagging a callback failed; it stays pending", metadata: ["error": "\(error)"])
                report.errors += 1
                failedJobs.insert(event.jobID)
            }
        }

        for batch in CIClient.describeBatches(jobIDs.filter(CIJobAnswers.isAskable)) {
            let events = batch.flatMap { byJob[$0] ?? [] }
            let response: CIResponse
            do {
                response = try await client.describeJobs(batch)
            } catch {
                logger.warning(
                    "asking CI to verify callbacks failed; they stay pending",
                    metadata: ["ci.error": "\(error)", "job.count": "\(batch.count)"])
                report.errors += events.count
                failedJobs.formUnion(batch)
                continue
            }
            let answers = Self.reportedStates(response.envelope)
            let unknown = Set(response.envelope.nonExistJobIDs)
            var contradictedJobs: Set<String> = []
            var handled = 0
            do {
                for event in events {
                    let reported = answers[event.jobID]
                    guard reported != nil || unknown.contains(event.jobID) else {
                        // Neither described nor reported missing: CI's answer says nothing either way.
                        report.errors += 1
                        failedJobs.insert(event.jobID)
                        handled += 1
                        continue
                    }
                    let verdict = VerificationVerdict.judge(claimed: event.claimedState, reported: reported)
                    if try await settle(event, verdict: verdict, reported: reported, into: &report) == .contradicted {
                        contradictedJobs.insert(event.jobID)
                    }
                    handled += 1
                }
                // CI's answer about a contradicted job is news in its own right (the forged callback may
                // hide a real state change): stored exactly as a reconcile sweep stores it.
                if !contradictedJobs.isEmpty {
                    var answer = response
                    answer.envelope.jobs = response.envelope.jobs.filter { contradictedJobs.contains($0.jobID) }
                    let known = try await store.states(of: Array(contradictedJobs))
                    _ = try await CIJobAnswers.storeChanged(answer, known: known, discover: true, into: store)
                }
            } catch {
                // The database failed: what was not settled yet stays pending for the next pass.
                logger.warning("settling verified callbacks failed; the rest stay pending", metadata: ["error": "\(error)"])
                report.errors += events.count - handled
                failedJobs.formUnion(batch)
            }
        }
        return (report, Array(failedJobs))
    }

    private enum Settlement { case confirmed, contradicted, elsewhere }

    /// Applies or flags one held callback, counting and logging what this replica did.
    @discardableResult
    private func settle(
        _ event: PendingVerification, verdict: VerificationVerdict, reported: JobState?, into report: inout VerificationReport
    ) async throws -> Settlement {
        let now = Date()
        switch verdict {
        case .confirmed:
            guard try await store.confirmVerification(event, verifiedAt: now) != nil else {
                report.settledElsewhere += 1
                return .elsewhere
            }
            report.confirmed += 1
            metrics.recordVerificationDelay(Self.delay(since: event.receivedMicros, until: now))
            return .confirmed
        case .contradicted(let note):
            guard try await store.contradictVerification(event, note: note, verifiedAt: now) else {
                report.settledElsewhere += 1
                return .elsewhere
            }
            report.contradicted += 1
            metrics.recordVerificationDelay(Self.delay(since: event.receivedMicros, until: now))
            logger.warning(
                "CI contradicts a callback; it stays in the history only",
                metadata: [
                    "job.id": "\(event.jobID)", "callback.id": "\(event.callbackID)",
                    "callback.claimed_state": "\(event.claimedState.rawValue)",
                    "ci.state": "\(reported?.rawValue ?? "unknown")", "net.peer": "\(event.remoteAddress ?? "-")",
                ])
            return .contradicted
        }
    }

    /// Each described job's state; a job described twice keeps the state of higher precedence (the later
    /// among equals), as ingest would.
    static func reportedStates(_ envelope: CallbackEnvelope) -> [String: JobState] {
        var states: [String: JobState] = [:]
        for job in envelope.jobs {
            if let existing = states[job.jobID], !existing.allowsReplacement(by: job.state) { continue }
            states[job.jobID] = job.state
        }
        return states
    }

    private func recordBacklog() async {
        do {
            let backlog = try await store.verificationBacklog()
            let age = backlog.oldestReceivedMicros.map { Self.delay(since: $0, until: Date()) } ?? .zero
            metrics.recordVerificationBacklog(pending: backlog.pending, oldestAgeSeconds: age.inSeconds)
        } catch {
            logger.debug("reading the verification backlog failed", metadata: ["error": "\(error)"])
        }
    }

    private static func delay(since micros: Int64, until date: Date) -> Duration {
        let now = date.microsecondsSince1970
        return .microseconds(max(0, now - micros))
    }
}
