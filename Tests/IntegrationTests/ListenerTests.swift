import Dispatch
import Foundation
import HTTPListener
import HTTPWire
import Logging
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// A failure of the raw test client, with the errno of the failing call.
struct ListenerTestClientError: Error, CustomStringConvertible {
    let operation: String
    let errno: Int32
    var description: String { "\(operation) failed: errno \(errno)" }
}

/// A parsed response as the raw client saw it.
struct ListenerTestResponse {
    var status: Int
    var headers: HTTPHeaders
    var body: [UInt8]
    var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// A blocking POSIX client socket for listener tests. Used from one thread at a time (inside
/// ``listenerBlocking(_:)``), never concurrently, hence `@unchecked Sendable`.
final class ListenerTestClient: @unchecked Sendable {
    let fd: Int32
    private var buffer: [UInt8] = []

    /// `receiveBuffer` caps the socket's receive buffer (set before connecting, so the window stays small).
    init(port: Int, receiveTimeout: Int = 5, receiveBuffer: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ListenerTestClientError(operation: "socket", errno: errno) }
        var timeout = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        // No close here: every stored property is set, so a throwing init still runs deinit, which closes
        // `fd`; closing twice could close a descriptor another thread has just been given.
        guard result == 0 else { throw ListenerTestClientError(operation: "connect", errno: errno) }
    }

    deinit { close(fd) }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw ListenerTestClientError(operation: "send", errno: errno) }
            offset += sent
        }
    }

    /// Reads more bytes into the buffer; false at EOF (or reset).
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count > 0 {
            buffer.append(contentsOf: chunk[0..<count])
            return true
        }
        if count == 0 || errno == ECONNRESET { return false }
        throw ListenerTestClientError(operation: "read", errno: errno)
    }

    /// Reads exactly `count` raw bytes.
    func readBytes(_ count: Int) throws -> [UInt8] {
        while buffer.count < count {
            guard try fill() else { throw ListenerTestClientError(operation: "read (EOF)", errno: 0) }
        }
        defer { buffer.removeFirst(count) }
        return Array(buffer[0..<count])
    }

    /// Reads one response, framed by Content-Length (no body for HEAD, 1xx, 204, 304).
    func readResponse(isHead: Bool = false) throws -> ListenerTestResponse {
        let terminator: [UInt8] = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while headEnd == nil {
            if buffer.count >= 4 {
                headEnd = (0...(buffer.count - 4)).first { Array(buffer[$0..<$0 + 4]) == terminator }
            }
            if headEnd == nil, try !fill() { throw ListenerTestClientError(operation: "read head (EOF)", errno: 0) }
        }
        let head = String(decoding: buffer[0..<headEnd!], as: UTF8.self)
        buffer.removeFirst(headEnd! + 4)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        let status = Int(statusLine[1]) ?? 0
        var headers = HTTPHeaders()
        for line in lines {
            let parts = line.split(separator: ":", maxSplits: 1)
            headers.add(name: String(parts[0]), value: String(parts[1]).trimmingCharacters(in: .whitespaces))
        }
        var body: [UInt8] = []
        if !isHead, !(100..<200).contains(status), status != 204, status != 304 {
            body = try readBytes(Int(headers["Content-Length"] ?? "0") ?? 0)
        }
        return ListenerTestResponse(status: status, headers: headers, body: body)
    }

    /// Half-closes: the server sees EOF after what was sent.
    func closeWrite() {
        shutdown(fd, Int32(SHUT_WR))
    }

    /// Whether the server closes the connection (EOF) before the receive timeout, with no further bytes.
    func readsEOF() throws -> Bool {
        guard buffer.isEmpty else { return false }
        return try !fill()
    }
}

/// Runs blocking client work off the cooperative pool: on two cores, a blocked pool thread could starve
/// the very responder the test waits for. A private queue (overcommitting) rather than `global()`, whose
/// width is the core count, so parallel tests blocked in `read` cannot starve one another either.
func listenerBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue(label: "listener-test-client").async { continuation.resume(with: Result { try body() }) }
    }
}

