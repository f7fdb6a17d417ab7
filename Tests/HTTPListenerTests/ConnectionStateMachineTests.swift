import HTTPWire
import Testing

@testable import HTTPListener

private typealias Machine = ConnectionStateMachine

/// Milliseconds as the machine's monotonic nanoseconds.
private func ms(_ value: UInt64) -> UInt64 { value * 1_000_000 }

/// Header timeout 10 s, idle 60 s, linger 2 s, at most 100 bytes discarded while lingering.
private func machine(pipeline: Int = 16, gate: Machine.Gate = .unlimited, at now: UInt64 = 0) -> Machine {
    var limits = ListenerLimits()
    limits.maxPipelinedRequests = pipeline
    limits.requestReadTimeout = .seconds(10)
    limits.idleTimeout = .seconds(60)
    return Machine(configuration: .init(limits: limits, lingerTimeout: ms(2000), maxLingerBytes: 100), remoteAddress: "10.0.0.1", gate: gate, now: now)
}

/// A body budget of `limit` bytes. Used from one test's thread only, hence `@unchecked Sendable`.
private final class TestBodyBudget: @unchecked Sendable {
    let limit: Int
    var reserved = 0

    init(limit: Int) { self.limit = limit }

    func gate(admit: @escaping @Sendable (HTTPRequestHead) -> HTTPAdmission = { _ in .proceed }) -> Machine.Gate {
        Machine.Gate(
            admit: admit,
            reserveBody: { held, wanted in
                guard wanted > held else { return true }
                guard wanted - held <= self.limit - self.reserved else { return false }
                self.reserved += wanted - held
                held = wanted
                return true
            },
            releaseBody: { held in
                self.reserved -= held
                held = 0
            })
    }
}

/// Actions as short text, so that a test reads like the event loop's to-do list.
private func describe(_ actions: [Machine.Action]) -> [String] {
    actions.map { action in
        switch action {
        case .setInterest(let interest): "interest \(interest)"
        case .armDeadline(let at): "deadline \(at / 1_000_000)ms"
        case .cancelDeadline: "no deadline"
        case .dispatch(let request, let sequence, let bodyBytes):
            "dispatch #\(sequence) \(request.method) \(request.target)\(bodyBytes > 0 ? " holding \(bodyBytes)" : "")"
        case .write(.interimContinue): "write 100"
        case .write(.response(let response, let keepAlive, let isHead)):
            "write \(response.status.code)\(keepAlive ? "" : " close")\(isHead ? " head" : "")"
        case .write(.error(let refusal, _)): "write \(refusal.status?.code ?? 0) \(refusal.reason.rawValue)"
        case .flush: "flush"
        case .halfClose: "half-close"
        case .close: "close"
        }
    }
}

extension Machine {
    fileprivate mutating func on(_ text: String, at now: UInt64) -> [String] {
        describe(received(Array(text.utf8), now: now))
    }

    fileprivate mutating func respond(_ sequence: UInt64, _ status: HTTPStatus = .ok, at now: UInt64) -> [String] {
        describe(responseReady(sequence: sequence, response: HTTPResponse(status: status), now: now))
    }

    fileprivate mutating func sent(remaining: Bool = false, progressed: Bool = true, at now: UInt64) -> [String] {
        describe(outputSent(remaining: remaining, progressed: progressed, now: now))
    }
}

private func get(_ path: String, _ extra: String = "") -> String { "GET \(path) HTTP/1.1\r\nHost: x\r\n\(extra)\r\n" }

// MARK: - Reading and answering

@Test func connection_Accepted_ReadsWithIdleDeadline() {
    var connection = machine()
    #expect(describe(connection.accepted(now: 0)) == ["interest read", "deadline 60000ms"])
    #expect(connection.state == .open(.idle(until: ms(60_000))))
    #expect(connection.isEvictable)
}

@Test func connection_CompleteRequest_DispatchesAndRunsNoClockWhileTheResponderWorks() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    #expect(connection.on(get("/a"), at: ms(5)) == ["dispatch #0 GET /a", "no deadline"])
    #expect(connection.state == .open(.awaitingResponses))
    #expect(connection.inFlight == 1)
    #expect(!connection.isEvictable)
    #expect(connection.deadlineReached(now: ms(120_000)).isEmpty)
}

@Test func connection_ResponseWritten_ReturnsToIdleWithAFreshIdleDeadline() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on(get("/a"), at: ms(5))
    #expect(connection.respond(0, at: ms(30)) == ["write 200", "flush"])
    #expect(connection.sent(at: ms(31)) == ["deadline 60031ms"])
    #expect(connection.state == .open(.idle(until: ms(60_031))))
    #expect(connection.quietSince == ms(31))
    #expect(connection.bytesSinceQuiet == 0)
    #expect(connection.inFlight == 0)
}

