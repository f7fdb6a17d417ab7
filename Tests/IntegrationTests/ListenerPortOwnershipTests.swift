import Foundation
import HTTPListener
import HTTPWire
import Logging
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

// One instance per port: a second server (another loop count, another process, another version) must
// fail to bind a port that a running server holds, instead of silently sharing its traffic.

private let portTestLogger = Logger(label: "listener-port-test") { _ in SwiftLogNoOpLogHandler() }

private func portTestConfiguration(port: Int, loops: Int) -> HTTPServerConfiguration {
    var configuration = HTTPServerConfiguration()
    configuration.host = "127.0.0.1"
    configuration.port = port
    configuration.eventLoopCount = loops
    configuration.shutdownGracePeriod = .seconds(2)
    return configuration
}

private let portTestResponder: HTTPServer.Responder = { _ in HTTPResponse(status: .ok, body: Array("held".utf8)) }

/// Runs a server with `loops` event loops on an ephemeral loopback port for the duration of `body`.
private func withHeldPort(loops: Int, _ body: (Int) async throws -> Void) async throws {
    let server = HTTPServer(configuration: portTestConfiguration(port: 0, loops: loops), logger: portTestLogger, responder: portTestResponder)
    let run = Task { try await server.run() }
    do {
        try await body(try await server.waitUntilListening())
    } catch {
        run.cancel()
        _ = try? await run.value
        throw error
    }
    run.cancel()
    try await run.value
}

/// One GET on a fresh connection, on its own thread: a blocking read on the cooperative pool (two
/// threads on two cores) would starve the very responder it waits for.
private func portTestGet(port: Int) async throws -> String {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue(label: "listener-port-client").async { continuation.resume(with: Result { try portTestGetBlocking(port: port) }) }
    }
}

/// One GET on a fresh connection, with a receive timeout; the whole reply as text.
private func portTestGetBlocking(port: Int) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(fd >= 0)
    defer { close(fd) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    try #require(connected == 0)
    let request = Array("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
    try #require(request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == request.count)
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count <= 0 { break }
        received.append(contentsOf: chunk[0..<count])
    }
    return String(decoding: received, as: UTF8.self)
}

@Test func listener_SecondServerWithSeveralLoopsOnHeldPortFailsToBind() async throws {
    try await withHeldPort(loops: 2) { port in
        let second = HTTPServer(configuration: portTestConfiguration(port: port, loops: 2), logger: portTestLogger, responder: portTestResponder)
        let secondRun = Task { try await second.run() }
        // waitUntilListening throws run()'s bind error; a port means the second server joined the first.
        do {
            let joined = try await second.waitUntilListening()
            Issue.record("a second server listens on the held port \(joined)")
            secondRun.cancel()
        } catch let error as HTTPServerError {
            #expect(error.code == .bindFailed)
            #expect(error.errno == EADDRINUSE)
            #expect(error.address == "127.0.0.1:\(port)")
        }
        _ = try? await secondRun.value
        // The holder is unaffected, and its loops still share the port: every connection is answered by it.
        for _ in 0..<8 {
            let reply = try await portTestGet(port: port)
            #expect(reply.hasPrefix("HTTP/1.1 200"))
            #expect(reply.hasSuffix("held"))
        }
    }
}

@Test func listener_ManyConnectionsToSeveralLoopsAreAllAnswered() async throws {
    try await withHeldPort(loops: 3) { port in
        // Every connection is opened and sent before any is read, so the loops take them as a burst. One
        // thread does it all: dozens of threads blocked in read would starve the rest of the suite.
        let replies: [String] = try await withCheckedThrowingContinuation { continuation in
            DispatchQueue(label: "listener-port-burst").async {
                continuation.resume(with: Result { try portTestBurst(port: port, connections: 32) })
            }
        }
        #expect(replies.count == 32)
        #expect(replies.allSatisfy { $0.hasSuffix("held") }, "\(replies.count { !$0.hasSuffix("held") }) of 32 unanswered")
    }
}

/// Opens `connections` connections, sends a GET on each, then reads each reply to the end.
private func portTestBurst(port: Int, connections: Int) throws -> [String] {
    var descriptors: [Int32] = []
    defer { for fd in descriptors { close(fd) } }
    let request = Array("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
    for _ in 0..<connections {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        descriptors.append(fd)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
        try #require(request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == request.count)
    }
    return descriptors.map { fd in
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            received.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: received, as: UTF8.self)
    }
}

@Test func serve_SecondInstanceOnHeldPortExitsNonZeroNamingTheAddress() async throws {
    let executable = try builtServiceBinary()
    try await withHeldPort(loops: 2) { port in
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = testDatabaseURL
        environment["LOG_LEVEL"] = "error"
        let files = try OutputFiles(name: "serve-held-port")
        defer { files.remove() }
        let process = try ChildProcess(
            executable.path, ["serve", "--host", "127.0.0.1", "--port", "\(port)", "--no-auto-migrate"], environment: environment,
            workingDirectory: repositoryRoot.path, standardOutput: .discard, standardError: .file(files.errors))
        guard let status = try? await process.exit(within: .seconds(30)) else {
            await process.stop(grace: .zero)
            Issue.record("a second ci-callbackd on a held port was still running after 30 s")
            return
        }
        let stderrText = files.read(files.errors)
        #expect(status.code != 0, "\(status)")
        #expect(stderrText.contains("127.0.0.1:\(port)"), "stderr: \(stderrText)")
        #expect(stderrText.contains("in use by another process"), "stderr: \(stderrText)")
        // The first instance still owns the port.
        #expect(try await portTestGet(port: port).hasSuffix("held"))
    }
}
