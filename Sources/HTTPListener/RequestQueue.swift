import HTTPWire
import Logging
import Synchronization

/// A parsed request travelling from its event loop to the responder, and the address its response goes back to.
struct RequestJob: Sendable {
    let request: HTTPRequest
    let loop: EventLoop
    let connectionID: UInt64
    let sequence: UInt64
    /// Body bytes reserved in the server's ``SharedBodyByteBudget`` for this request, released once it is answered.
    var bodyBytes: Int
}

/// The multi-producer (event loops), single-consumer (``HTTPServer/run()``) hand-off of parsed requests.
///
/// Not an `AsyncStream`: its iterator ends when the consuming task is cancelled and drops what is
/// buffered, but cancellation of `run()` must still let queued requests be answered during the grace
/// period. This queue ends only when ``finish()`` is called, after the last event loop has exited.
/// Its length is bounded by connections × `maxPipelinedRequests`, because loops stop reading a
/// connection at that many requests in flight.
final class RequestQueue: Sendable {
    private struct State {
        var jobs: [RequestJob] = []
        var waiter: CheckedContinuation<[RequestJob]?, Never>?
        var finished = false
    }

    private let state = Mutex(State())

    /// Enqueues a job; returns false when the queue is finished (the caller answers the request itself).
    func enqueue(_ job: RequestJob) -> Bool {
        let (accepted, waiter): (Bool, CheckedContinuation<[RequestJob]?, Never>?) = state.withLock { state in
            guard !state.finished else { return (false, nil) }
            if let waiter = state.waiter {
                state.waiter = nil
                return (true, waiter)
            }
            state.jobs.append(job)
            return (true, nil)
        }
        waiter?.resume(returning: [job])
        return accepted
    }

    /// Every queued job, waiting for one if none is queued; `nil` once finished and drained.
    /// Not cancellation-aware on purpose (see the type's documentation). One consumer only.
    func nextBatch() async -> [RequestJob]? {
        let ready: [RequestJob]?? = state.withLock { state in
            if !state.jobs.isEmpty {
                defer { state.jobs.removeAll(keepingCapacity: true) }
                return .some(state.jobs)
            }
            return state.finished ? .some(nil) : nil
        }
        if let ready { return ready }
        return await withCheckedContinuation { continuation in
            let immediate: [RequestJob]?? = state.withLock { state in
                if !state.jobs.isEmpty {
                    defer { state.jobs.removeAll(keepingCapacity: true) }
                    return .some(state.jobs)
                }
                if state.finished { return .some(nil) }
                state.waiter = continuation
                return nil
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
    }

    /// Ends the queue; a waiting consumer gets `nil`, later jobs are refused.
    func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }
}

/// What every event loop of one server shares.
/// Live figures of a running server, readable from any thread, for metrics.
public final class ListenerStatistics: Sendable {
    /// Connections counted against `maxConnections`, across loops.
    let openConnectionsCounter = Atomic<Int>(0)

    /// Request-body bytes reserved across connections (see ``ListenerLimits/maxInflightBodyBytes``).
    let bodyBytesInFlightCounter = Atomic<Int>(0)

    /// Client connections open now (those refused with 503 at the limit are not counted).
    public var openConnections: Int { openConnectionsCounter.load(ordering: .relaxed) }

    /// Request-body bytes being received or handled now, counted against ``ListenerLimits/maxInflightBodyBytes``.
    public var bodyBytesInFlight: Int { bodyBytesInFlightCounter.load(ordering: .relaxed) }

    public init() {}
}

final class ServerContext: Sendable {
    let limits: ListenerLimits
    let hooks: HTTPServerHooks
    /// Request-body bytes in memory across every loop and responder task.
    let bodyBudget: SharedBodyByteBudget
    let shutdownGracePeriod: Duration
    let logger: Logger
    let queue = RequestQueue()
    /// Counters shared with ``HTTPServer/statistics``.
    let statistics: ListenerStatistics
    /// Loops still running; the last to exit finishes the queue.
    private let runningLoops: Atomic<Int>
    /// Set when a loop had to close connections with requests still in flight at the end of the grace period.
    let gracePeriodExpired = Atomic<Bool>(false)
    /// Connections per loop, for spreading new connections across loops.
    let load: LoopLoad

    init(
        limits: ListenerLimits, hooks: HTTPServerHooks, shutdownGracePeriod: Duration, logger: Logger, loopCount: Int,
        statistics: ListenerStatistics
    ) {
        self.hooks = hooks
        bodyBudget = SharedBodyByteBudget(limit: limits.maxInflightBodyBytes, statistics: statistics)
        self.statistics = statistics
        self.limits = limits
        self.shutdownGracePeriod = shutdownGracePeriod
        self.logger = logger
        load = LoopLoad(loopCount: loopCount)
        runningLoops = Atomic(loopCount)
    }

    /// Passes a refusal to the application's observer, or, without one, logs it at debug level.
    func report(_ refusal: HTTPRefusal, response: HTTPResponse?) {
        if let observer = hooks.refusalObserver {
            observer(refusal, response)
        } else {
            logger.debug(
                "http request refused",
                metadata: [
                    "http.refusal": "\(refusal.reason.rawValue)", "http.status": "\(refusal.status?.code ?? 0)",
                    "http.reason": "\(refusal.message)", "net.peer": "\(refusal.remoteAddress)",
                ])
        }
    }

    func loopExited() {
        if runningLoops.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            queue.finish()
        }
    }
}
