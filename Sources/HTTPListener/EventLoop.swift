import CEpoll
import HTTPWire
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One connection, owned by the loop thread that accepted it.
private final class Connection {
    enum DeadlineKind {
        case none
        /// A request has started but is incomplete: 408 when it passes.
        case read
        /// Nothing pending: close silently when it passes.
        case idle
        /// Closing: waiting for the peer's FIN after our last response.
        case linger
        /// A response is partly written and the peer is not reading: close when no progress by then.
        case write
    }

    /// One response position, in request order. Pipelined responses may complete out of order; they are
    /// written strictly in slot order.
    struct Slot {
        enum Payload {
            case pending
            case response(HTTPResponse)
            /// Pre-encoded bytes: 100 Continue and listener-made errors.
            case encoded([UInt8])
        }

        /// The request's sequence number; `.max` for slots that answer no dispatched request.
        var sequence: UInt64
        var isHead = false
        var keepAlive = true
        var countsInFlight = true
        var closesConnection = false
        var payload = Payload.pending

        var isReady: Bool {
            if case .pending = payload { return false }
            return true
        }
    }

    let id: UInt64
    let fd: Int32
    let remoteAddress: String
    /// Counted against `maxConnections`; connections accepted only to be refused with 503 are not.
    let counted: Bool
    var parser: HTTPRequestParser
    var slots: [Slot] = []
    var output: [UInt8] = []
    var outputOffset = 0
    var nextSequence: UInt64 = 0
    var inFlight = 0
    var interest: UInt32 = 0
    var readEOF = false
    /// No more requests will be read: after a rejection, a `Connection: close` request or shutdown.
    var stopReading = false
    /// Parsing stopped at `maxPipelinedRequests` with bytes still buffered in the parser.
    var parsePaused = false
    var closeAfterOutput = false
    var lingering = false
    var lingerBytes = 0
    var deadline = UInt64.max
    var deadlineKind = DeadlineKind.none
    /// The last send made progress: the write-stall deadline starts again.
    var wroteSinceDeadline = false
    var isOpen = true
    /// Bytes of the body being received that are reserved in the server's body budget; handed to the
    /// request when it is dispatched, given back when the connection stops reading.
    var bodyReservation = 0

    var hasOutput: Bool { outputOffset < output.count }

