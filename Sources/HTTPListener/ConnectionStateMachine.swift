import HTTPWire
import TimeUnits

/// The lifecycle of one client connection: what it waits for, when it times out, and what the event loop
/// must do next. Pure: no sockets and no clock of its own (every event carries `now`, monotonic
/// nanoseconds), so every path is unit-tested without I/O.
///
/// The event loop feeds it events (bytes received, end of input, a response ready, output sent, a deadline
/// reached, shutdown, eviction, an I/O failure) and performs the returned actions in order. An action list
/// holds at most one ``Action/flush`` and it comes last: the loop sends its output buffer and reports the
/// result with ``outputSent(remaining:progressed:now:)``, whose actions continue the story.
///
/// The read side and the write side meet in ``State``: a connection reads only while nothing it answered is
/// stuck in its output buffer and fewer than `maxPipelinedRequests` requests are in flight, so a client that
/// sends without reading cannot grow server memory.
struct ConnectionStateMachine: Sendable {
    /// Limits and timeouts, in nanoseconds.
    struct Configuration: Sendable, Hashable {
        var parser: HTTPParserLimits
        var maxPipelinedRequests: Int
        var requestReadTimeout: UInt64
        var idleTimeout: UInt64
        /// How long a half-closed connection waits for the peer's FIN after the last response.
        var lingerTimeout: UInt64
        /// Bytes a lingering connection may still discard before it is closed outright.
        var maxLingerBytes: Int

        init(limits: ListenerLimits, lingerTimeout: UInt64 = 2_000_000_000, maxLingerBytes: Int = 256 * 1024) {
            parser = limits.parser
            maxPipelinedRequests = max(1, limits.maxPipelinedRequests)
            requestReadTimeout = UInt64(clamping: limits.requestReadTimeout.inNanoseconds)
            idleTimeout = UInt64(clamping: limits.idleTimeout.inNanoseconds)
            self.lingerTimeout = lingerTimeout
            self.maxLingerBytes = maxLingerBytes
        }
    }

    enum State: Sendable, Equatable {
        /// Reading requests; nothing written is waiting for the peer.
        case open(Reading)
        /// Not reading for now; reading resumes by itself.
        case paused(Pause)
        /// No more requests will be read (the peer half-closed, a request asked to close, a rejection, a
        /// timeout, shutdown): the responses still due are written, then the connection closes.
        case closingAfterOutput
        /// Half-closed after the last response, discarding input until the peer's FIN or `until`: closing
        /// with unread input would make the kernel send RST, which can destroy the response before the
        /// client reads it (a 413 answered while the client is still uploading).
        case lingering(until: UInt64)
        case closed
    }

    enum Reading: Sendable, Equatable {
        /// Nothing received, pending or being written: closed silently at `until`.
        case idle(until: UInt64)
        /// Part of a request has arrived: 408 at `deadline`. Absolute from the request's first byte, so
        /// trickling bytes does not extend it.
        case receiving(deadline: UInt64)
        /// Requests in flight, none partly received: no clock runs (the responder's time is not the client's).
        case awaitingResponses
    }

    enum Pause: Sendable, Equatable {
        /// `maxPipelinedRequests` in flight: nothing more is read or parsed until a response goes out.
        case pipelineFull
        /// Output is waiting for the peer to read it; the connection closes if it makes no progress for
        /// the idle timeout.
        case outputBlocked
    }

    /// Epoll interest the connection wants.
    enum Interest: Sendable, Equatable {
        case none, read, write
    }

    /// The application's and the server's say on each request, asked as the parser reports it: whether a
    /// head may proceed (``HTTPServerHooks/admission``) and whether its body fits the server's body budget
    /// (``ListenerLimits/maxInflightBodyBytes``). Closures rather than events, because both answer at once
    /// on the loop's thread; the machine still does no I/O, and tests pass their own.
    struct Gate: Sendable {
        /// The application's verdict on a head, before its body is read.
        var admit: @Sendable (HTTPRequestHead) -> HTTPAdmission
        /// Grows a reservation from `held` to `wanted` body bytes; false, changing nothing, when the budget cannot.
        var reserveBody: @Sendable (_ held: inout Int, _ wanted: Int) -> Bool
        /// Gives a whole reservation back and sets it to 0.
        var releaseBody: @Sendable (_ held: inout Int) -> Void

