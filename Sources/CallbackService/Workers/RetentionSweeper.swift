import Foundation
import JobStore
import Logging
import ServiceLifecycle

/// Runs retention in the service: at start (so partitions exist ahead before callbacks need them) and
/// then every ``interval``, on one replica at a time.
///
/// The replicas agree through a ``SweepLock`` with a key of its own (``lockClassID``), so retention and the
/// reconciler's sweeps do not wait for each other; a replica that finds the lock taken skips the run.
public final class RetentionSweeper: Service, Sendable {
    /// The first half of retention's advisory lock key: "ciRt".
    public static let lockClassID: Int32 = 0x6369_5274

    private let runner: RetentionRunner
    private let lock: SweepLock
    private let interval: Duration
    private let logger: Logger

    /// - Parameter interval: Pause between runs (`RETENTION_INTERVAL`).
    public init(runner: RetentionRunner, lock: SweepLock, interval: Duration, logger: Logger) {
        self.runner = runner
        self.lock = lock
        self.interval = interval
        self.logger = logger
    }

    /// Runs retention, then sleeps ``interval``, until graceful shutdown or cancellation.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                _ = await self.runOnce()
                do {
                    try await Task.sleep(for: self.interval)
                } catch {
                    break
                }
            }
        }
        await lock.close()
    }

    /// One run now, if this replica gets the lock; nil when another replica holds it or the run failed
    /// (logged; the next run finishes what this one left).
    @discardableResult
    public func runOnce(now: Date = Date()) async -> RetentionReport? {
        do {
            guard let report = try await lock.withLock({ try await self.runner.run(now: now) }) else {
                logger.debug("retention skipped: another replica holds its lock")
                return nil
            }
            logger.info(
                "retention run",
                metadata: [
                    "retention.created": "\(report.created.count)", "retention.dropped": "\(report.dropped.joined(separator: ","))",
                    "retention.digests_deleted": "\(report.digestsDeleted)", "retention.jobs_deleted": "\(report.jobsDeleted)",
                    "retention.deliveries_deleted": "\(report.deliveriesDeleted)", "retention.events_deleted": "\(report.eventsDeleted)",
                ])
            return report
        } catch {
            logger.warning("retention run failed; the next run tries again", metadata: ["error": "\(error)"])
            return nil
        }
    }
}