/// A one-shot gate tasks can wait on.
final class ListenerTestGate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let proceed = state.withLock { state in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if proceed { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// Requests inside a responder: how many now, the most at once, and how many have left.
fileprivate final class ListenerTestInFlight: Sendable {
    /// `fills` counts the moments `limit` requests were inside at once: a request that saw one while it
    /// was inside may leave, even if the others left before it looked.
    private let state = Mutex<(current: Int, peak: Int, done: Int, fills: Int)>((0, 0, 0, 0))

    var peak: Int { state.withLock { $0.peak } }

    /// Enters, holds until `limit` requests have been inside at once (or every one of `total` has
    /// entered), then leaves. So whenever the server lets `limit` requests run together they do, however
    /// long each takes, and a server that let more in would gather them here too. Bounded, so a server
    /// that never reaches `limit` fails the caller's check instead of hanging the test.
    func pass(limit: Int, of total: Int) async {
        let fillsBefore = state.withLock { state in
            let before = state.fills
            state.current += 1
            state.peak = max(state.peak, state.current)
            if state.current >= limit { state.fills += 1 }
            return before
        }
        _ = try? await eventually(within: .seconds(10), every: .milliseconds(2)) {
            state.withLock { $0.fills > fillsBefore || $0.done + $0.current >= total }
        }
        state.withLock { state in
            state.current -= 1
            state.done += 1
        }
    }
}

/// Whether this machine can listen on the dual-stack address `::` (IPv6, IPv4-mapped peers accepted).
/// Containers without IPv6 cannot; the dual-stack test is then reported as skipped, with this reason.
fileprivate let listenerDualStackAvailable: Bool = {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var off: Int32 = 0
    guard setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &off, socklen_t(MemoryLayout<Int32>.size)) == 0 else { return false }
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_any
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0 }
    }
}()

