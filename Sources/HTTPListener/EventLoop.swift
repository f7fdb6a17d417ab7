import CEpoll
import HTTPWire
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import TimeUnits

/// One connection, owned by the loop thread that accepted it: its socket, its output buffer, and the state
/// machine that decides everything else.
private final class Connection {
    let id: UInt64
    let fd: Int32
    let remoteAddress: String
    /// Counted against `maxConnections`; connections accepted only to be refused with 503 are not.
    let counted: Bool
    var machine: ConnectionStateMachine
    var output: [UInt8] = []
    var outputOffset = 0
    /// The epoll interest registered for `fd`.
    var interest: UInt32
    var isOpen = true

    var hasOutput: Bool { outputOffset < output.count }

    init(id: UInt64, fd: Int32, remoteAddress: String, counted: Bool, interest: UInt32, machine: ConnectionStateMachine) {
        self.id = id
        self.fd = fd
        self.remoteAddress = remoteAddress
        self.counted = counted
        self.interest = interest
        self.machine = machine
    }
}

/// One epoll event-loop thread with its own connections, accepting from the server's shared listening socket.
///
/// `@unchecked Sendable`: every stored property except `inbox` is used only by the loop's own thread once
/// `start()` has run; `inbox` is the one piece other threads reach (finished responses and the shutdown
/// request), so it alone is behind a lock, and an eventfd in the epoll set wakes the loop to read it.
final class EventLoop: @unchecked Sendable {
    private struct Completion {
        let connectionID: UInt64
        let sequence: UInt64
        let response: HTTPResponse
    }

    private struct Inbox {
        var completions: [Completion] = []
        var shutdownRequested = false
        /// Set before the eventfd is closed, so a late completion never writes to a reused descriptor.
        var closed = false
    }

    private static let listenerToken: UInt64 = 0
    private static let wakeToken: UInt64 = 1
    private static let readableEvents = CEPOLL_IN | CEPOLL_RDHUP
    /// Level-triggered and not `EPOLLEXCLUSIVE`: every loop watching the socket sees pending connections,
    /// so when one loop stops accepting (its share is full, or accept failed) the others take what is
    /// already queued. With `EPOLLEXCLUSIVE` the kernel would wake one loop per arrival, and connections
    /// queued while that loop paused would wait for the next arrival. The cost is a wake-up per loop
    /// per arrival burst, of which all but one find nothing to accept; there are at most a few loops.
    private static let listenerEvents = CEPOLL_IN
    /// Deadlines are checked at most this often: a sweep visits every connection, and thousands of slow
    /// connections would otherwise each bring their own wake-up.
    private static let sweepGranularity: UInt64 = 10_000_000
    private static let acceptPause: UInt64 = 100_000_000
    /// A loop holding this many connections above an even share stops accepting (see ``LoopLoad``)...
    private static let balanceSlack = 2
    /// ...and looks again this often whether it is back to its share.
    private static let balanceRecheck: UInt64 = 5_000_000
    /// `Retry-After` for refusals that only mean "not now": at capacity, at a peer's limit.
    private static let retryAfterSeconds = 1
    private static let readBufferSize = 64 * 1024
    private static let maxEvents: Int32 = 256

    let index: Int
    private let inbox = Mutex(Inbox())
    private let context: ServerContext
    private let logger: Logger
    private let epollFD: Int32
    private let wakeFD: Int32
    private let machineConfiguration: ConnectionStateMachine.Configuration
    /// The application's admission and the server's body budget, as every connection's machine asks them.
    private let gate: ConnectionStateMachine.Gate
    /// Which connections this loop admits, per peer and against the server's capacity.
    private var admission: ConnectionAdmission
    private let listener: ListeningSocket
    /// This loop has not yet released its hold on `listener`.
    private var holdsListener = true
    private var listenerRegistered = true
    private var acceptResumeAt = UInt64.max
    private var connections: [UInt64: Connection] = [:]
    private var nextConnectionID: UInt64 = 2
    private var rejectingConnections = 0
    private var shuttingDown = false
    private var graceDeadline = UInt64.max
    private var nextSweep = UInt64.max
    private var lastSweep: UInt64 = 0
    private var dateCache = HTTPDateCache()
    private let readBuffer: UnsafeMutableRawBufferPointer
    private var now: UInt64 = 0

