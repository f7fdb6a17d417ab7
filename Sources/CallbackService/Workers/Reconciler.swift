import CIClient
import CIModel
import Foundation
import JobStore
import Logging
import ServiceLifecycle
import Synchronization
import TimeUnits

/// How often and how far back the ``Reconciler`` looks.
public struct ReconcilerConfiguration: Sendable, Hashable {
    /// Pause between sweeps (`RECONCILE_INTERVAL`). Default: 60 s.
    public var interval: Duration = .seconds(60)
    /// A job not final locally is asked about once nothing was heard of it for this long
    /// (`RECONCILE_AFTER`). Default: 5 min.
    public var age: Duration = .seconds(300)
    /// Jobs first seen longer ago are no longer asked about, and the discovery listing covers jobs
    /// created this recently (`RECONCILE_WINDOW`). Default: 24 h.
    public var window: Duration = .seconds(24 * 3600)
    /// Least time between two discovery listings (DescribeMediaJobs); they are the expensive part of a
    /// sweep. Zero lists in every sweep. Default: 10 min.
    public var discoveryInterval: Duration = .seconds(600)
    /// Most open jobs described per sweep; the oldest news go first, the rest wait for the next sweep.
    /// Default: 1000.
    public var maxOpenJobsPerSweep: Int = 1000
    /// Most pages one discovery listing follows. Default: 100 (10 000 jobs).
    public var maxDiscoveryPages: Int = 100

    /// The defaults.
    public init() {}
}

/// How a reconcile sweep ended: the `result` label of `ci_reconcile_sweeps_total`.
public enum SweepResult: String, Sendable, Hashable, CaseIterable {
    /// The sweep ran to the end.
    case ok
    /// Another replica held the sweep lock; this one did nothing.
    case skipped
    /// The sweep or one of its batches failed; the next sweep tries again.
    case error
}

/// What one sweep did; also what the sweep's log line and metrics report.
public struct SweepReport: Sendable, Hashable, CustomStringConvertible {
    public var result: SweepResult = .ok
    /// Open jobs described.
    public var checked = 0
    /// Jobs whose stored state changed because of CI's answer.
    public var corrected = 0
    /// Final jobs from the listing that the store had never heard of.
    public var discovered = 0
    /// JobIds CI reported as `NonExistJobIds`.
    public var missing = 0
    /// Whether this sweep ran the discovery listing.
    public var listed = false

    public init() {}

    public var description: String {
        "result=\(result.rawValue) checked=\(checked) corrected=\(corrected) discovered=\(discovered) missing=\(missing) listed=\(listed)"
    }
}

/// Catches up on callbacks CI never delivered: periodically describes jobs not final locally
/// (DescribeMediaJob) and lists recently finished jobs (DescribeMediaJobs) to find ones never heard of.
///
/// Answers are stored exactly like callbacks (source `reconcile`), under the same deduplication and
/// precedence rules, so a late callback and a reconciled answer never fight. Only one replica sweeps at
/// a time (``JobStore/SweepLock``); the others count the sweep as skipped. A failing sweep is logged and
/// counted, and the next one tries again.
public final class Reconciler: Service, Sendable {
    private let store: JobStore
    private let client: CIClient
    private let lock: SweepLock
    private let configuration: ReconcilerConfiguration
    private let metrics: ServiceMetrics
    private let logger: Logger
    /// When the last discovery listing ran; read and written by sweeps, which tests may also call directly.
    private let lastDiscovery = Mutex<ContinuousClock.Instant?>(nil)

    /// Creates a reconciler; nothing happens until ``run()`` or ``sweep()``.
    public init(
        store: JobStore, client: CIClient, lock: SweepLock, configuration: ReconcilerConfiguration, metrics: ServiceMetrics,
        logger: Logger
    ) {
        self.store = store
        self.client = client
        self.lock = lock
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
    }