        /// Every head proceeds and every body fits.
        static let unlimited = Gate(
            admit: { _ in .proceed },
            reserveBody: { held, wanted in
                held = max(held, wanted)
                return true
            },
            releaseBody: { $0 = 0 })
    }

    /// What the loop writes into the connection's output buffer.
    enum Output: Sendable {
        /// `HTTP/1.1 100 Continue`.
        case interimContinue
        case response(HTTPResponse, keepAlive: Bool, isHead: Bool)
        /// The listener's own answer to a refusal (`response`, when the application already chose it; else the
        /// application's error response for it); the connection closes after it.
        case error(HTTPRefusal, response: HTTPResponse?)
    }

    enum Action: Sendable {
        case setInterest(Interest)
        /// The connection's one deadline is now this instant (replacing any earlier one).
        case armDeadline(UInt64)
        case cancelDeadline
        /// Hand the request to the responder; its response comes back as ``responseReady(sequence:response:now:)``.
        /// `bodyBytes` of the body budget go with it, to be released once it is answered.
        case dispatch(HTTPRequest, sequence: UInt64, bodyBytes: Int)
        /// Append to the output buffer (in order).
        case write(Output)
        /// Send the output buffer now and report with ``outputSent(remaining:progressed:now:)``.
        case flush
        /// `shutdown(SHUT_WR)`: the peer sees EOF after our last response.
        case halfClose
        /// Close the socket. Output still buffered (an eviction's 503) gets one non-blocking send first.
        case close
    }

    private struct Slot: Sendable {
        enum Payload: Sendable {
            case pending
            case response(HTTPResponse)
            case interimContinue
            case error(HTTPRefusal, response: HTTPResponse?)
        }

        /// The dispatched request's sequence; nil for slots that answer no dispatched request.
        var sequence: UInt64?
        var isHead = false
        var keepAlive = true
        var payload: Payload
    }

    private let configuration: Configuration
    private let remoteAddress: String
    private let gate: Gate
    private(set) var state: State
    /// The interest the loop has been told to set.
    private(set) var interest = Interest.none
    /// The deadline the loop has been told to arm.
    private(set) var deadline: UInt64?
    /// Dispatched requests not yet answered.
    private(set) var inFlight = 0
    /// Since when nothing has been in flight or written: the connection's quiet time, for eviction.
    private(set) var quietSince: UInt64
    /// Bytes received since `quietSince`.
    private(set) var bytesSinceQuiet = 0
    private var parser: HTTPRequestParser
    /// Response positions in request order; pipelined responses may complete out of order.
    private var slots: [Slot] = []
    private var nextSequence: UInt64 = 0
    /// Set while output is buffered: the connection closes if the peer has not read any of it by then.
    private var outputStall: UInt64?
    /// The peer's FIN has arrived.
    private var inputEnded = false
    private var shuttingDown = false
    private var graceDeadline = UInt64.max
    private var lingerBytes = 0
    /// Body-budget bytes reserved for the request being received; handed to it when it is dispatched.
    private(set) var bodyReservation = 0

    init(configuration: Configuration, remoteAddress: String, gate: Gate = .unlimited, now: UInt64) {
        self.configuration = configuration
        self.remoteAddress = remoteAddress
        self.gate = gate
        parser = HTTPRequestParser(limits: configuration.parser)
        state = .open(.idle(until: now &+ configuration.idleTimeout))
        quietSince = now
    }

    /// Whether the loop should read the socket (a lingering connection reads to discard).
    var wantsInput: Bool { interest == .read }

    /// Whether the connection may be closed to make room: open, with nothing in flight or being written;
    /// or lingering, its last answer written, only waiting for the peer to close.
    var isEvictable: Bool {
        guard slots.isEmpty, outputStall == nil else { return false }
        switch state {
        case .open(.idle), .open(.receiving), .lingering: return true
        default: return false
        }
    }

    /// Lingering after its last answer: nothing is owed to it, so it is the first to go when room is needed.
    var isLingering: Bool {
        if case .lingering = state { true } else { false }
    }

    // MARK: - Events

