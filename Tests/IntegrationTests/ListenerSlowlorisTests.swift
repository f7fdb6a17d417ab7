import Dispatch
import Foundation
import HTTPListener
import HTTPWire
import Logging
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

private struct SlowlorisSocketError: Error, CustomStringConvertible {
    let operation: String
    let errno: Int32
    var description: String { "\(operation) failed: errno \(errno)" }
}

/// A TCP socket to `127.0.0.1:port` from the loopback address `source` (any of 127.0.0.0/8 works on Linux).
private func slowlorisSocket(from source: String, to port: Int, nonBlocking: Bool) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0), 0)
    guard fd >= 0 else { return -1 }
    var local = sockaddr_in()
    local.sin_family = sa_family_t(AF_INET)
    inet_pton(AF_INET, source, &local.sin_addr)
    var remote = sockaddr_in()
    remote.sin_family = sa_family_t(AF_INET)
    remote.sin_port = in_port_t(UInt16(port).bigEndian)
    inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
    let size = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) } }
    let connected = withUnsafePointer(to: &remote) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) } }
    guard bound == 0, connected == 0 || errno == EINPROGRESS else {
        close(fd)
        return -1
    }
    return fd
}

/// Connections that send part of a request head and then trickle a byte now and then, never finishing
/// it; one the server closes is opened again, so the pressure lasts. Its own thread does the work;
/// `stop()` waits for it to close everything.
private final class SlowlorisAttack: @unchecked Sendable {
    private let port: Int
    private let sources: [String]
    private let count: Int
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    /// Connections opened, re-openings included.
    let opened = Atomic<Int>(0)

    init(port: Int, count: Int, sources: [String]) {
        self.port = port
        self.count = count
        self.sources = sources
    }

    func start() {
        Thread.detachNewThread { self.run() }
    }

    func stop() {
        stopping.store(true, ordering: .relaxed)
        finished.wait()
    }

    private func run() {
        let head = Array("GET /slow HTTP/1.1\r\nHost: test\r\nX-Slow: ".utf8)
        var sockets = [Int32](repeating: -1, count: count)
        var headSent = [Bool](repeating: false, count: count)
        var scratch = [UInt8](repeating: 0, count: 4096)
        var round = 0
        while !stopping.load(ordering: .relaxed) {
            // Each connection is visited every 25th round, about twice a second: it trickles a byte, or,
            // when the server let go of it, it is opened again, as a slow-loris tool does.
            for index in stride(from: round % 25, to: count, by: 25) {
                let fd = sockets[index]
                if fd < 0 {
                    sockets[index] = slowlorisSocket(from: sources[index % sources.count], to: port, nonBlocking: true)
                    headSent[index] = false
                    if sockets[index] >= 0 { opened.add(1, ordering: .relaxed) }
                    continue
                }
                let received = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                let readError = errno
                // An answer (503, 408) or EOF or reset: the server let go of it.
                var dropped = received >= 0 || (readError != EAGAIN && readError != EWOULDBLOCK && readError != ENOTCONN)
                if !dropped {
                    let bytes = headSent[index] ? Array("x".utf8) : head
                    let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
                    if sent > 0 {
                        headSent[index] = true
                    } else if errno != EAGAIN, errno != EWOULDBLOCK {
                        dropped = true
                    }
                }
                if dropped {
                    close(fd)
                    sockets[index] = -1
                }
            }
            round += 1
            usleep(20_000)
        }
        for fd in sockets where fd >= 0 { close(fd) }
        finished.signal()
    }
}