@Test func connection_HeadRequest_ResponseIsMarkedHead() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n", at: 0)
    #expect(connection.respond(0, at: 0) == ["write 200 head", "flush"])
}

@Test func connection_PartialRequest_ArmsHeaderDeadlineThatTricklingDoesNotExtend() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    #expect(connection.on("GET /slow HTTP/1.1\r\n", at: ms(1000)) == ["deadline 11000ms"])
    #expect(connection.state == .open(.receiving(deadline: ms(11_000))))
    #expect(connection.on("X-A: 1\r\n", at: ms(5000)).isEmpty)
    #expect(connection.on("X-B: 2\r\n", at: ms(9000)).isEmpty)
    #expect(connection.state == .open(.receiving(deadline: ms(11_000))))
    // Still evictable: nothing in flight; quiet since it connected, with the bytes it trickled.
    #expect(connection.isEvictable)
    #expect(connection.quietSince == 0)
    #expect(connection.bytesSinceQuiet == 36)
}

@Test func connection_HeaderDeadlinePasses_Answers408ThenHalfClosesAndLingers() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on("GET /slow HTTP/1.1\r\n", at: 0)
    #expect(connection.deadlineReached(now: ms(9999)).isEmpty)
    #expect(describe(connection.deadlineReached(now: ms(10_000))) == ["write 408 request_timeout", "flush"])
    #expect(connection.state == .closingAfterOutput)
    #expect(connection.sent(at: ms(10_001)) == ["half-close", "deadline 12001ms"])
    #expect(connection.state == .lingering(until: ms(12_001)))
}

@Test func connection_NextRequestStartsItsOwnHeaderDeadline() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on("GET /a HTTP/1.1\r\n", at: 0)
    // The first request completes at 8 s and a second one starts in the same read: a new 10 s clock.
    #expect(connection.on("Host: x\r\n\r\nGET /b HTTP/1.1\r\n", at: ms(8000)) == ["dispatch #0 GET /a", "deadline 18000ms"])
    #expect(connection.state == .open(.receiving(deadline: ms(18_000))))
    #expect(!connection.isEvictable)
}

@Test func connection_IdleDeadlinePasses_ClosesSilently() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    #expect(connection.deadlineReached(now: ms(59_999)).isEmpty)
    #expect(describe(connection.deadlineReached(now: ms(60_000))) == ["close"])
    #expect(connection.state == .closed)
    #expect(describe(connection.deadlineReached(now: ms(60_001))).isEmpty)
}

// MARK: - Pipelining and backpressure

@Test func connection_PipelinedResponsesFinishedOutOfOrder_AreWrittenInRequestOrder() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    #expect(connection.on(get("/a") + get("/b") + get("/c"), at: 0) == ["dispatch #0 GET /a", "dispatch #1 GET /b", "dispatch #2 GET /c", "no deadline"])
    #expect(connection.respond(2, at: 0).isEmpty)
    #expect(connection.respond(1, at: 0).isEmpty)
    #expect(connection.respond(0, at: 0) == ["write 200", "write 200", "write 200", "flush"])
    #expect(connection.inFlight == 0)
    // A response for a sequence already answered, or never dispatched, changes nothing.
    #expect(connection.respond(1, at: 0).isEmpty)
    #expect(connection.respond(9, at: 0).isEmpty)
}

@Test func connection_PipelineFull_StopsReadingAndParsesBufferedRequestsWhenAResponseGoesOut() {
    var connection = machine(pipeline: 2)
    _ = connection.accepted(now: 0)
    #expect(connection.on(get("/1") + get("/2") + get("/3"), at: 0) == ["dispatch #0 GET /1", "dispatch #1 GET /2", "interest none", "no deadline"])
    #expect(connection.state == .paused(.pipelineFull))
    #expect(!connection.wantsInput)
    #expect(connection.respond(0, at: ms(10)) == ["write 200", "flush"])
    // The written response frees a place: the buffered third request is parsed before reading again.
    #expect(connection.sent(at: ms(10)) == ["dispatch #2 GET /3"])
    #expect(connection.state == .paused(.pipelineFull))
    #expect(connection.respond(1, at: ms(20)) == ["write 200", "flush"])
    #expect(connection.sent(at: ms(20)) == ["interest read"])
    #expect(connection.state == .open(.awaitingResponses))
    #expect(connection.respond(2, at: ms(30)) == ["write 200", "flush"])
    #expect(connection.sent(at: ms(30)) == ["deadline 60030ms"])
}