/// Polls (up to about 2 s) until connecting to `port` is refused.
fileprivate func listenerPortRefusesConnections(_ port: Int) async -> Bool {
    for _ in 0..<100 {
        if (try? await listenerBlocking({ try ListenerTestClient(port: port) })) == nil { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return false
}

/// Answers `<METHOD> <target> <body>` as text.
let listenerEchoResponder: HTTPServer.Responder = { request in
    let text = "\(request.method) \(request.target) \(String(decoding: request.body, as: UTF8.self))"
    return HTTPResponse(status: .ok, headers: ["Content-Type": "text/plain", "X-Remote": request.remoteAddress], body: Array(text.utf8))
}

/// Runs a server on an ephemeral loopback port for the duration of `body`, then cancels it and waits for `run()`.
func withListenerServer(
    configure: (inout HTTPServerConfiguration) -> Void = { _ in },
    statistics: ListenerStatistics = ListenerStatistics(),
    responder: @escaping HTTPServer.Responder = listenerEchoResponder,
    _ body: (Int) async throws -> Void
) async throws {
    var configuration = HTTPServerConfiguration()
    configuration.host = "127.0.0.1"
    configuration.port = 0
    configuration.eventLoopCount = 2
    configuration.shutdownGracePeriod = .seconds(2)
    configure(&configuration)
    let server = HTTPServer(
        configuration: configuration, logger: Logger(label: "listener-test") { _ in SwiftLogNoOpLogHandler() }, statistics: statistics,
        responder: responder)
    let run = Task { try await server.run() }
    do {
        let port = try await server.waitUntilListening()
        try await body(port)
    } catch {
        run.cancel()
        _ = try? await run.value
        throw error
    }
    run.cancel()
    try await run.value
}

// MARK: - Tests

private func request(_ path: String, method: String = "GET", headers: String = "", body: String = "") -> String {
    let length = body.isEmpty && method == "GET" ? "" : "Content-Length: \(body.utf8.count)\r\n"
    return "\(method) \(path) HTTP/1.1\r\nHost: test\r\n\(length)\(headers)\r\n\(body)"
}

/// A refusal as the listener answers it when the application supplies no error response: plain HTTP,
/// the connection closed after it (the service's JSON error body is tested in ListenerRefusalTests).
private func expectPlainRefusal(_ response: ListenerTestResponse, status: Int) {
    #expect(response.status == status)
    #expect(response.headers["Content-Type"] == "text/plain; charset=utf-8")
    #expect(response.headers["Connection"] == "close")
    #expect(response.headers["Date"] != nil)
    #expect(!response.bodyText.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
}

@Test func listener_KeepAliveServesSeveralRequestsOnOneConnection() async throws {
    try await withListenerServer { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            for index in 1...3 {
                try client.send(request("/r/\(index)?q=\(index)", method: "POST", body: "body\(index)"))
                let response = try client.readResponse()
                #expect(response.status == 200)
                #expect(response.bodyText == "POST /r/\(index)?q=\(index) body\(index)")
                #expect(response.headers["Connection"] == "keep-alive")
                #expect(response.headers["Content-Length"] == "\(response.body.count)")
                #expect(response.headers["Date"]?.hasSuffix(" GMT") == true)
                #expect(response.headers["X-Remote"] == "127.0.0.1")
            }
        }
    }
}

@Test func listener_PipelinedResponsesKeepRequestOrderWhenFinishedOutOfOrder() async throws {
    let finished = Mutex<[String]>([])
    let responder: HTTPServer.Responder = { request in
        // Each request finishes only after the one behind it has, so completions come in reverse order
        // however long each takes. Bounded: a server that ran them one at a time fails the order check
        // below instead of hanging.
        let index = Int(request.pathSegments.last ?? "") ?? 0
        if index < 3 {
            _ = try? await eventually(within: .seconds(5), every: .milliseconds(2)) {
                finished.withLock { $0.contains("/p/\(index + 1)") }
            }
        }
        finished.withLock { $0.append(request.path) }
        return HTTPResponse(status: .ok, body: Array(request.path.utf8))
    }
    try await withListenerServer(responder: responder) { port in
        let bodies = try await listenerBlocking {
            let client = try ListenerTestClient(port: port, receiveTimeout: 30)
            try client.send(request("/p/1") + request("/p/2") + request("/p/3"))
            return try (0..<3).map { _ in try client.readResponse().bodyText }
        }
        #expect(bodies == ["/p/1", "/p/2", "/p/3"])
        #expect(finished.withLock { $0 } == ["/p/3", "/p/2", "/p/1"])
    }
}

@Test func listener_ExpectContinueGetsInterimResponseBeforeBody() async throws {
    try await withListenerServer { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send("POST /upload HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            let interim = try client.readBytes(HTTPResponseEncoder.continueResponse.count)
            #expect(interim == HTTPResponseEncoder.continueResponse)
            try client.send("hello")
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyText == "POST /upload hello")
        }
    }
}

@Test func listener_HeadResponseHasLengthButNoBody() async throws {
    try await withListenerServer { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send(request("/h", method: "HEAD"))
            let head = try client.readResponse(isHead: true)
            #expect(head.status == 200)
            #expect(head.headers["Content-Length"] == "\("HEAD /h ".utf8.count)")
            #expect(head.body.isEmpty)
            // Framing stays intact: the next response starts right after the HEAD response's head.
            try client.send(request("/g"))
            #expect(try client.readResponse().bodyText == "GET /g ")
        }
    }
}

@Test func listener_ConnectionCloseClosesAfterResponse() async throws {
    try await withListenerServer { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            // The pipelined request after the closing one must not be answered.
            try client.send(request("/bye", headers: "Connection: close\r\n") + request("/ignored"))
            let response = try client.readResponse()
            #expect(response.bodyText == "GET /bye ")
            #expect(response.headers["Connection"] == "close")
            #expect(try client.readsEOF())
        }
    }
}