    /// The connection was accepted: start reading, with the idle clock running.
    mutating func accepted(now: UInt64) -> [Action] {
        var actions: [Action] = []
        finish(now: now, into: &actions)
        return actions
    }

    /// The connection was accepted only to be refused (over capacity): answer and close.
    mutating func refuse(_ refusal: HTTPRefusal, now: UInt64) -> [Action] {
        guard state != .closed else { return [] }
        refuse(refusal, response: nil)
        var actions: [Action] = []
        finish(now: now, into: &actions)
        return actions
    }

    /// Bytes arrived. Read only while ``wantsInput``.
    mutating func received(_ bytes: UnsafeRawBufferPointer, now: UInt64) -> [Action] {
        switch state {
        case .lingering:
            lingerBytes += bytes.count
            return lingerBytes > configuration.maxLingerBytes ? close() : []
        case .closed, .closingAfterOutput:
            return []
        case .open, .paused:
            bytesSinceQuiet += bytes.count
            var actions: [Action] = []
            parse(parser.feed(bytes), now: now, into: &actions)
            finish(now: now, into: &actions)
            return actions
        }
    }

    /// Convenience for tests and tools.
    mutating func received(_ bytes: [UInt8], now: UInt64) -> [Action] {
        bytes.withUnsafeBytes { received($0, now: now) }
    }

    /// The peer half-closed (read returned 0): no more requests; what is in flight is still answered.
    mutating func inputEnded(now: UInt64) -> [Action] {
        switch state {
        case .closed: return []
        case .lingering: return close()
        case .open, .paused, .closingAfterOutput:
            inputEnded = true
            var actions: [Action] = []
            finish(now: now, into: &actions)
            return actions
        }
    }

    /// The responder answered the request numbered `sequence`. Late answers for a closed connection are dropped.
    mutating func responseReady(sequence: UInt64, response: HTTPResponse, now: UInt64) -> [Action] {
        guard state != .closed,
            let index = slots.firstIndex(where: {
                guard $0.sequence == sequence, case .pending = $0.payload else { return false }
                return true
            })
        else { return [] }
        slots[index].payload = .response(response)
        guard index == 0 else { return [] }
        var actions: [Action] = []
        finish(now: now, into: &actions)
        return actions
    }

    /// The loop sent what it could of the output buffer. `remaining`: bytes are still buffered (the socket
    /// would block); `progressed`: this send moved at least one byte.
    mutating func outputSent(remaining: Bool, progressed: Bool, now: UInt64) -> [Action] {
        switch state {
        case .closed, .lingering: return []
        case .open, .paused, .closingAfterOutput: break
        }
        if remaining {
            if outputStall == nil || progressed { outputStall = now &+ configuration.idleTimeout }
        } else {
            outputStall = nil
        }
        var actions: [Action] = []
        finish(now: now, into: &actions)
        return actions
    }

    /// The armed deadline may have passed: act on it (a stale call does nothing).
    mutating func deadlineReached(now: UInt64) -> [Action] {
        if let stall = outputStall, stall <= now { return close() }
        switch state {
        case .open(.idle(let until)) where until <= now:
            return close()
        case .open(.receiving(let deadline)) where deadline <= now:
            refuse(
                HTTPRefusal(
                    reason: .requestTimeout, status: .requestTimeout, message: "request not received in time", remoteAddress: remoteAddress),
                response: nil)
            var actions: [Action] = []
            finish(now: now, into: &actions)
            return actions
        case .lingering(let until) where until <= now:
            return close()
        default:
            return []
        }
    }

    /// The server is shutting down: read no more requests, answer those in flight by `graceDeadline`.
    mutating func shutdown(now: UInt64, graceDeadline: UInt64) -> [Action] {
        self.graceDeadline = graceDeadline
        shuttingDown = true
        switch state {
        case .closed:
            return []
        case .lingering(let until):
            var actions: [Action] = []
            let until = min(until, graceDeadline)
            state = .lingering(until: until)
            want(.read, deadline: until, into: &actions)
            return actions
        case .open, .paused, .closingAfterOutput:
            var actions: [Action] = []
            finish(now: now, into: &actions)
            return actions
        }
    }