@Test func connection_OutputBlocked_StopsReadingUntilThePeerReadsAndClosesWhenItNeverDoes() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on(get("/big"), at: 0)
    #expect(connection.respond(0, at: ms(100)) == ["write 200", "flush"])
    #expect(connection.sent(remaining: true, at: ms(100)) == ["interest write", "deadline 60100ms"])
    #expect(connection.state == .paused(.outputBlocked))
    #expect(!connection.isEvictable)
    // Progress restarts the stall clock; a send that moved nothing does not.
    #expect(connection.sent(remaining: true, progressed: true, at: ms(30_000)) == ["deadline 90000ms"])
    #expect(connection.sent(remaining: true, progressed: false, at: ms(50_000)).isEmpty)
    #expect(describe(connection.deadlineReached(now: ms(90_000))) == ["close"])
}

@Test func connection_OutputDrained_ResumesReading() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on(get("/big"), at: 0)
    _ = connection.respond(0, at: 0)
    _ = connection.sent(remaining: true, at: 0)
    #expect(connection.sent(remaining: false, at: ms(5)) == ["interest read", "deadline 60005ms"])
    #expect(connection.state == .open(.idle(until: ms(60_005))))
}

// MARK: - Closing

@Test func connection_ConnectionCloseRequest_StopsReadingAndLingersAfterTheResponse() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    #expect(connection.on(get("/last", "Connection: close\r\n") + get("/ignored"), at: 0) == ["dispatch #0 GET /last", "interest none", "no deadline"])
    #expect(connection.state == .closingAfterOutput)
    #expect(connection.respond(0, at: ms(10)) == ["write 200 close", "flush"])
    #expect(connection.sent(at: ms(10)) == ["half-close", "interest read", "deadline 2010ms"])
}

@Test func connection_MalformedRequestAfterAGoodOne_IsAnsweredInOrderThenCloses() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    #expect(connection.on(get("/ok") + "BAD\r\n\r\n", at: 0) == ["dispatch #0 GET /ok", "interest none", "no deadline"])
    #expect(connection.respond(0, at: 0) == ["write 200", "write 400 malformed", "flush"])
    #expect(connection.sent(at: 0) == ["half-close", "interest read", "deadline 2000ms"])
}

@Test func connection_PeerHalfClosed_AnswersInFlightWithConnectionCloseThenClosesWithoutLinger() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on(get("/a"), at: 0)
    #expect(describe(connection.inputEnded(now: 0)) == ["interest none"])
    #expect(connection.respond(0, at: ms(5)) == ["write 200 close", "flush"])
    #expect(connection.sent(at: ms(5)) == ["close"])
    #expect(connection.state == .closed)
}

@Test func connection_PeerHalfClosedWhileIdle_ClosesAtOnce() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on("GET /partial", at: 0)
    #expect(describe(connection.inputEnded(now: 0)) == ["close"])
}

@Test func connection_Lingering_DiscardsInputUntilTheLimitTheFINOrTheDeadline() {
    func lingering() -> Machine {
        var connection = machine()
        _ = connection.accepted(now: 0)
        _ = connection.on("BAD\r\n\r\n", at: 0)
        _ = connection.sent(at: 0)
        return connection
    }
    var overLimit = lingering()
    #expect(overLimit.on(String(repeating: "x", count: 100), at: ms(1)).isEmpty)
    #expect(overLimit.on("x", at: ms(2)) == ["close"])

    var finished = lingering()
    #expect(describe(finished.inputEnded(now: ms(1))) == ["close"])

    var expired = lingering()
    #expect(describe(expired.deadlineReached(now: ms(1999))).isEmpty)
    #expect(describe(expired.deadlineReached(now: ms(2000))) == ["close"])
}

@Test func connection_ExpectContinue_WritesTheInterimResponseBeforeTheBodyArrives() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    #expect(connection.on(head, at: 0) == ["write 100", "flush"])
    #expect(connection.sent(at: 0) == ["deadline 10000ms"])
    #expect(connection.on("hi", at: ms(1)) == ["dispatch #0 POST /up holding 2", "no deadline"])
}

@Test func connection_IOFailure_ClosesOnceAndDropsLateResponses() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on(get("/a"), at: 0)
    #expect(describe(connection.ioFailed()) == ["close"])
    #expect(describe(connection.ioFailed()).isEmpty)
    #expect(connection.respond(0, at: 0).isEmpty)
    #expect(connection.on(get("/b"), at: 0).isEmpty)
}

// MARK: - Shutdown, refusal, eviction

@Test func connection_ShutdownWhileIdle_ClosesAtOnce() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    #expect(describe(connection.shutdown(now: 0, graceDeadline: ms(10_000))) == ["close"])
}

@Test func connection_ShutdownWithRequestsInFlight_AnswersThemAndTheLastCarriesConnectionClose() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on(get("/a") + get("/b"), at: 0)
    #expect(describe(connection.shutdown(now: 0, graceDeadline: ms(1000))) == ["interest none"])
    #expect(connection.respond(0, at: 0) == ["write 200", "flush"])
    #expect(connection.sent(at: 0).isEmpty)
    #expect(connection.respond(1, at: ms(100)) == ["write 200 close", "flush"])
    // The linger is cut to the grace deadline.
    #expect(connection.sent(at: ms(100)) == ["half-close", "interest read", "deadline 1000ms"])
}

