import HTTPWire
import Logging
import ServiceLifecycle
import Synchronization

/// An HTTP/1.1 server on POSIX sockets and epoll: one event-loop thread per configured loop, all
/// accepting from one listening socket, handing parsed requests to an async responder.
///
/// One socket, without `SO_REUSEPORT`, so that the port belongs to one process: a second instance on
/// the same port fails to bind (``HTTPServerError/Code/bindFailed``, `EADDRINUSE`) instead of silently
/// sharing the traffic.
///
/// The loops never block on the responder: requests go through a queue to ``run()``'s task group (at
/// most `maxConcurrentRequests` responder calls at once), and responses come back to the owning loop
/// through its inbox and eventfd, to be written in request order per connection.
///
/// Stopping: cancel the task running ``run()``, or trigger ServiceLifecycle's graceful shutdown. Either
/// way the listeners close at once (new connections are refused), requests already received are
/// answered (the last response on each connection carries `Connection: close`) for up to
/// `shutdownGracePeriod`, then every connection closes and `run()` returns. Under task cancellation the
/// responder calls inherit the cancellation, as structured concurrency requires; under graceful shutdown
/// they do not.
public final class HTTPServer: Sendable {
    /// Produces the response to one request. Runs on the cooperative pool, never on an event loop.
    public typealias Responder = @Sendable (HTTPRequest) async -> HTTPResponse

    private enum Phase {
        case idle
        case starting
        case listening(port: Int)
        case stopped(HTTPServerError?)
    }

    private struct State {
        var phase = Phase.idle
        var waiters: [UInt64: CheckedContinuation<Int, any Error>] = [:]
        var nextWaiterID: UInt64 = 0
    }

    private let configuration: HTTPServerConfiguration
    private let logger: Logger
    private let responder: Responder
    private let hooks: HTTPServerHooks
    private let state = Mutex(State())
    /// Connection counts while running, for metrics.
    public let statistics: ListenerStatistics

    /// Creates a server; nothing is bound until ``run()``.
    /// - Parameters:
    ///   - configuration: Address, limits and concurrency.
    ///   - logger: Receives listener events (start, stop, accept failures; rejections at debug level).
    ///   - statistics: Where the server keeps its live counters; pass one to read them elsewhere.
    ///   - hooks: The application's admission decision, error responses and refusal observer.
    ///   - responder: Answers every request the listener does not reject itself.
    public init(
        configuration: HTTPServerConfiguration, logger: Logger, statistics: ListenerStatistics = ListenerStatistics(),
        hooks: HTTPServerHooks = HTTPServerHooks(), responder: @escaping Responder
    ) {
        self.hooks = hooks
        self.statistics = statistics
        self.configuration = configuration
        self.logger = logger
        self.responder = responder
    }

