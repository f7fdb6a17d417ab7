import JobStore
import Logging
import ServiceLifecycle

/// How the ``EventSequencer`` paces itself.
public struct EventSequencerConfiguration: Sendable, Hashable {
    /// Pause between rounds when no wake-up arrives: bounds how long an event waits when the process that
    /// committed it does not sequence it (a replica killed right after its commit, `ci-callbackd reprocess`).
    /// Default: 1 s.
    public var interval: Duration = .seconds(1)
    /// Pause after a round failed (the database is unavailable). Default: 1 s.
    public var retryDelay: Duration = .seconds(1)
    /// Least time from one round's start to the next's: wake-ups meanwhile collapse into one round. Under
    /// load every ingest commit wakes the sequencer, and each round is a transaction of its own with a WAL
    /// flush; spacing them makes a round position the events of many commits at once, for at most this much
    /// more latency. Default: 20 ms.
    public var roundSpacing: Duration = .milliseconds(20)
    /// Most events one round walks through (``JobStore/sequenceEvents(limit:)``); a backlog takes rounds
    /// back to back. Default: ``JobStore/sequencerRoundLimit``.
    public var roundLimit: Int = JobStore.sequencerRoundLimit

    /// The defaults.
    public init() {}
}

/// Gives committed events their feed positions (``JobStore/sequenceEvents(limit:)``), which the delivery worker walks,
/// woken by its store after each commit that changed a job's state (``JobStore/stateEventSignal``) and at
/// every interval. Every replica runs one; the rounds of all replicas take turns on an advisory lock, so a
/// replica that finds nothing to do costs one short query.
public struct EventSequencer: Service {
    let store: JobStore
    let signal: WakeSignal
    let configuration: EventSequencerConfiguration
    let metrics: ServiceMetrics
    let logger: Logger

    public init(store: JobStore, signal: WakeSignal, configuration: EventSequencerConfiguration, metrics: ServiceMetrics, logger: Logger) {
        self.store = store
        self.signal = signal
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { [signal = self.signal, interval = self.configuration.interval] in await signal.signalEvery(interval) }
                self.signal.signal()
                for await _ in self.signal.wakeups {
                    let started = ContinuousClock.now
                    let pause = await self.sequencePending() ? self.configuration.roundSpacing : self.configuration.retryDelay
                    do {
                        try await Task.sleep(until: started + pause)
                    } catch {
                        break
                    }
                }
                group.cancelAll()
            }
        }
    }

    /// Runs rounds until one catches up with the newest event; false when a round failed.
    @discardableResult
    public func sequencePending() async -> Bool {
        while !Task.isCancelled {
            do {
                let round = try await store.sequenceEvents(limit: configuration.roundLimit)
                metrics.recordSequencerRound(round)
                if round.caughtUp { return true }
            } catch {
                logger.warning("event sequencer round failed", metadata: ["error": "\(error)"])
                return false
            }
        }
        return true
    }
}