    /// Close to make room for another connection. Only an ``isEvictable`` connection is evicted; it gets a
    /// best-effort 503 and is closed at once, without lingering: the point is to free its descriptor now.
    /// A lingering connection has had its answer, and is closed without another.
    mutating func evict(now: UInt64) -> [Action] {
        guard isEvictable else { return [] }
        if isLingering { return close() }
        state = .closed
        gate.releaseBody(&bodyReservation)
        let refusal = HTTPRefusal(
            reason: .evicted, status: .serviceUnavailable, message: "connection closed to make room for others; send requests promptly",
            remoteAddress: remoteAddress, retryAfterSeconds: 1)
        return [.write(.error(refusal, response: nil)), .close]
    }

    /// A read or write failed, or epoll reported an error or hang-up: nothing written can reach the peer.
    mutating func ioFailed() -> [Action] {
        close()
    }

    // MARK: - Transitions

    private mutating func close() -> [Action] {
        guard state != .closed else { return [] }
        state = .closed
        slots.removeAll()
        inFlight = 0
        gate.releaseBody(&bodyReservation)
        return [.close]
    }

    /// Answers `refusal` after the responses already due, reads nothing more, and closes once it is
    /// written; the body being received is not read on, so its reservation goes back.
    private mutating func refuse(_ refusal: HTTPRefusal, response: HTTPResponse?) {
        slots.append(Slot(payload: .error(refusal, response: response)))
        state = .closingAfterOutput
        gate.releaseBody(&bodyReservation)
    }

    /// Grows the body reservation to `bytes`; when the budget cannot give it, refuses the request (503,
    /// `Retry-After`) and returns false.
    private mutating func reserveBody(_ bytes: Int) -> Bool {
        if gate.reserveBody(&bodyReservation, bytes) { return true }
        refuse(
            HTTPRefusal(
                reason: .bodyBudget, status: .serviceUnavailable, message: "too many request bodies in flight; retry later",
                remoteAddress: remoteAddress, retryAfterSeconds: 1),
            response: nil)
        return false
    }

    /// Acts on parser output until it needs more bytes, the pipeline is full, or reading stops.
    private mutating func parse(_ first: HTTPRequestParser.Action, now: UInt64, into actions: inout [Action]) {
        var action = first
        while true {
            switch action {
            case .needMoreData:
                // A chunked body grows as its chunks are announced.
                _ = reserveBody(parser.announcedBodyBytes)
                return
            case .head(var head):
                head.remoteAddress = remoteAddress
                if case .refuse(let response) = gate.admit(head) {
                    refuse(
                        HTTPRefusal(
                            reason: .admission, status: response.status, message: "the request's head was not admitted",
                            remoteAddress: remoteAddress),
                        response: response)
                    return
                }
                guard reserveBody(parser.announcedBodyBytes) else { return }
                action = parser.next()
            case .sendContinue:
                slots.append(Slot(payload: .interimContinue))
                action = parser.next()
            case .request(var request):
                guard reserveBody(request.body.count) else { return }
                request.remoteAddress = remoteAddress
                let sequence = nextSequence
                nextSequence += 1
                slots.append(Slot(sequence: sequence, isHead: request.method == .head, keepAlive: request.keepAlive, payload: .pending))
                inFlight += 1
                actions.append(.dispatch(request, sequence: sequence, bodyBytes: bodyReservation))
                bodyReservation = 0
                guard request.keepAlive else {
                    state = .closingAfterOutput
                    return
                }
                // The next request, if any, starts its own clock.
                state = .open(.awaitingResponses)
                guard inFlight < configuration.maxPipelinedRequests else {
                    state = .paused(.pipelineFull)
                    return
                }
                action = parser.next()
            case .reject(let status, let reason):
                refuse(
                    HTTPRefusal(reason: HTTPRefusal.Reason(parserRejection: status), status: status, message: reason, remoteAddress: remoteAddress),
                    response: nil)
                return
            }
        }
    }

    /// Writes what is ready, resumes parsing where it was paused, then settles interest and deadline.
    private mutating func finish(now: UInt64, into actions: inout [Action]) {
        while true {
            if emitWrites(into: &actions) {
                actions.append(.flush)
                return
            }
            guard resumeParsing(now: now, into: &actions) else { break }
        }
        settle(now: now, into: &actions)
    }

