import Foundation
import JobStore
import Logging
import ServiceLifecycle

/// Rolls the callbacks received since the last run up into per-minute counts (``JobStore/rollUpCallbackRates(now:policy:)``)
/// every ``interval``, so that the console's overview reads a day of minutes instead of counting a day of
/// callbacks. It runs beside ingest, not in it: ingest does no extra work. Every replica runs it; a run
/// that finds another replica's under way skips (the watermark row is locked `SKIP LOCKED`).
public final class CallbackRateRollup: Service, Sendable {
    private let store: JobStore
    private let interval: Duration
    private let policy: CallbackRollupPolicy
    private let logger: Logger

    /// - Parameter interval: Pause between runs (`CONSOLE_ROLLUP_INTERVAL`); the overview counts this and a
    ///   minute of callbacks itself, and at most ``ConsoleOverviewPolicy/liveWindow`` (15 minutes): an
    ///   interval longer than that leaves minutes the overview shows as not counted yet.
    public init(store: JobStore, interval: Duration, policy: CallbackRollupPolicy = CallbackRollupPolicy(), logger: Logger) {
        self.store = store
        self.interval = interval
        self.policy = policy
        self.logger = logger
    }

    /// Rolls up, then sleeps ``interval``, until graceful shutdown or cancellation.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.runOnce()
                do {
                    try await Task.sleep(for: self.interval)
                } catch {
                    break
                }
            }
        }
    }

    /// One run now; a failure is logged and the next run counts what this one left.
    @discardableResult
    public func runOnce(now: Date = Date()) async -> CallbackRollupReport? {
        do {
            let report = try await store.rollUpCallbackRates(now: now, policy: policy)
            logger.debug("callback rates rolled up", metadata: ["rollup.chunks": "\(report.chunks)", "rollup.skipped": "\(report.skipped)"])
            return report
        } catch {
            logger.warning("callback rate rollup failed; the next run tries again", metadata: ["error": "\(error)"])
            return nil
        }
    }
}