@Test func listener_HTTP10ClosesByDefaultAndKeepsAliveWhenAsked() async throws {
    try await withListenerServer { port in
        try await listenerBlocking {
            let plain = try ListenerTestClient(port: port)
            try plain.send("GET /old HTTP/1.0\r\n\r\n")
            let first = try plain.readResponse()
            #expect(first.status == 200)
            #expect(first.headers["Connection"] == "close")
            #expect(try plain.readsEOF())

            let kept = try ListenerTestClient(port: port)
            for _ in 0..<2 {
                try kept.send("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let response = try kept.readResponse()
                #expect(response.headers["Connection"] == "keep-alive")
                #expect(response.bodyText == "GET /old ")
            }
        }
    }
}

@Test func listener_ChunkedBodyReachesResponderDecoded() async throws {
    try await withListenerServer { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send("POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            try client.send("6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.bodyText == "POST /c hello world")
        }
    }
}

@Test func listener_OversizedBodyGets413JSONAndClose() async throws {
    try await withListenerServer(configure: { $0.limits.parser.maxBodyBytes = 100 }) { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send("POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + String(repeating: "x", count: 30_000))
            expectPlainRefusal(try client.readResponse(), status: 413)
            #expect(try client.readsEOF())
        }
    }
}

@Test func listener_OversizedHeadersGet431JSONAndClose() async throws {
    try await withListenerServer(configure: { $0.limits.parser.maxHeaderBytes = 512 }) { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send("GET / HTTP/1.1\r\nHost: t\r\nX-Big: \(String(repeating: "v", count: 1000))\r\n\r\n")
            expectPlainRefusal(try client.readResponse(), status: 431)
            #expect(try client.readsEOF())
        }
    }
}

@Test func listener_MalformedRequestGets400JSONAndClose() async throws {
    try await withListenerServer { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            expectPlainRefusal(try client.readResponse(), status: 400)
            #expect(try client.readsEOF())
        }
    }
}

@Test func listener_IncompleteRequestGets408AfterReadTimeout() async throws {
    try await withListenerServer(configure: { $0.limits.requestReadTimeout = .milliseconds(300) }) { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            let started = ContinuousClock.now
            try client.send("GET /slow HTTP/1.1\r\nHost: t\r\n")
            expectPlainRefusal(try client.readResponse(), status: 408)
            #expect(ContinuousClock.now - started >= .milliseconds(250))
            #expect(try client.readsEOF())
        }
    }
}

@Test func listener_ConnectionsBeyondLimitGet503JSONAndCloseWhileEveryConnectionIsBusy() async throws {
    // Both admitted connections have a request in flight, so neither may be evicted to make room.
    let held = ListenerTestInFlight()
    let release = ListenerTestGate()
    let responder: HTTPServer.Responder = { request in
        if request.path == "/held" {
            await held.pass(limit: 2, of: 2)
            await release.wait()
        }
        return HTTPResponse(status: .ok)
    }
    try await withListenerServer(configure: { $0.limits.maxConnections = 2 }, responder: responder) { port in
        let (first, second) = try await listenerBlocking {
            let first = try ListenerTestClient(port: port)
            let second = try ListenerTestClient(port: port)
            for client in [first, second] { try client.send(request("/held")) }
            return (first, second)
        }
        _ = try await eventually { held.peak == 2 }
        try await listenerBlocking {
            let third = try ListenerTestClient(port: port)
            expectPlainRefusal(try third.readResponse(), status: 503)
            #expect(try third.readsEOF())
        }
        release.open()
        try await listenerBlocking {
            // The admitted connections keep working.
            for client in [first, second] { #expect(try client.readResponse().status == 200) }
            try first.send(request("/still"))
            #expect(try first.readResponse().status == 200)
        }
    }
}

@Test func listener_ConnectionsBeyondLimitEvictTheIdleConnectionQuietLongest() async throws {
    // One loop: each loop makes room among its own connections.
    try await withListenerServer(configure: { $0.limits.maxConnections = 2; $0.eventLoopCount = 1 }) { port in
        try await listenerBlocking {
            let oldest = try ListenerTestClient(port: port)
            try oldest.send(request("/idle"))
            #expect(try oldest.readResponse().status == 200)
            let newer = try ListenerTestClient(port: port)
            try newer.send(request("/idle"))
            #expect(try newer.readResponse().status == 200)
            let third = try ListenerTestClient(port: port)
            try third.send(request("/fresh"))
            #expect(try third.readResponse().status == 200)
            // The connection quiet the longest made room: it is told why, and closed.
            expectPlainRefusal(try oldest.readResponse(), status: 503)
            #expect(try oldest.readsEOF())
            try newer.send(request("/still"))
            #expect(try newer.readResponse().status == 200)
        }
    }
}

@Test func listener_IdleConnectionIsClosedSilently() async throws {
    try await withListenerServer(configure: { $0.limits.idleTimeout = .milliseconds(300) }) { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send(request("/once"))
            #expect(try client.readResponse().status == 200)
            let started = ContinuousClock.now
            #expect(try client.readsEOF())
            #expect(ContinuousClock.now - started >= .milliseconds(200))
        }
    }
}