    /// Binds, serves until cancelled or gracefully shut down, drains, and returns.
    ///
    /// - Throws: ``HTTPServerError`` when the address is invalid or binding fails (with the errno, for
    ///   example `EADDRINUSE`), or when called a second time.
    public func run() async throws {
        try claimStart()
        let loops: [EventLoop]
        let context: ServerContext
        let port: Int
        do {
            (loops, context, port) = try start()
        } catch {
            finish(error)
            throw error
        }
        logger.info(
            "http server listening",
            metadata: ["http.host": "\(configuration.host)", "http.port": "\(port)", "http.loops": "\(loops.count)"])
        resolveWaiters(port: port)

        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await self.serve(context)
            } onGracefulShutdown: {
                for loop in loops { loop.requestShutdown() }
            }
        } onCancel: {
            for loop in loops { loop.requestShutdown() }
        }
        finish(nil)
        logger.info("http server stopped", metadata: ["http.port": "\(port)"])
    }

    /// The bound port, once ``run()`` is listening; waits until then.
    ///
    /// - Throws: The bind error when ``run()`` failed, ``HTTPServerError/Code/stopped`` when the server
    ///   already stopped, or `CancellationError`.
    public func waitUntilListening() async throws -> Int {
        let id = state.withLock { state in
            defer { state.nextWaiterID += 1 }
            return state.nextWaiterID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let immediate: Result<Int, any Error>? = state.withLock { state in
                    switch state.phase {
                    case .listening(let port): return .success(port)
                    case .stopped(let error): return .failure(error ?? HTTPServerError(.stopped, address: address))
                    case .idle, .starting:
                        // Checked under the lock the cancel handler takes, so a cancellation is never missed.
                        if Task.isCancelled { return .failure(CancellationError()) }
                        state.waiters[id] = continuation
                        return nil
                    }
                }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(throwing: CancellationError())
        }
    }

    // MARK: - Private

    private var address: String { "\(configuration.host):\(configuration.port)" }

    private func claimStart() throws(HTTPServerError) {
        try state.withLock { state throws(HTTPServerError) in
            guard case .idle = state.phase else { throw HTTPServerError(.alreadyStarted, address: address) }
            state.phase = .starting
        }
    }

    /// Binds the listening socket and starts the loop threads, which all accept from it.
    private func start() throws(HTTPServerError) -> ([EventLoop], ServerContext, Int) {
        let bindAddress = try BindAddress(host: configuration.host, port: configuration.port)
        let loopCount = max(1, configuration.eventLoopCount)
        let (fd, port) = try bindAddress.listen()
        let listener = ListeningSocket(fd: fd, holders: loopCount)

        let context = ServerContext(
            limits: configuration.limits, hooks: hooks, shutdownGracePeriod: configuration.shutdownGracePeriod, logger: logger, loopCount: loopCount,
            statistics: statistics)
        var loops: [EventLoop] = []
        var failure: HTTPServerError?
        for index in 0..<loopCount {
            if failure != nil {
                listener.release()
                context.loopExited()
                continue
            }
            do {
                loops.append(try EventLoop(index: index, listener: listener, address: "\(configuration.host):\(port)", context: context))
            } catch {
                failure = error
                context.loopExited()
            }
        }
        var started = 0
        if failure == nil {
            for loop in loops {
                do {
                    try loop.start()
                    started += 1
                } catch {
                    failure = error
                    break
                }
            }
        }
        if let failure {
            for loop in loops.prefix(started) { loop.requestShutdown() }
            for loop in loops.dropFirst(started) { loop.abandon() }
            throw failure
        }
        return (loops, context, port)
    }

    /// Feeds queued requests to the responder, at most `maxConcurrentRequests` at once, until every loop has exited.
    private func serve(_ context: ServerContext) async {
        let limit = max(1, configuration.maxConcurrentRequests)
        let responder = self.responder
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            while let batch = await context.queue.nextBatch() {
                for job in batch {
                    if running >= limit {
                        await group.next()
                        running -= 1
                    }
                    group.addTask {
                        let response = await responder(job.request)
                        // The body may be gone from memory only now: the responder held the request.
                        var bodyBytes = job.bodyBytes
                        context.bodyBudget.release(&bodyBytes)
                        job.loop.complete(connectionID: job.connectionID, sequence: job.sequence, response: response)
                    }
                    running += 1
                }
            }
            // Loops have exited. If the grace period ran out, nobody waits for these responses any more.
            if context.gracePeriodExpired.load(ordering: .relaxed) { group.cancelAll() }
        }
    }

    private func resolveWaiters(port: Int) {
        let waiters = state.withLock { state in
            state.phase = .listening(port: port)
            defer { state.waiters.removeAll() }
            return state.waiters.values
        }
        for waiter in waiters { waiter.resume(returning: port) }
    }

    private func finish(_ error: (any Error)?) {
        let failure = error.map { $0 as? HTTPServerError ?? HTTPServerError(.stopped, address: address) }
        let waiters = state.withLock { state in
            state.phase = .stopped(failure)
            defer { state.waiters.removeAll() }
            return state.waiters.values
        }
        for waiter in waiters { waiter.resume(throwing: failure ?? HTTPServerError(.stopped, address: address)) }
    }
}

extension HTTPServer: Service {}