    init(id: UInt64, fd: Int32, remoteAddress: String, counted: Bool, limits: HTTPParserLimits) {
        self.id = id
        self.fd = fd
        self.remoteAddress = remoteAddress
        self.counted = counted
        parser = HTTPRequestParser(limits: limits)
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
    private static let lingerTimeout: UInt64 = 2_000_000_000
    private static let maxLingerBytes = 256 * 1024
    private static let acceptPause: UInt64 = 100_000_000
    /// A loop holding this many connections above an even share stops accepting (see ``LoopLoad``)...
    private static let balanceSlack = 2
    /// ...and looks again this often whether it is back to its share.
    private static let balanceRecheck: UInt64 = 5_000_000
    /// `Retry-After` for refusals that only mean "not now": at capacity, over the body budget.
    private static let retryAfterSeconds = 1
    private static let readBufferSize = 64 * 1024
    private static let maxEvents: Int32 = 256

    let index: Int
    private let inbox = Mutex(Inbox())
    private let context: ServerContext
    private let logger: Logger
    private let epollFD: Int32
    private let wakeFD: Int32
    private let headerReadTimeout: UInt64
    private let idleTimeout: UInt64
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
        headerReadTimeout = context.limits.headerReadTimeout.nanoseconds
        idleTimeout = context.limits.idleTimeout.nanoseconds

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
            for event in events[0..<Int(count)] {
                switch event.data {
                case Self.listenerToken: acceptConnections()
                case Self.wakeToken:
                    cepoll_eventfd_drain(wakeFD)
                    processInbox()
                default: handle(event)
                }
            }
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
            if context.statistics.openConnectionsCounter.add(1, ordering: .relaxed).newValue > context.limits.maxConnections {
                context.statistics.openConnectionsCounter.subtract(1, ordering: .relaxed)
                refuseOverCapacity(fd: fd, remoteAddress: remote)
                continue
            }
            guard let connection = register(fd: fd, remoteAddress: remote, counted: true) else {
                context.statistics.openConnectionsCounter.subtract(1, ordering: .relaxed)
                continue
            }
            context.load.add(1, loop: index)
            refreshDeadline(connection)
            if isOverShare(slack: Self.balanceSlack) {
                pauseAccepting(for: Self.balanceRecheck)
                return
            }
        }
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
        let connection = Connection(id: id, fd: fd, remoteAddress: remoteAddress, counted: counted, limits: context.limits.parser)
        connection.interest = Self.readableEvents
        connections[id] = connection
        return connection
    }

    private func refuseOverCapacity(fd: Int32, remoteAddress: String) {
        guard rejectingConnections < context.limits.maxRefusingConnections else {
            close(fd)
            context.report(
                HTTPRefusal(
                    reason: .atCapacityUnanswered, status: nil, message: "too many open connections, and too many being refused",
                    remoteAddress: remoteAddress),
                response: nil)
            return
        }
        guard let connection = register(fd: fd, remoteAddress: remoteAddress, counted: false) else { return }
        rejectingConnections += 1
        refuse(
            connection,
            HTTPRefusal(
                reason: .atCapacity, status: .serviceUnavailable, message: "too many open connections", remoteAddress: remoteAddress,
                retryAfterSeconds: Self.retryAfterSeconds))
        flush(connection)
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

    // MARK: - Reading and parsing

    private func handle(_ event: cepoll_event) {
        guard let connection = connections[event.data] else { return }
        // ERR or HUP: reset, or closed in both directions; nothing written now can reach the peer.
        if event.events & (CEPOLL_ERR | CEPOLL_HUP) != 0 {
            closeConnection(connection)
            return
        }
        if event.events & Self.readableEvents != 0 {
            if connection.lingering {
                discardLingering(connection)
            } else {
                readAvailable(connection)
            }
        }
        if connection.isOpen, event.events & CEPOLL_OUT != 0 {
            flush(connection)
        }
    }

    /// Whether this connection may still carry requests after the ones already received.
    private func acceptsMoreRequests(_ connection: Connection) -> Bool {
        connection.isOpen && !connection.readEOF && !connection.stopReading && !connection.closeAfterOutput
            && !connection.lingering && !shuttingDown
    }

    /// Whether to read now. Not while `maxPipelinedRequests` are in flight, and not while a response is
    /// stuck in the output buffer: a client that sends without reading must not grow server memory.
    private func canRead(_ connection: Connection) -> Bool {
        acceptsMoreRequests(connection) && connection.inFlight < context.limits.maxPipelinedRequests && !connection.hasOutput
    }

    private func readAvailable(_ connection: Connection) {
        // A few reads per wake-up, then let other connections run; level-triggered epoll reports the rest.
        for _ in 0..<4 {
            guard canRead(connection) else {
                if connection.isOpen { update(connection) }
                return
            }
            let count = read(connection.fd, readBuffer.baseAddress, readBuffer.count)
            if count > 0 {
                processInput(connection, UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]))
                if count < readBuffer.count { return }
                continue
            }
            if count == 0 {
                connection.readEOF = true
                update(connection)
                return
            }
            switch errno {
            case EAGAIN, EWOULDBLOCK: return
            case EINTR: continue
            default:
                closeConnection(connection)
                return
            }
        }
    }

    /// Runs the parser over new bytes (or, with `nil`, over what it already buffered) and acts on each action.
    private func processInput(_ connection: Connection, _ bytes: UnsafeRawBufferPointer?) {
        var action = bytes.map { connection.parser.feed($0) } ?? connection.parser.next()
        parsing: while true {
            switch action {
            case .needMoreData:
                // A chunked body grows as its chunks are announced.
                _ = reserveBody(connection, connection.parser.announcedBodyBytes)
                break parsing
            case .head(var head):
                head.remoteAddress = connection.remoteAddress
                if case .refuse(let response) = context.hooks.admission(head) {
                    refuse(
                        connection,
                        HTTPRefusal(
                            reason: .admission, status: response.status, message: "the request's head was not admitted",
                            remoteAddress: connection.remoteAddress),
                        response: response)
                    break parsing
                }
                guard reserveBody(connection, connection.parser.announcedBodyBytes) else { break parsing }
                action = connection.parser.next()
            case .sendContinue:
                connection.slots.append(
                    Connection.Slot(sequence: .max, countsInFlight: false, payload: .encoded(HTTPResponseEncoder.continueResponse)))
                action = connection.parser.next()
            case .request(var request):
                guard reserveBody(connection, request.body.count) else { break parsing }
                request.remoteAddress = connection.remoteAddress
                let keepAlive = request.keepAlive
                let sequence = connection.nextSequence
                connection.nextSequence += 1
                connection.slots.append(Connection.Slot(sequence: sequence, isHead: request.method == .head, keepAlive: keepAlive))
                connection.inFlight += 1
                // The next request, if any, starts its own read clock.
                connection.deadlineKind = .none
                connection.deadline = .max
                if !keepAlive { connection.stopReading = true }
                var job = RequestJob(
                    request: request, loop: self, connectionID: connection.id, sequence: sequence, bodyBytes: connection.bodyReservation)
                connection.bodyReservation = 0
                if !context.queue.enqueue(job) {
                    context.bodyBudget.release(&job.bodyBytes)
                    let refusal = HTTPRefusal(
                        reason: .shuttingDown, status: .serviceUnavailable, message: "server is shutting down",
                        remoteAddress: connection.remoteAddress)
                    let response = errorResponse(for: refusal)
                    connection.slots[connection.slots.count - 1].payload = .response(response)
                    context.report(refusal, response: response)
                }
                guard keepAlive else { break parsing }
                guard connection.inFlight < context.limits.maxPipelinedRequests else {
                    connection.parsePaused = true
                    break parsing
                }
                action = connection.parser.next()
            case .reject(let status, let reason):
                refuse(
                    connection,
                    HTTPRefusal(reason: HTTPRefusal.Reason(parserRejection: status), status: status, message: reason, remoteAddress: connection.remoteAddress))
                break parsing
            }
        }
        flush(connection)
    }

    /// Grows the connection's share of the body budget to `bytes`; when the budget cannot give it, refuses
    /// the request with 503 (the body is not read on) and returns false.
    private func reserveBody(_ connection: Connection, _ bytes: Int) -> Bool {
        if context.bodyBudget.grow(&connection.bodyReservation, to: bytes) { return true }
        refuse(
            connection,
            HTTPRefusal(
                reason: .bodyBudget, status: .serviceUnavailable, message: "too many request bodies in flight; retry later",
                remoteAddress: connection.remoteAddress, retryAfterSeconds: Self.retryAfterSeconds))
        return false
    }

    /// The application's response for `refusal`, with the listener's `Retry-After`.
    private func errorResponse(for refusal: HTTPRefusal) -> HTTPResponse {
        var response = context.hooks.errorResponse(refusal)
        if let seconds = refusal.retryAfterSeconds {
            response.headers.replaceOrAdd(name: "Retry-After", value: String(seconds))
        }
        return response
    }

    /// Answers `refusal` (with `response`, or the application's error response for it) after the
    /// responses already due on this connection, reads nothing more, and closes once it is written.
    private func refuse(_ connection: Connection, _ refusal: HTTPRefusal, response: HTTPResponse? = nil) {
        let response = response ?? errorResponse(for: refusal)
        let bytes = HTTPResponseEncoder.encode(response, keepAlive: false, isHead: false, date: dateCache.current())
        connection.slots.append(
            Connection.Slot(sequence: .max, keepAlive: false, countsInFlight: false, closesConnection: true, payload: .encoded(bytes)))
        connection.stopReading = true
        // Nothing more of a body is read; what the parser held goes with it.
        context.bodyBudget.release(&connection.bodyReservation)
        context.report(refusal, response: response)
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
        var touched: [Connection] = []
        for completion in completions {
            guard let connection = connections[completion.connectionID], connection.isOpen,
                let index = connection.slots.firstIndex(where: { $0.sequence == completion.sequence && !$0.isReady })
            else { continue }
            connection.slots[index].payload = .response(completion.response)
            if index == 0 { touched.append(connection) }
        }
        for connection in touched where connection.isOpen { flush(connection) }
    }

    /// Moves every ready response at the head of the slot queue into the output buffer (encoding it now,
    /// when it is known whether more requests will follow on this connection), then sends.
    private func flush(_ connection: Connection) {
        while connection.isOpen, let first = connection.slots.first, first.isReady {
            connection.slots.removeFirst()
            if first.countsInFlight { connection.inFlight -= 1 }
            var bytes: [UInt8]
            var closes = first.closesConnection
            switch first.payload {
            case .pending:
                preconditionFailure("flushing a pending slot")
            case .encoded(let encoded):
                bytes = encoded
            case .response(let response):
                // `Connection: close` goes on the last response this connection will ever carry: when the
                // client asked for it, or when nothing more will be read (shutdown, peer half-closed).
                let moreWillFollow = !connection.slots.isEmpty || acceptsMoreRequests(connection)
                let keepAlive = first.keepAlive && moreWillFollow
                closes = !keepAlive
                bytes = []
                HTTPResponseEncoder.encode(response, keepAlive: keepAlive, isHead: first.isHead, date: dateCache.current(), into: &bytes)
            }
            if connection.hasOutput {
                connection.output.append(contentsOf: bytes)
            } else {
                connection.output = bytes
                connection.outputOffset = 0
            }
            if closes {
                connection.closeAfterOutput = true
                connection.stopReading = true
                connection.slots.removeAll()
                connection.inFlight = 0
                break
            }
        }
        while connection.isOpen, connection.hasOutput {
            let remaining = connection.output.count - connection.outputOffset
            let sent = connection.output.withUnsafeBytes { buffer in
                cepoll_send(connection.fd, buffer.baseAddress! + connection.outputOffset, UInt(remaining))
            }
            if sent > 0 {
                connection.outputOffset += sent
                connection.wroteSinceDeadline = true
                continue
            }
            let code = errno
            if sent < 0, code == EINTR { continue }
            if sent < 0, code == EAGAIN || code == EWOULDBLOCK { break }
            closeConnection(connection)
            return
        }
        if !connection.hasOutput {
            connection.output = []
            connection.outputOffset = 0
        }
        update(connection)
    }

    // MARK: - Connection state

    /// Re-derives what the connection waits for: closes it, resumes parsing, or sets epoll interest and deadline.
    private func update(_ connection: Connection) {
        guard connection.isOpen, !connection.lingering else { return }
        if !connection.hasOutput, connection.slots.isEmpty {
            if connection.closeAfterOutput {
                beginLinger(connection)
                return
            }
            if connection.readEOF || shuttingDown {
                closeConnection(connection)
                return
            }
        }
        if connection.parsePaused, canRead(connection) {
            connection.parsePaused = false
            processInput(connection, nil)
            return
        }
        var interest: UInt32 = 0
        if canRead(connection) { interest |= Self.readableEvents }
        if connection.hasOutput { interest |= CEPOLL_OUT }
        setInterest(connection, interest)
        refreshDeadline(connection)
    }

    private func setInterest(_ connection: Connection, _ interest: UInt32) {
        guard interest != connection.interest else { return }
        if cepoll_ctl(epollFD, CEPOLL_CTL_MOD, connection.fd, interest, connection.id) == 0 {
            connection.interest = interest
        } else {
            closeConnection(connection)
        }
    }

    private func refreshDeadline(_ connection: Connection) {
        guard connection.isOpen, !connection.lingering else { return }
        let partial = connection.parser.hasPartialRequest
        if partial, canRead(connection) {
            if connection.deadlineKind != .read { setDeadline(connection, .read, now + headerReadTimeout) }
        } else if !partial, connection.slots.isEmpty, !connection.hasOutput, !connection.closeAfterOutput {
            if connection.deadlineKind != .idle { setDeadline(connection, .idle, now + idleTimeout) }
        } else if connection.hasOutput {
            // A peer that stops reading gets the idle timeout to make progress again.
            if connection.deadlineKind != .write || connection.wroteSinceDeadline {
                connection.wroteSinceDeadline = false
                setDeadline(connection, .write, now + idleTimeout)
            }
        } else {
            connection.deadlineKind = .none
            connection.deadline = .max
        }
    }

    private func setDeadline(_ connection: Connection, _ kind: Connection.DeadlineKind, _ deadline: UInt64) {
        connection.deadlineKind = kind
        connection.deadline = deadline
        nextSweep = min(nextSweep, deadline)
    }

    private func sweep() {
        nextSweep = .max
        var expired: [Connection] = []
        for connection in connections.values {
            if connection.deadline <= now {
                expired.append(connection)
            } else {
                nextSweep = min(nextSweep, connection.deadline)
            }
        }
        for connection in expired where connection.isOpen {
            let kind = connection.deadlineKind
            connection.deadlineKind = .none
            connection.deadline = .max
            switch kind {
            case .read:
                refuse(
                    connection,
                    HTTPRefusal(
                        reason: .requestTimeout, status: .requestTimeout, message: "request not received in time",
                        remoteAddress: connection.remoteAddress))
                flush(connection)
            case .idle, .linger, .write:
                closeConnection(connection)
            case .none:
                break
            }
        }
    }

    /// Half-closes after the last response and waits briefly for the peer's FIN, discarding what it still
    /// sends: closing with unread input would make the kernel send RST, which can destroy the response
    /// (for example a 413 answered while the client is still uploading) before the client reads it.
    private func beginLinger(_ connection: Connection) {
        _ = shutdown(connection.fd, Int32(SHUT_WR))
        guard !connection.readEOF else {
            closeConnection(connection)
            return
        }
        connection.lingering = true
        setInterest(connection, Self.readableEvents)
        setDeadline(connection, .linger, min(now + Self.lingerTimeout, graceDeadline))
    }

    private func discardLingering(_ connection: Connection) {
        while true {
            let count = read(connection.fd, readBuffer.baseAddress, readBuffer.count)
            if count > 0 {
                connection.lingerBytes += count
                if connection.lingerBytes > Self.maxLingerBytes {
                    closeConnection(connection)
                    return
                }
                continue
            }
            if count < 0, errno == EINTR { continue }
            if count < 0, errno == EAGAIN || errno == EWOULDBLOCK { return }
            closeConnection(connection)
            return
        }
    }

    private func closeConnection(_ connection: Connection) {
        guard connection.isOpen else { return }
        connection.isOpen = false
        // Closing the only descriptor also removes it from the epoll set.
        close(connection.fd)
        connections[connection.id] = nil
        context.bodyBudget.release(&connection.bodyReservation)
        if connection.counted {
            context.statistics.openConnectionsCounter.subtract(1, ordering: .relaxed)
            context.load.add(-1, loop: index)
        } else {
            rejectingConnections -= 1
        }
    }

    // MARK: - Shutdown

    private func beginShutdown() {
        shuttingDown = true
        graceDeadline = now + context.shutdownGracePeriod.nanoseconds
        // Refuses new connections at once for every loop, including those yet to see the request.
        listener.stopListening()
        releaseListener()
        for connection in Array(connections.values) where connection.isOpen {
            connection.stopReading = true
            if connection.lingering {
                connection.deadline = min(connection.deadline, graceDeadline)
                nextSweep = min(nextSweep, connection.deadline)
            } else {
                update(connection)
            }
        }
    }

    private func forceCloseAll() {
        let abandoned = connections.values.reduce(0) { $0 + $1.inFlight }
        if abandoned > 0 {
            context.gracePeriodExpired.store(true, ordering: .relaxed)
            logger.warning("http shutdown grace period expired", metadata: ["http.abandoned_requests": "\(abandoned)"])
        }
        for connection in Array(connections.values) { closeConnection(connection) }
    }
}