@Test func listener_SlowResponderDoesNotDelayOtherConnections() async throws {
    let gate = ListenerTestGate()
    let responder: HTTPServer.Responder = { request in
        if request.path == "/slow" { await gate.wait() }
        return HTTPResponse(status: .ok, body: Array(request.path.utf8))
    }
    try await withListenerServer(configure: { $0.eventLoopCount = 1 }, responder: responder) { port in
        // Opened on every way out: a failed expectation below must not leave /slow waiting forever, which
        // would hang the server's shutdown and with it the whole suite.
        defer { gate.open() }
        let slow = try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send(request("/slow"))
            return client
        }
        let fast = try await listenerBlocking {
            let client = try ListenerTestClient(port: port, receiveTimeout: 10)
            try client.send(request("/fast"))
            return try client.readResponse().bodyText
        }
        #expect(fast == "/fast")
        gate.open()
        let slowBody = try await listenerBlocking { try slow.readResponse().bodyText }
        #expect(slowBody == "/slow")
    }
}

@Test func listener_CancelledRunAnswersInFlightRequestThenRefusesConnections() async throws {
    let entered = ListenerTestGate()
    let release = ListenerTestGate()
    let responder: HTTPServer.Responder = { request in
        entered.open()
        await release.wait()
        return HTTPResponse(status: .ok, body: Array("done".utf8))
    }
    var configuration = HTTPServerConfiguration()
    configuration.host = "127.0.0.1"
    configuration.port = 0
    configuration.eventLoopCount = 2
    let server = HTTPServer(
        configuration: configuration, logger: Logger(label: "listener-test") { _ in SwiftLogNoOpLogHandler() }, responder: responder)
    let run = Task { try await server.run() }
    let port = try await server.waitUntilListening()

    let client = try await listenerBlocking {
        let client = try ListenerTestClient(port: port)
        try client.send(request("/work", method: "POST", body: "x"))
        return client
    }
    await entered.wait()
    run.cancel()
    // Shutdown has begun: the listeners close while the request is still in flight.
    #expect(await listenerPortRefusesConnections(port))
    release.open()

    let response = try await listenerBlocking { try client.readResponse() }
    #expect(response.status == 200)
    #expect(response.bodyText == "done")
    #expect(response.headers["Connection"] == "close")
    #expect(try await listenerBlocking { try client.readsEOF() })
    client.closeWrite()
    try await run.value
    await #expect(throws: ListenerTestClientError.self) { try await listenerBlocking { try ListenerTestClient(port: port) } }
}

@Test func listener_URLSessionRoundTrip() async throws {
    try await withListenerServer { port in
        var urlRequest = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/v1/callback?x=1")!)
        urlRequest.httpMethod = "POST"
        urlRequest.httpBody = Data("<Response/>".utf8)
        urlRequest.setValue("application/xml", forHTTPHeaderField: "Content-Type")
        let (data, response) = try await URLSession.shared.data(for: urlRequest)
        let http = try #require(response as? HTTPURLResponse)
        #expect(http.statusCode == 200)
        #expect(String(decoding: data, as: UTF8.self) == "POST /v1/callback?x=1 <Response/>")
    }
}