    /// Sweeps, then sleeps ``ReconcilerConfiguration/interval``, until graceful shutdown or cancellation.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                _ = await self.sweep()
                do {
                    try await Task.sleep(for: self.configuration.interval)
                } catch {
                    break
                }
            }
        }
        await lock.close()
    }

    /// Runs one sweep now (if this replica gets the lock), recording its metrics and log line.
    @discardableResult
    public func sweep() async -> SweepReport {
        let started = ContinuousClock.now
        var report: SweepReport
        do {
            if let done = try await lock.withLock({ try await self.sweepLocked() }) {
                report = done
            } else {
                report = SweepReport()
                report.result = .skipped
            }
        } catch is CancellationError {
            report = SweepReport()
            report.result = .error
        } catch {
            report = SweepReport()
            report.result = .error
            logger.warning("reconcile sweep failed", metadata: ["error": "\(error)"])
        }
        let elapsed = started.duration(to: .now)
        metrics.recordSweep(result: report.result, duration: elapsed)
        metrics.recordReconciledJobs(outcome: "checked", count: report.checked)
        metrics.recordReconciledJobs(outcome: "corrected", count: report.corrected)
        metrics.recordReconciledJobs(outcome: "discovered", count: report.discovered)
        metrics.recordReconciledJobs(outcome: "missing", count: report.missing)
        logger.info(
            "reconcile sweep",
            metadata: [
                "reconcile.result": "\(report.result.rawValue)", "reconcile.checked": "\(report.checked)",
                "reconcile.corrected": "\(report.corrected)", "reconcile.discovered": "\(report.discovered)",
                "reconcile.missing": "\(report.missing)", "reconcile.listed": "\(report.listed)",
                "duration_ms": "\(elapsed.inMilliseconds)",
            ])
        return report
    }

    private func sweepLocked() async throws -> SweepReport {
        var report = SweepReport()
        let now = Date()
        let windowStart = now.addingTimeInterval(-configuration.window.inSeconds)
        let open = try await store.openJobs(
            lastHeardBefore: now.addingTimeInterval(-configuration.age.inSeconds), firstSeenAfter: windowStart,
            limit: configuration.maxOpenJobsPerSweep)
        let localStates = Dictionary(open.map { ($0.jobID, $0.state) }, uniquingKeysWith: { first, _ in first })
        // A JobId CI could not have issued (a forged callback's) would make CI refuse the whole batch.
        let askable = open.map(\.jobID).filter(CIJobAnswers.isAskable)
        var failedBatches = 0
        for batch in CIClient.describeBatches(askable) {
            let response: CIResponse
            do {
                response = try await client.describeJobs(batch)
            } catch let error as CIClientError {
                // One refused batch must not starve the others, sweep after sweep.
                logger.warning("describing open jobs failed", metadata: ["ci.error": "\(error)", "job.count": "\(batch.count)"])
                failedBatches += 1
                continue
            }
            report.checked += response.envelope.jobs.count
            if !response.envelope.nonExistJobIDs.isEmpty {
                report.missing += response.envelope.nonExistJobIDs.count
                logger.notice(
                    "CI does not know jobs we hold as open; they are asked about until they leave the reconcile window",
                    metadata: ["job.ids": "\(response.envelope.nonExistJobIDs.joined(separator: ","))"])
            }
            // An unchanged answer is not stored: a long job would otherwise grow its history every sweep.
            report.corrected += try await CIJobAnswers.storeChanged(response, known: localStates, discover: false, into: store).corrected
        }

        if failedBatches > 0 { report.result = .error }

        if shouldList() {
            report.listed = true
            let query = CIJobListQuery(states: ["Success", "Failed"], startCreationTime: windowStart, endCreationTime: now)
            for page in try await client.listAllJobs(query, maxPages: configuration.maxDiscoveryPages) {
                let ids = page.envelope.jobs.map(\.jobID)
                let known = try await store.states(of: ids)
                let stored = try await CIJobAnswers.storeChanged(page, known: known, discover: true, into: store)
                report.corrected += stored.corrected
                report.discovered += stored.discovered
            }
        }
        return report
    }

    private func shouldList() -> Bool {
        let now = ContinuousClock.now
        return lastDiscovery.withLock { last in
            if let previous = last, previous.duration(to: now) < configuration.discoveryInterval { return false }
            last = now
            return true
        }
    }
}