    /// Creates the loop's epoll set and eventfd and registers the listening socket. Takes one hold on
    /// `listener` (released on failure too).
    init(index: Int, listener: ListeningSocket, address: String, context: ServerContext) throws(HTTPServerError) {
        self.index = index
        self.context = context
        self.listener = listener
        var logger = context.logger
        logger[metadataKey: "http.loop"] = "\(index)"
        self.logger = logger
        machineConfiguration = ConnectionStateMachine.Configuration(limits: context.limits)
        let budget = context.bodyBudget
        gate = ConnectionStateMachine.Gate(
            admit: context.hooks.admission, reserveBody: { held, wanted in budget.grow(&held, to: wanted) },
            releaseBody: { held in budget.release(&held) })
        admission = ConnectionAdmission(
            maxConnections: context.limits.maxConnections, maxConnectionsPerPeer: context.limits.maxConnectionsPerPeer,
            loopCount: context.load.loopCount)

        let epollFD = cepoll_create()
        guard epollFD >= 0 else {
            let error = HTTPServerError.systemCall(.eventLoopFailed, address: address)
            listener.release()
            throw error
        }
        let wakeFD = cepoll_eventfd()
        guard wakeFD >= 0 else {
            let error = HTTPServerError.systemCall(.eventLoopFailed, address: address)
            close(epollFD)
            listener.release()
            throw error
        }
        guard cepoll_ctl(epollFD, CEPOLL_CTL_ADD, wakeFD, CEPOLL_IN, Self.wakeToken) == 0,
            cepoll_ctl(epollFD, CEPOLL_CTL_ADD, listener.fd, Self.listenerEvents, Self.listenerToken) == 0
        else {
            let error = HTTPServerError.systemCall(.eventLoopFailed, address: address)
            close(wakeFD)
            close(epollFD)
            listener.release()
            throw error
        }
        self.epollFD = epollFD
        self.wakeFD = wakeFD
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 16)
    }

    deinit {
        close(wakeFD)
    }

    // MARK: - Other threads

    /// Starts the loop thread.
    func start() throws(HTTPServerError) {
        let retained = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let result = pthread_create(
            &thread, nil,
            { raw in
                let loop = Unmanaged<EventLoop>.fromOpaque(raw!).takeRetainedValue()
                loop.run()
                return nil
            }, retained.toOpaque())
        guard result == 0 else {
            retained.release()
            throw HTTPServerError(.eventLoopFailed, errno: result, address: "event loop \(index)")
        }
        pthread_detach(thread)
    }

    /// Releases a loop whose thread never started.
    func abandon() {
        tearDown()
    }

    /// Hands a responder's response back to the loop that owns the connection. Any thread.
    func complete(connectionID: UInt64, sequence: UInt64, response: HTTPResponse) {
        let wake = inbox.withLock { inbox in
            guard !inbox.closed else { return false }
            inbox.completions.append(Completion(connectionID: connectionID, sequence: sequence, response: response))
            // One wake-up per batch: the loop drains the eventfd before it takes the batch.
            return inbox.completions.count == 1
        }
        // Signalled after unlocking: a syscall under the lock made every other completing thread (and the
        // loop) spin on it. Safe even if the loop tears down in between: the eventfd is closed only in
        // deinit, and this call holds a reference to the loop.
        if wake { _ = cepoll_eventfd_signal(wakeFD) }
    }

    /// Asks the loop to stop accepting, finish in-flight requests and exit. Any thread; idempotent.
    func requestShutdown() {
        inbox.withLock { inbox in
            guard !inbox.closed, !inbox.shutdownRequested else { return }
            inbox.shutdownRequested = true
            _ = cepoll_eventfd_signal(wakeFD)
        }
    }

    // MARK: - The loop

    private func run() {
        cepoll_set_thread_name("http-loop-\(index)")
        var events = [cepoll_event](repeating: cepoll_event(), count: Int(Self.maxEvents))
        while true {
            let timeout = waitTimeout()
            let count = events.withUnsafeMutableBufferPointer { cepoll_wait(epollFD, $0.baseAddress, Self.maxEvents, timeout) }
            now = monotonicNanoseconds()
            if count < 0 {
                let code = errno
                if code == EINTR { continue }
                logger.critical("http event loop wait failed", metadata: ["error.errno": "\(code)"])
                forceCloseAll()
                break
            }
            var listenerReady = false
            for event in events[0..<Int(count)] {
                switch event.data {
                case Self.listenerToken: listenerReady = true
                case Self.wakeToken:
                    cepoll_eventfd_drain(wakeFD)
                    processInbox()
                default: handle(event)
                }
            }
            // Accepting last: requests that arrived on connections accepted in the previous turn are read
            // (and so are no longer evictable) before new connections may evict anything.
            if listenerReady { acceptConnections() }
            if now >= acceptResumeAt { resumeAccepting() }
            if now >= nextSweep { sweep() }
            if shuttingDown {
                if now >= graceDeadline { forceCloseAll() }
                if connections.isEmpty { break }
            }
        }
        tearDown()
    }

    private func waitTimeout() -> Int32 {
        let next = min(nextSweep, acceptResumeAt, graceDeadline)
        guard next != .max else { return -1 }
        let current = monotonicNanoseconds()
        guard next > current else { return 0 }
        // Round up so the loop does not wake a moment early and spin.
        let milliseconds = (next - current + 999_999) / 1_000_000
        return Int32(clamping: milliseconds)
    }

    private func tearDown() {
        inbox.withLock { inbox in
            inbox.closed = true
            inbox.completions.removeAll()
        }
        for connection in Array(connections.values) { closeConnection(connection) }
        releaseListener()
        // wakeFD stays open until deinit: a responder finishing late may still signal it.
        close(epollFD)
        readBuffer.deallocate()
        context.loopExited()
    }

    // MARK: - Accepting

    private func acceptConnections() {
        guard !shuttingDown, holdsListener else { return }
        for _ in 0..<64 {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { cepoll_accept(listener.fd, $0, &length) }
            }
            if fd < 0 {
                let code = errno
                switch code {
                case EAGAIN, EWOULDBLOCK:
                    return
                case EINTR, ECONNABORTED, EPROTO:
                    continue
                case EINVAL where listener.isStopped:
                    // Another loop began shutting down and stopped the shared socket listening.
                    releaseListener()
                    return
                default:
                    // EMFILE and friends: the level-triggered listener would fire again at once, so back
                    // off briefly instead of spinning.
                    logger.warning("http accept failed", metadata: ["error.errno": "\(code)"])
                    pauseAccepting()
                    return
                }
            }
            _ = setOption(fd, CEPOLL_IPPROTO_TCP, CEPOLL_TCP_NODELAY, 1)
            let remote = SocketText.host(of: storage)
            let open = context.statistics.openConnectionsCounter.add(1, ordering: .relaxed).newValue
            if case .makeRoom(let peer, let count) = admission.decide(peer: remote, openConnections: open), evict(count, of: peer) == 0 {
                context.statistics.openConnectionsCounter.subtract(1, ordering: .relaxed)
                let refusal =
                    peer == nil
                    ? HTTPRefusal(
                        reason: .atCapacity, status: .serviceUnavailable, message: "too many open connections", remoteAddress: remote,
                        retryAfterSeconds: Self.retryAfterSeconds)
                    : HTTPRefusal(
                        reason: .peerLimit, status: .serviceUnavailable, message: "too many open connections from this address",
                        remoteAddress: remote, retryAfterSeconds: Self.retryAfterSeconds)
                refuse(fd: fd, refusal)
                continue
            }
            guard let connection = register(fd: fd, remoteAddress: remote, counted: true) else {
                context.statistics.openConnectionsCounter.subtract(1, ordering: .relaxed)
                continue
            }
            admission.opened(peer: remote)
            context.load.add(1, loop: index)
            execute(connection.machine.accepted(now: now), on: connection)
            if isOverShare(slack: Self.balanceSlack) {
                pauseAccepting(for: Self.balanceRecheck)
                return
            }
        }
    }

    /// Closes up to `count` of this loop's evictable connections (only `peer`'s, when given), those quiet
    /// the longest first; returns how many went.
    private func evict(_ count: Int, of peer: String?) -> Int {
        var candidates: [EvictionPolicy.Candidate] = []
        for connection in connections.values where connection.counted && connection.machine.isEvictable {
            if let peer, connection.remoteAddress != peer { continue }
            candidates.append(
                EvictionPolicy.Candidate(
                    id: connection.id, quietSince: connection.machine.quietSince, bytesReceived: connection.machine.bytesSinceQuiet,
                    lingering: connection.machine.isLingering))
        }
        let victims = EvictionPolicy.victims(candidates, count: count, now: now)
        for id in victims {
            guard let connection = connections[id] else { continue }
            execute(connection.machine.evict(now: now), on: connection)
        }
        return victims.count
    }

    private func isOverShare(slack: Int) -> Bool {
        context.load.isOverShare(loop: index, total: context.statistics.openConnections, slack: slack)
    }

    private func register(fd: Int32, remoteAddress: String, counted: Bool) -> Connection? {
        let id = nextConnectionID
        nextConnectionID += 1
        guard cepoll_ctl(epollFD, CEPOLL_CTL_ADD, fd, Self.readableEvents, id) == 0 else {
            logger.warning("http connection registration failed", metadata: ["error.errno": "\(errno)"])
            close(fd)
            return nil
        }
        let connection = Connection(
            id: id, fd: fd, remoteAddress: remoteAddress, counted: counted, interest: Self.readableEvents,
            machine: ConnectionStateMachine(configuration: machineConfiguration, remoteAddress: remoteAddress, gate: gate, now: now))
        connections[id] = connection
        return connection
    }

    /// Answers a connection that cannot be admitted with `refusal`, outside the count, and closes it.
    private func refuse(fd: Int32, _ refusal: HTTPRefusal) {
        guard rejectingConnections < context.limits.maxRefusingConnections else {
            close(fd)
            var unanswered = refusal
            unanswered.reason = .atCapacityUnanswered
            unanswered.status = nil
            unanswered.message = "too many open connections, and too many being refused"
            context.report(unanswered, response: nil)
            return
        }
        guard let connection = register(fd: fd, remoteAddress: refusal.remoteAddress, counted: false) else { return }
        rejectingConnections += 1
        execute(connection.machine.refuse(refusal, now: now), on: connection)
    }

    /// Stops watching the listening socket for `pause`; the other loops keep accepting.
    private func pauseAccepting(for pause: UInt64 = acceptPause) {
        if listenerRegistered {
            _ = cepoll_ctl(epollFD, CEPOLL_CTL_DEL, listener.fd, 0, Self.listenerToken)
            listenerRegistered = false
        }
        acceptResumeAt = now + pause
    }

    private func resumeAccepting() {
        acceptResumeAt = .max
        guard !shuttingDown, holdsListener, !listenerRegistered else { return }
        // Back once this loop is at or under an even share; the others accept meanwhile (and not every
        // loop can be over an even share at once, so one always accepts).
        if isOverShare(slack: 0) {
            acceptResumeAt = now + Self.balanceRecheck
            return
        }
        listenerRegistered = cepoll_ctl(epollFD, CEPOLL_CTL_ADD, listener.fd, Self.listenerEvents, Self.listenerToken) == 0
        if !listenerRegistered { pauseAccepting() }
    }

    /// Lets go of the shared listening socket for good (shutdown, teardown).
    private func releaseListener() {
        acceptResumeAt = .max
        guard holdsListener else { return }
        if listenerRegistered {
            _ = cepoll_ctl(epollFD, CEPOLL_CTL_DEL, listener.fd, 0, Self.listenerToken)
            listenerRegistered = false
        }
        holdsListener = false
        listener.release()
    }

    // MARK: - Socket events

    private func handle(_ event: cepoll_event) {
        guard let connection = connections[event.data] else { return }
        // ERR or HUP: reset, or closed in both directions; nothing written now can reach the peer.
        if event.events & (CEPOLL_ERR | CEPOLL_HUP) != 0 {
            execute(connection.machine.ioFailed(), on: connection)
            return
        }
        if event.events & Self.readableEvents != 0 {
            readAvailable(connection)
        }
        if connection.isOpen, event.events & CEPOLL_OUT != 0, connection.hasOutput {
            execute(send(connection), on: connection)
        }
    }

    private func readAvailable(_ connection: Connection) {
        // A few reads per wake-up, then let other connections run; level-triggered epoll reports the rest.
        for _ in 0..<4 {
            guard connection.isOpen, connection.machine.wantsInput else { return }
            let count = read(connection.fd, readBuffer.baseAddress, readBuffer.count)
            if count > 0 {
                execute(connection.machine.received(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]), now: now), on: connection)
                if count < readBuffer.count { return }
                continue
            }
            if count == 0 {
                execute(connection.machine.inputEnded(now: now), on: connection)
                return
            }
            switch errno {
            case EAGAIN, EWOULDBLOCK: return
            case EINTR: continue
            default:
                execute(connection.machine.ioFailed(), on: connection)
                return
            }
        }
    }

    // MARK: - Performing the state machine's actions

    private func execute(_ actions: [ConnectionStateMachine.Action], on connection: Connection) {
        // Requests the queue refused (shutdown began meanwhile) are answered once this list is done: a
        // response fed to the machine now would overtake actions it has already decided.
        var unqueued: [UInt64] = []
        for action in actions {
            guard connection.isOpen else { return }
            switch action {
            case .setInterest(let interest):
                setInterest(connection, Self.events(for: interest))
            case .armDeadline(let deadline):
                scheduleSweep(at: deadline)
            case .cancelDeadline:
                break
            case .dispatch(let request, let sequence, let bodyBytes):
                var job = RequestJob(request: request, loop: self, connectionID: connection.id, sequence: sequence, bodyBytes: bodyBytes)
                if !context.queue.enqueue(job) {
                    context.bodyBudget.release(&job.bodyBytes)
                    unqueued.append(sequence)
                }
            case .write(let output):
                write(output, to: connection)
            case .flush:
                execute(send(connection), on: connection)
            case .halfClose:
                _ = shutdown(connection.fd, Int32(SHUT_WR))
            case .close:
                if connection.hasOutput {
                    // An eviction's 503: one try, no waiting for a peer that was too slow already.
                    _ = connection.output.withUnsafeBytes { buffer in
                        cepoll_send(connection.fd, buffer.baseAddress! + connection.outputOffset, UInt(connection.output.count - connection.outputOffset))
                    }
                }
                closeConnection(connection)
            }
        }
        for sequence in unqueued where connection.isOpen {
            let refusal = HTTPRefusal(
                reason: .shuttingDown, status: .serviceUnavailable, message: "server is shutting down", remoteAddress: connection.remoteAddress)
            let response = errorResponse(for: refusal)
            context.report(refusal, response: response)
            execute(connection.machine.responseReady(sequence: sequence, response: response, now: now), on: connection)
        }
    }

    private static func events(for interest: ConnectionStateMachine.Interest) -> UInt32 {
        switch interest {
        case .none: 0
        case .read: readableEvents
        case .write: CEPOLL_OUT
        }
    }

    /// Appends one response to the connection's output buffer, encoded now that it is known whether more
    /// requests will follow on this connection.
    private func write(_ output: ConnectionStateMachine.Output, to connection: Connection) {
        if !connection.hasOutput {
            connection.output = []
            connection.outputOffset = 0
        }
        switch output {
        case .interimContinue:
            connection.output.append(contentsOf: HTTPResponseEncoder.continueResponse)
        case .response(let response, let keepAlive, let isHead):
            HTTPResponseEncoder.encode(response, keepAlive: keepAlive, isHead: isHead, date: dateCache.current(), into: &connection.output)
        case .error(let refusal, let chosen):
            let response = chosen ?? errorResponse(for: refusal)
            context.report(refusal, response: response)
            HTTPResponseEncoder.encode(response, keepAlive: false, isHead: false, date: dateCache.current(), into: &connection.output)
        }
    }

    /// The application's response for `refusal`, with the listener's `Retry-After`.
    private func errorResponse(for refusal: HTTPRefusal) -> HTTPResponse {
        var response = context.hooks.errorResponse(refusal)
        if let seconds = refusal.retryAfterSeconds {
            response.headers.replaceOrAdd(name: "Retry-After", value: String(seconds))
        }
        return response
    }

    /// Sends what the socket takes of the output buffer; the machine hears how it went.
    private func send(_ connection: Connection) -> [ConnectionStateMachine.Action] {
        var progressed = false
        while connection.hasOutput {
            let remaining = connection.output.count - connection.outputOffset
            let sent = connection.output.withUnsafeBytes { buffer in
                cepoll_send(connection.fd, buffer.baseAddress! + connection.outputOffset, UInt(remaining))
            }
            if sent > 0 {
                connection.outputOffset += sent
                progressed = true
                continue
            }
            let code = errno
            if sent < 0, code == EINTR { continue }
            if sent < 0, code == EAGAIN || code == EWOULDBLOCK { break }
            return connection.machine.ioFailed()
        }
        if !connection.hasOutput {
            connection.output = []
            connection.outputOffset = 0
        }
        return connection.machine.outputSent(remaining: connection.hasOutput, progressed: progressed, now: now)
    }

    private func setInterest(_ connection: Connection, _ interest: UInt32) {
        guard interest != connection.interest else { return }
        if cepoll_ctl(epollFD, CEPOLL_CTL_MOD, connection.fd, interest, connection.id) == 0 {
            connection.interest = interest
        } else {
            execute(connection.machine.ioFailed(), on: connection)
        }
    }

    // MARK: - Responses

    private func processInbox() {
        // Swapped out, not copied and cleared: clearing a shared buffer would allocate under the lock.
        var completions: [Completion] = []
        let shutdownRequested = inbox.withLock { inbox in
            swap(&completions, &inbox.completions)
            return inbox.shutdownRequested
        }
        if shutdownRequested, !shuttingDown { beginShutdown() }
        for completion in completions {
            guard let connection = connections[completion.connectionID], connection.isOpen else { continue }
            execute(
                connection.machine.responseReady(sequence: completion.sequence, response: completion.response, now: now), on: connection)
        }
    }

    // MARK: - Deadlines

    private func scheduleSweep(at deadline: UInt64) {
        nextSweep = min(nextSweep, max(deadline, lastSweep &+ Self.sweepGranularity))
    }

    private func sweep() {
        lastSweep = now
        var next = UInt64.max
        var expired: [Connection] = []
        for connection in connections.values {
            guard let deadline = connection.machine.deadline else { continue }
            if deadline <= now {
                expired.append(connection)
            } else {
                next = min(next, deadline)
            }
        }
        nextSweep = next == .max ? .max : max(next, now &+ Self.sweepGranularity)
        for connection in expired where connection.isOpen {
            execute(connection.machine.deadlineReached(now: now), on: connection)
        }
    }

    private func closeConnection(_ connection: Connection) {
        guard connection.isOpen else { return }
        connection.isOpen = false
        // Closing the only descriptor also removes it from the epoll set.
        close(connection.fd)
        connections[connection.id] = nil
        if connection.counted {
            context.statistics.openConnectionsCounter.subtract(1, ordering: .relaxed)
            context.load.add(-1, loop: index)
            admission.closed(peer: connection.remoteAddress)
        } else {
            rejectingConnections -= 1
        }
    }

    // MARK: - Shutdown

    private func beginShutdown() {
        shuttingDown = true
        graceDeadline = now + UInt64(clamping: context.shutdownGracePeriod.inNanoseconds)
        // Refuses new connections at once for every loop, including those yet to see the request.
        listener.stopListening()
        releaseListener()
        for connection in Array(connections.values) where connection.isOpen {
            execute(connection.machine.shutdown(now: now, graceDeadline: graceDeadline), on: connection)
        }
    }

    private func forceCloseAll() {
        let abandoned = connections.values.reduce(0) { $0 + $1.machine.inFlight }
        if abandoned > 0 {
            context.gracePeriodExpired.store(true, ordering: .relaxed)
            logger.warning("http shutdown grace period expired", metadata: ["http.abandoned_requests": "\(abandoned)"])
        }
        for connection in Array(connections.values) { closeConnection(connection) }
    }
}