@Test func listener_BindFailureReportsAddressInUse() async throws {
    try await withListenerServer(configure: { $0.eventLoopCount = 1 }) { port in
        var configuration = HTTPServerConfiguration()
        configuration.host = "127.0.0.1"
        configuration.port = port
        configuration.eventLoopCount = 1
        let second = HTTPServer(
            configuration: configuration, logger: Logger(label: "listener-test") { _ in SwiftLogNoOpLogHandler() },
            responder: listenerEchoResponder)
        let error = await #expect(throws: HTTPServerError.self) { try await second.run() }
        #expect(error?.code == .bindFailed)
        #expect(error?.errno == EADDRINUSE)
        #expect(error?.debugDescription.contains("127.0.0.1:\(port)") == true)
        await #expect(throws: HTTPServerError.self) { _ = try await second.waitUntilListening() }
    }
}

@Test func listener_InvalidHostIsRejected() async throws {
    var configuration = HTTPServerConfiguration()
    configuration.host = "not-an-address"
    let server = HTTPServer(
        configuration: configuration, logger: Logger(label: "listener-test") { _ in SwiftLogNoOpLogHandler() },
        responder: listenerEchoResponder)
    let error = await #expect(throws: HTTPServerError.self) { try await server.run() }
    #expect(error?.code == .invalidAddress)
}

@Test func listener_GracefulShutdownAnswersInFlightRequestAndReturns() async throws {
    let entered = ListenerTestGate()
    let release = ListenerTestGate()
    let responder: HTTPServer.Responder = { _ in
        entered.open()
        await release.wait()
        // Graceful shutdown is not cancellation: the responder's own work is not interrupted.
        return HTTPResponse(status: .ok, body: Array((Task.isCancelled ? "cancelled" : "done").utf8))
    }
    var configuration = HTTPServerConfiguration()
    configuration.host = "127.0.0.1"
    configuration.port = 0
    let logger = Logger(label: "listener-test") { _ in SwiftLogNoOpLogHandler() }
    let server = HTTPServer(configuration: configuration, logger: logger, responder: responder)
    let group = ServiceGroup(services: [server], logger: logger)
    let run = Task { try await group.run() }
    let port = try await server.waitUntilListening()

    let client = try await listenerBlocking {
        let client = try ListenerTestClient(port: port)
        try client.send(request("/a") + request("/b"))
        return client
    }
    await entered.wait()
    await group.triggerGracefulShutdown()
    // The trigger is asynchronous: wait until the listeners have closed before letting the responder finish.
    #expect(await listenerPortRefusesConnections(port))
    release.open()
    let responses = try await listenerBlocking { try [client.readResponse(), client.readResponse()] }
    #expect(responses.map(\.bodyText) == ["done", "done"])
    // Only the last response on the connection announces the close.
    #expect(responses.map { $0.headers["Connection"] } == ["keep-alive", "close"])
    #expect(try await listenerBlocking { try client.readsEOF() })
    client.closeWrite()
    try await run.value
}

@Test func listener_PipelineBeyondInFlightLimitIsAnsweredInOrder() async throws {
    let paths = (1...9).map { "/q/\($0)" }
    let inFlight = ListenerTestInFlight()
    let responder: HTTPServer.Responder = { request in
        await inFlight.pass(limit: 2, of: paths.count)
        return HTTPResponse(status: .ok, body: Array(request.path.utf8))
    }
    try await withListenerServer(configure: { $0.limits.maxPipelinedRequests = 2 }, responder: responder) { port in
        let bodies = try await listenerBlocking {
            let client = try ListenerTestClient(port: port, receiveTimeout: 30)
            try client.send(paths.map { request($0) }.joined())
            return try paths.map { _ in try client.readResponse().bodyText }
        }
        #expect(bodies == paths)
        #expect(inFlight.peak == 2)
    }
}