    /// Whether requests after those already received may still come on this connection.
    private var acceptsMoreRequests: Bool {
        guard !inputEnded, !shuttingDown else { return false }
        switch state {
        case .open, .paused: return true
        case .closingAfterOutput, .lingering, .closed: return false
        }
    }

    /// Moves every ready response at the head of the slot queue into `.write` actions. `Connection: close`
    /// goes on the last response this connection will carry: when the client asked for it, or when nothing
    /// more will be read (shutdown, peer half-closed).
    private mutating func emitWrites(into actions: inout [Action]) -> Bool {
        var wrote = false
        while let first = slots.first {
            let output: Output
            let closes: Bool
            switch first.payload {
            case .pending:
                return wrote
            case .interimContinue:
                output = .interimContinue
                closes = false
            case .error(let refusal, let response):
                output = .error(refusal, response: response)
                closes = true
            case .response(let response):
                let keepAlive = first.keepAlive && (slots.count > 1 || acceptsMoreRequests)
                output = .response(response, keepAlive: keepAlive, isHead: first.isHead)
                closes = !keepAlive
            }
            slots.removeFirst()
            if first.sequence != nil { inFlight -= 1 }
            actions.append(.write(output))
            wrote = true
            if closes {
                state = .closingAfterOutput
                slots.removeAll()
                inFlight = 0
                return true
            }
        }
        return wrote
    }

    /// Parses requests the parser already buffered when a pause ends (the pipeline had filled with
    /// requests still unparsed).
    private mutating func resumeParsing(now: UInt64, into actions: inout [Action]) -> Bool {
        guard case .paused = state, acceptsMoreRequests, outputStall == nil, inFlight < configuration.maxPipelinedRequests else {
            return false
        }
        state = .open(.awaitingResponses)
        parse(parser.next(), now: now, into: &actions)
        return true
    }

    /// Decides what the connection waits for now, and tells the loop when interest or deadline change.
    private mutating func settle(now: UInt64, into actions: inout [Action]) {
        let drained = slots.isEmpty && outputStall == nil
        switch state {
        case .closed, .lingering:
            return
        case .open, .paused:
            guard acceptsMoreRequests else {
                if drained {
                    // Nothing owed: no response to protect from a reset, so no half-close and linger.
                    actions.append(contentsOf: close())
                    return
                }
                state = .closingAfterOutput
                settle(now: now, into: &actions)
                return
            }
            if let stall = outputStall {
                state = .paused(.outputBlocked)
                want(.write, deadline: stall, into: &actions)
            } else if inFlight >= configuration.maxPipelinedRequests {
                state = .paused(.pipelineFull)
                want(.none, deadline: nil, into: &actions)
            } else if parser.hasPartialRequest {
                let deadline: UInt64
                if case .open(.receiving(let current)) = state {
                    deadline = current
                } else {
                    deadline = now &+ configuration.requestReadTimeout
                }
                state = .open(.receiving(deadline: deadline))
                want(.read, deadline: deadline, into: &actions)
            } else if slots.isEmpty {
                let until: UInt64
                if case .open(.idle(let current)) = state {
                    until = current
                } else {
                    until = now &+ configuration.idleTimeout
                    quietSince = now
                    bytesSinceQuiet = 0
                }
                state = .open(.idle(until: until))
                want(.read, deadline: until, into: &actions)
            } else {
                state = .open(.awaitingResponses)
                want(.read, deadline: nil, into: &actions)
            }
        case .closingAfterOutput:
            if let stall = outputStall {
                want(.write, deadline: stall, into: &actions)
            } else if !slots.isEmpty {
                want(.none, deadline: nil, into: &actions)
            } else if inputEnded {
                actions.append(contentsOf: close())
            } else {
                let until = min(now &+ configuration.lingerTimeout, graceDeadline)
                state = .lingering(until: until)
                actions.append(.halfClose)
                want(.read, deadline: until, into: &actions)
            }
        }
    }

    private mutating func want(_ interest: Interest, deadline: UInt64?, into actions: inout [Action]) {
        if interest != self.interest {
            self.interest = interest
            actions.append(.setInterest(interest))
        }
        if deadline != self.deadline {
            self.deadline = deadline
            actions.append(deadline.map(Action.armDeadline) ?? .cancelDeadline)
        }
    }
}