@Test func connection_ShutdownWhileLingering_CutsTheLingerToTheGraceDeadline() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on("BAD\r\n\r\n", at: 0)
    _ = connection.sent(at: 0)
    #expect(describe(connection.shutdown(now: ms(10), graceDeadline: ms(500))) == ["deadline 500ms"])
    #expect(connection.state == .lingering(until: ms(500)))
}

@Test func connection_Refused_AnswersTheErrorThenLingers() {
    var connection = machine()
    let refusal = HTTPRefusal(reason: .atCapacity, status: .serviceUnavailable, message: "full", remoteAddress: "10.0.0.1")
    #expect(describe(connection.refuse(refusal, now: 0)) == ["write 503 at_capacity", "flush"])
    #expect(connection.sent(at: 0) == ["half-close", "interest read", "deadline 2000ms"])
}

@Test func connection_Evicted_OnlyWithNothingInFlight_Gets503AndClosesAtOnce() {
    var busy = machine()
    _ = busy.accepted(now: 0)
    _ = busy.on(get("/work"), at: 0)
    #expect(describe(busy.evict(now: 0)).isEmpty)
    #expect(busy.state == .open(.awaitingResponses))

    var slow = machine()
    _ = slow.accepted(now: 0)
    _ = slow.on("GET / HTTP/1.1\r\nX-", at: 0)
    #expect(describe(slow.evict(now: ms(3000))) == ["write 503 evicted", "close"])
    #expect(slow.state == .closed)
    #expect(!slow.isEvictable)

    var idle = machine()
    _ = idle.accepted(now: 0)
    #expect(describe(idle.evict(now: 0)) == ["write 503 evicted", "close"])
}

@Test func connection_LingeringAfterItsAnswer_IsEvictedWithoutAnotherAnswer() {
    var connection = machine()
    _ = connection.accepted(now: 0)
    _ = connection.on("BAD\r\n\r\n", at: 0)
    _ = connection.sent(at: 0)
    #expect(connection.isLingering)
    #expect(connection.isEvictable)
    #expect(describe(connection.evict(now: ms(1))) == ["close"])
    #expect(connection.state == .closed)
}

// MARK: - Admission and the body budget

@Test func connection_HeadRefusedByAdmission_AnswersTheApplicationsResponseWithoutReadingTheBody() {
    let budget = TestBodyBudget(limit: 1000)
    var connection = machine(
        gate: budget.gate { head in head.path == "/private" ? .refuse(HTTPResponse(status: .unauthorized)) : .proceed })
    _ = connection.accepted(now: 0)
    let actions = connection.received(Array("POST /private HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nabc".utf8), now: 0)
    #expect(describe(actions) == ["write 401 admission", "flush"])
    if case .write(.error(_, let response)) = actions.first {
        #expect(response?.status == .unauthorized)
    }
    #expect(budget.reserved == 0)
    #expect(connection.state == .closingAfterOutput)
}

@Test func connection_BodyWithinTheBudget_IsReservedAtTheHeadAndHandedToTheRequest() {
    let budget = TestBodyBudget(limit: 10)
    var connection = machine(gate: budget.gate())
    _ = connection.accepted(now: 0)
    #expect(connection.on("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nabc", at: 0) == ["deadline 10000ms"])
    #expect(connection.bodyReservation == 8)
    #expect(budget.reserved == 8)
    #expect(connection.on("defgh", at: ms(1)) == ["dispatch #0 POST /a holding 8", "no deadline"])
    #expect(connection.bodyReservation == 0)
}

@Test func connection_BodyOverTheBudget_Gets503AndNothingStaysReserved() {
    let budget = TestBodyBudget(limit: 10)
    var connection = machine(gate: budget.gate())
    _ = connection.accepted(now: 0)
    #expect(connection.on("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", at: 0) == ["write 503 body_budget", "flush"])
    #expect(budget.reserved == 0)
}

@Test func connection_ClosedWhileReceivingABody_GivesItsReservationBack() {
    let budget = TestBodyBudget(limit: 100)
    var connection = machine(gate: budget.gate())
    _ = connection.accepted(now: 0)
    _ = connection.on("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nab", at: 0)
    #expect(budget.reserved == 50)
    #expect(describe(connection.ioFailed()) == ["close"])
    #expect(budget.reserved == 0)

    var evicted = machine(gate: budget.gate())
    _ = evicted.accepted(now: 0)
    _ = evicted.on("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nab", at: 0)
    #expect(describe(evicted.evict(now: ms(1))) == ["write 503 evicted", "close"])
    #expect(budget.reserved == 0)
}