/// One request on a fresh connection from 127.0.0.254 (an address no slow connection uses: CI is not the
/// attacker), as CI sends each callback: the status, how long it took, and how long passed between the
/// connection being established and the request being sent (this thread's scheduling, on a loaded machine).
private func freshConnectionRequest(port: Int) throws -> (status: Int, seconds: Double, sendDelay: Double) {
    let started = ContinuousClock.now
    let fd = slowlorisSocket(from: "127.0.0.254", to: port, nonBlocking: false)
    guard fd >= 0 else { throw SlowlorisSocketError(operation: "connect", errno: errno) }
    let connected = ContinuousClock.now
    defer { close(fd) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let request = Array("GET /fresh HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
        throw SlowlorisSocketError(operation: "send", errno: errno)
    }
    let sent = ContinuousClock.now
    var response: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while !response.contains(UInt8(ascii: "\n")) {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { break }
        response.append(contentsOf: chunk[0..<count])
    }
    let statusLine = String(decoding: response.prefix { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
    let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    func seconds(_ duration: Duration) -> Double { Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18 }
    return (status, seconds(ContinuousClock.now - started), seconds(sent - connected))
}

/// The source addresses of the slow connections: one, or eight.
enum SlowlorisSources: String, CaseIterable, Sendable {
    case oneAddress
    case manyAddresses

    var addresses: [String] {
        switch self {
        case .oneAddress: ["127.0.0.1"]
        case .manyAddresses: (2...9).map { "127.0.0.\($0)" }
        }
    }
}

/// 1,500 slow connections against 256 places (64 per address): from one address they hold only that
/// address's share; from eight (512 admissible) they fill the server, which then evicts the connections
/// quiet the longest for each new one. Either way a client that opens a fresh connection per request, as
/// CI does, is answered every time.
@Test(arguments: SlowlorisSources.allCases)
func listener_SlowConnectionsHoldingEveryPlace_DoNotLockOutFreshClients(_ sources: SlowlorisSources) async throws {
    if let limit = OpenFileLimit.raiseToHardLimit() {
        try #require(limit.after >= 4096, "this test holds about 1,800 descriptors on each side of loopback")
    }
    var configuration = HTTPServerConfiguration()
    configuration.host = "127.0.0.1"
    configuration.port = 0
    configuration.eventLoopCount = 2
    configuration.shutdownGracePeriod = .seconds(2)
    configuration.limits.maxConnections = 256
    configuration.limits.maxConnectionsPerPeer = 64
    let statistics = ListenerStatistics()
    // The fresh client's refusals by reason, so a failure says which path turned it away.
    let freshRefusals = Mutex<[HTTPRefusal.Reason: Int]>([:])
    let hooks = HTTPServerHooks(refusalObserver: { refusal, _ in
        if refusal.remoteAddress == "127.0.0.254" { freshRefusals.withLock { $0[refusal.reason, default: 0] += 1 } }
    })
    let server = HTTPServer(
        configuration: configuration, logger: Logger(label: "slowloris-test") { _ in SwiftLogNoOpLogHandler() }, statistics: statistics,
        hooks: hooks, responder: { _ in HTTPResponse(status: .ok, body: Array("fresh".utf8)) })
    let run = Task { try await server.run() }
    let port = try await server.waitUntilListening()
    let attack = SlowlorisAttack(port: port, count: 1500, sources: sources.addresses)
    attack.start()
    do {
        // Every slow connection has been tried once, and the server holds as many as it admits.
        let admitted = sources == .oneAddress ? 64 : 250
        let pressed = try await eventually(within: .seconds(30)) {
            attack.opened.load(ordering: .relaxed) >= 1500 && statistics.openConnections >= admitted
        }
        try #require(pressed, "the slow connections never filled the server: \(statistics.openConnections) open")
        let results = try await listenerBlocking { try (0..<200).map { _ in try freshConnectionRequest(port: port) } }
        let answered = results.filter { $0.status == 200 }.count
        let slowest = results.map(\.seconds).max() ?? 0
        let refusals = freshRefusals.withLock { $0.map { "\($0.key.rawValue): \($0.value)" }.sorted() }
        let others = results.filter { $0.status != 200 }.map { String(format: "%.3f s (sent after %.3f s)", $0.seconds, $0.sendDelay) }
        let longestSendDelay = results.map(\.sendDelay).max() ?? 0
        #expect(
            answered == 200,
            """
            \(answered) of 200 fresh requests answered 200; statuses \(Set(results.map(\.status)).sorted()); slowest \(slowest) s; \
            refusals \(refusals); the others took \(others); longest connect-to-send \(longestSendDelay) s
            """)
    } catch {
        try await listenerBlocking { attack.stop() }
        run.cancel()
        _ = try? await run.value
        throw error
    }
    try await listenerBlocking { attack.stop() }
    run.cancel()
    try await run.value
}
