import Foundation
import Logging
import PostgresLibPQ
import Synchronization
import TimeUnits

/// Lets requests wait until a job reaches a final state, woken by PostgreSQL `NOTIFY` (migration 0002),
/// so a waiter on one replica hears about a callback stored by another, and nobody polls.
///
/// One dedicated connection on its own thread runs `LISTEN ci_job_final`. Waiters register per JobId;
/// the number of waiters is bounded. When the listening connection breaks, every waiter is woken to
/// re-read the job (a notification may have been missed), and the listener reconnects with backoff.
///
/// A LISTEN connection only reads, so a half-open one would look idle forever and notifications would
/// silently stop: after ``Configuration/heartbeatInterval`` without traffic the listener runs `SELECT 1`,
/// bounded by the connection's I/O deadline, and reconnects when it gets no answer.
public final class JobCompletionListener: Sendable {
    public static let channel = "ci_job_final"

    public struct Configuration: Sendable {
        public var conninfo: String
        /// Waiters across all jobs; more are refused (the API answers 503).
        public var maxWaiters: Int = 1000
        /// Connect timeout, I/O deadline and keepalives of the LISTEN connection.
        public var connection = PostgresConnectionSettings()
        /// Silence after which the LISTEN connection is checked with `SELECT 1`. Default 5 s.
        public var heartbeatInterval: Duration = .seconds(5)
        /// Longest pause between reconnect attempts (they start at 100 ms and double). Default 2 s.
        public var maxReconnectDelay: Duration = .seconds(2)
        /// Further channels to LISTEN on, each raising its signal on every notification and whenever the
        /// connection is (re)established (a notification may have been missed): the event sequencer's and the
        /// delivery workers' wake-ups share this one connection instead of holding their own.
        public var signals: [String: WakeSignal] = [:]
        public init(conninfo: String) { self.conninfo = conninfo }
    }

    /// Why a wait did not start.
    public struct TooManyWaiters: Error, Sendable {}

    private struct State {
        /// Registered waits: their JobId, and their continuation once they sleep.
        var jobOf: [UInt64: String] = [:]
        var sleeping: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var byJob: [String: Set<UInt64>] = [:]
        /// Waits woken before they went to sleep: they return at once instead.
        var wokenEarly: Set<UInt64> = []
        var nextID: UInt64 = 0
        var stopped = false
        var listening = false
    }

    private let configuration: Configuration
    private let logger: Logger
    /// Shared by request tasks (register, time out) and the listening thread (wake): hence a lock.
    private let state = Mutex(State())

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Whether the LISTEN connection is up (for readiness and tests).
    public var isListening: Bool { state.withLock { $0.listening } }

    /// How many waits for `jobID` are asleep, to be woken by its notification, a listener restart or
    /// their deadline. For diagnostics and tests: a test must know that a wait has begun before it
    /// stores the state that ends it, or it never exercises the notification.
    public func sleepingWaiters(for jobID: String) -> Int {
        state.withLock { state in state.byJob[jobID]?.count { state.sleeping[$0] != nil } ?? 0 }
    }

    /// Reads the event feed with `read` until `isDone` says so or `timeout` passes, sleeping between reads
    /// until the sequencer announces new events (``JobStore/sequencedEventsChannel``) or the listener
    /// restarts. Counts against ``Configuration/maxWaiters`` like a job wait.
    public func waitForEvents<Value: Sendable>(
        timeout: Duration, read: () async throws -> Value, isDone: (Value) -> Bool
    ) async throws -> Value {
        try await waitForFinal(jobID: Self.eventsKey, timeout: timeout, read: read, isFinal: isDone)
    }

    /// The waiter key of feed waits: no JobId is empty, so it cannot meet a job's notification.
    private static let eventsKey = ""