@Test func listener_ConcurrentRequestsAreCappedAcrossConnections() async throws {
    let clients = 5
    let inFlight = ListenerTestInFlight()
    let responder: HTTPServer.Responder = { _ in
        await inFlight.pass(limit: 2, of: clients)
        return HTTPResponse(status: .ok)
    }
    try await withListenerServer(configure: { $0.maxConcurrentRequests = 2 }, responder: responder) { port in
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<clients {
                group.addTask {
                    try await listenerBlocking {
                        let client = try ListenerTestClient(port: port)
                        try client.send(request("/c"))
                        return try client.readResponse().status
                    }
                }
            }
            for try await status in group { #expect(status == 200) }
        }
        #expect(inFlight.peak == 2)
    }
}

@Test func listener_LargeResponseSurvivesPartialWrites() async throws {
    let payload = (0..<(8 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    let responder: HTTPServer.Responder = { _ in HTTPResponse(status: .ok, body: payload) }
    try await withListenerServer(responder: responder) { port in
        let received = try await listenerBlocking {
            // 16 MiB through a 64 KiB receive window and a send buffer of at most tcp_wmem's 4 MiB: the
            // server's writes are partial and it must wait for EPOLLOUT, however fast this client reads.
            let client = try ListenerTestClient(port: port, receiveTimeout: 30, receiveBuffer: 64 << 10)
            try client.send(request("/big") + request("/big"))
            return try [client.readResponse().body, client.readResponse().body]
        }
        #expect(received[0] == payload)
        #expect(received[1] == payload)
    }
}

@Test func listener_HalfClosedClientStillGetsItsResponse() async throws {
    try await withListenerServer { port in
        try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send(request("/half", method: "POST", body: "x"))
            client.closeWrite()
            let response = try client.readResponse()
            #expect(response.bodyText == "POST /half x")
            #expect(response.headers["Connection"] == "close")
            #expect(try client.readsEOF())
        }
    }
}

@Test(.enabled(if: listenerDualStackAvailable, "this machine has no IPv6: a socket cannot listen on the dual-stack address ::"))
func listener_DualStackListenerReportsUnmappedIPv4Peer() async throws {
    var configuration = HTTPServerConfiguration()
    configuration.host = "::"
    configuration.port = 0
    configuration.eventLoopCount = 1
    let server = HTTPServer(
        configuration: configuration, logger: Logger(label: "listener-test") { _ in SwiftLogNoOpLogHandler() },
        responder: listenerEchoResponder)
    let run = Task { try await server.run() }
    let port = try await server.waitUntilListening()
    let response = try await listenerBlocking {
        let client = try ListenerTestClient(port: port)
        try client.send(request("/v4"))
        return try client.readResponse()
    }
    #expect(response.headers["X-Remote"] == "127.0.0.1")
    run.cancel()
    try await run.value
}

@Test func listener_PeerThatStopsReadingIsDroppedAfterIdleTimeout() async throws {
    // Larger than loopback socket buffers can absorb (receive buffers autotune up to tcp_rmem's maximum,
    // 32 MiB on Debian, plus up to 4 MiB of send buffer), so the server is left holding unsent output.
    let payload = [UInt8](repeating: 0x61, count: 96 << 20)
    let answered = ListenerTestGate()
    let responder: HTTPServer.Responder = { _ in
        answered.open()
        return HTTPResponse(status: .ok, body: payload)
    }
    let statistics = ListenerStatistics()
    try await withListenerServer(configure: { $0.limits.idleTimeout = .milliseconds(300) }, statistics: statistics, responder: responder) { port in
        let client = try await listenerBlocking {
            let client = try ListenerTestClient(port: port)
            try client.send(request("/huge"))
            return client
        }
        // Not reading until the server has given up: the connection was counted before the responder
        // ran, so a count of zero after it means the server closed it, however long that took.
        await answered.wait()
        let closed = try await eventually(within: .seconds(30)) { statistics.openConnections == 0 }
        #expect(closed, "the server kept a connection whose peer stopped reading")
        let completed = try await listenerBlocking { (try? client.readResponse().body.count) == payload.count }
        #expect(!completed)
    }
}