    /// Reads a job with `read` until `isFinal` says so or `timeout` passes, sleeping between reads
    /// until a notification for `jobID` (or a listener restart) wakes it. Returns the last value read.
    ///
    /// The wait is registered before each read, so a notification that lands between the read and
    /// the sleep is not lost.
    /// - Throws: ``TooManyWaiters`` when `maxWaiters` waits are in progress, or what `read` throws.
    public func waitForFinal<Value: Sendable>(
        jobID: String, timeout: Duration, read: () async throws -> Value, isFinal: (Value) -> Bool
    ) async throws -> Value {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            let id = try register(jobID)
            defer { unregister(id) }
            let value = try await read()
            if isFinal(value) || ContinuousClock.now >= deadline || Task.isCancelled { return value }
            await sleep(id, until: deadline)
        }
    }

    private func register(_ jobID: String) throws(TooManyWaiters) -> UInt64 {
        try state.withLock { state throws(TooManyWaiters) -> UInt64 in
            guard state.jobOf.count < configuration.maxWaiters else { throw TooManyWaiters() }
            let id = state.nextID
            state.nextID += 1
            state.jobOf[id] = jobID
            state.byJob[jobID, default: []].insert(id)
            if state.stopped { state.wokenEarly.insert(id) }
            return id
        }
    }

    private func unregister(_ id: UInt64) {
        let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let jobID = state.jobOf.removeValue(forKey: id) {
                state.byJob[jobID]?.remove(id)
                if state.byJob[jobID]?.isEmpty == true { state.byJob[jobID] = nil }
            }
            state.wokenEarly.remove(id)
            return state.sleeping.removeValue(forKey: id)
        }
        continuation?.resume()
    }

    /// Sleeps until woken, the deadline, or cancellation.
    private func sleep(_ id: UInt64, until deadline: ContinuousClock.Instant) async {
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await withCheckedContinuation { continuation in
                        let resumeNow = self.state.withLock { state -> Bool in
                            if state.wokenEarly.remove(id) != nil || state.jobOf[id] == nil { return true }
                            state.sleeping[id] = continuation
                            return false
                        }
                        if resumeNow { continuation.resume() }
                    }
                }
                group.addTask {
                    try? await Task.sleep(until: deadline, clock: .continuous)
                }
                await group.next()
                self.wake([id])
                group.cancelAll()
            }
        } onCancel: {
            self.wake([id])
        }
    }

    /// Listens until the task is cancelled. Run it beside the HTTP server (it is a ServiceLifecycle-style
    /// `run()`); the blocking libpq calls happen on a thread of its own (PostgresLibPQ's BlockingThread).
    public func run() async {
        let stop = StopFlag()
        let thread = BlockingThread<Void>(name: "pg-listen") {}
        await withTaskCancellationHandler {
            _ = try? await thread.run { [self] _ in self.listenLoop(stop: stop) }
        } onCancel: {
            stop.flag.store(true, ordering: .relaxed)
        }
        await thread.finish()
        state.withLock { $0.stopped = true }
        wakeAll()
    }

    /// Set by cancellation (any thread), read by the listening thread between waits.
    private final class StopFlag: Sendable {
        let flag = Atomic<Bool>(false)
        var isSet: Bool { flag.load(ordering: .relaxed) }
    }

    private func listenLoop(stop: StopFlag) {
        var backoff = Duration.milliseconds(100)
        while !stop.isSet {
            let connection: PostgresConnection
            do {
                connection = try PostgresConnection.connect(configuration.conninfo, settings: configuration.connection)
                try connection.listen(Self.channel)
                try connection.listen(JobStore.sequencedEventsChannel)
                for channel in configuration.signals.keys.sorted() {
                    try connection.listen(channel)
                }
            } catch {
                var metadata: Logger.Metadata = ["error": "\(error)"]
                if let refusal = error.connectionRefusal { metadata["hint"] = "\(refusal)" }
                logger.warning("job notifications unavailable; retrying", metadata: metadata)
                Thread.sleep(forTimeInterval: backoff.inSeconds)
                backoff = min(backoff * 2, configuration.maxReconnectDelay)
                continue
            }
            backoff = .milliseconds(100)
            state.withLock { $0.listening = true }
            // Anything announced while we were not listening was missed: let every waiter re-read.
            wakeAll()
            for signal in configuration.signals.values { signal.signal() }
            var lastHeard = ContinuousClock.now
            while !stop.isSet {
                do {
                    let notifications = try connection.waitForNotifications(timeout: .milliseconds(250))
                    if !notifications.isEmpty {
                        lastHeard = .now
                    } else if lastHeard.duration(to: .now) >= configuration.heartbeatInterval {
                        try connection.query("SELECT 1")
                        lastHeard = .now
                    }
                    for channel in Set(notifications.map(\.channel)) {
                        configuration.signals[channel]?.signal()
                    }
                    let ids = state.withLock { state in
                        notifications.flatMap { notification in
                            let key = notification.channel == JobStore.sequencedEventsChannel ? Self.eventsKey : notification.payload
                            return state.byJob[key].map(Array.init) ?? []
                        }
                    }
                    wake(ids)
                } catch {
                    logger.warning("job notification connection lost; reconnecting", metadata: ["error": "\(error)"])
                    break
                }
            }
            state.withLock { $0.listening = false }
            connection.close()
            wakeAll()
        }
    }

    /// Resumes the given waits, or marks them to return at once if they are not asleep yet.
    private func wake(_ ids: [UInt64]) {
        let continuations = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            ids.compactMap { id in
                guard state.jobOf[id] != nil else { return nil }
                guard let continuation = state.sleeping.removeValue(forKey: id) else {
                    state.wokenEarly.insert(id)
                    return nil
                }
                return continuation
            }
        }
        for continuation in continuations { continuation.resume() }
    }

    private func wakeAll() {
        wake(state.withLock { Array($0.jobOf.keys) })
    }
}
