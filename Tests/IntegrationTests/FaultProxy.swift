import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP proxy on loopback between the service and PostgreSQL, which a test switches between faults:
/// - ``Mode/forward``: a plain proxy;
/// - ``Mode/blackhole``: nothing is read or forwarded and nothing is closed, on old and new connections
///   alike, as when packets are silently dropped (the kernel still accepts connections);
/// - ``Mode/refuse``: new connections are closed at once; open ones keep forwarding;
/// - ``cutAfterCommit(marker:then:)``: the next command carrying `marker` (a Bind with the callback's JobId)
///   reaches the server with its Sync; the proxy swallows the server's answers up to ReadyForQuery, which
///   the server sends only after the commit, and then closes that connection. So the commit has landed and
///   its acknowledgement is lost, every time.
///
/// Threads and blocking sockets: a test proxy for a handful of connections, not a server.
final class FaultProxy: Sendable {
    enum Mode: Sendable, Equatable {
        case forward
        case blackhole
        case refuse
    }

    /// The proxy's port on 127.0.0.1.
    let port: Int
    private let upstreamPort: Int
    private let listener: Int32

    private struct State {
        var mode = Mode.forward
        var cutMarker: [UInt8]?
        var modeAfterCut = Mode.forward
        var cuts = 0
        var stopped = false
        var sockets: Set<Int32> = []
        var threads = 0
    }

    /// Shared by the test (mode changes) and the proxy's threads.
    private let state = Mutex(State())

    /// Listens on an ephemeral loopback port and forwards to `127.0.0.1:upstreamPort`.
    init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound && listen(fd, 128) == 0)
        self.listener = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        startThread { [self] in self.acceptLoop() }
    }

    var mode: Mode {
        get { state.withLock { $0.mode } }
        set { state.withLock { $0.mode = newValue } }
    }

    /// Connections cut by ``cutAfterCommit(marker:then:)`` so far.
    var cuts: Int { state.withLock { $0.cuts } }

    /// Arms a cut of the next connection whose client sends `marker`; after the cut the proxy switches to `then`.
    func cutAfterCommit(marker: String, then: Mode = .forward) {
        state.withLock { state in
            state.cutMarker = Array(marker.utf8)
            state.modeAfterCut = then
        }
    }

    /// Closes everything and waits (bounded) for the proxy's threads to end.
    func stop() async {
        let sockets = state.withLock { state in
            state.stopped = true
            return state.sockets
        }
        for fd in sockets { shutdown(fd, Int32(SHUT_RDWR)) }
        shutdown(listener, Int32(SHUT_RDWR))
        let deadline = ContinuousClock.now + .seconds(5)
        while state.withLock({ $0.threads }) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        close(listener)
    }

    /// libpq's URI to PostgreSQL through this proxy, for database `database`; plain TCP without TLS or
    /// GSS negotiation, so the proxy can follow the protocol's messages from the first byte.
    func databaseURL(database: String) -> String {
        "postgresql://postgres@127.0.0.1:\(port)/\(database)?sslmode=disable&gssencmode=disable"
    }

    // MARK: Threads

    private var stopped: Bool { state.withLock { $0.stopped } }

    private func startThread(_ body: @escaping @Sendable () -> Void) {
        state.withLock { $0.threads += 1 }
        Thread.detachNewThread { [self] in
            body()
            self.state.withLock { $0.threads -= 1 }
        }
    }

    private func acceptLoop() {
        while !stopped {
            guard Self.waitReadable(listener, milliseconds: 50) else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            if mode == .refuse || stopped {
                close(client)
                continue
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: upstreamPort)
            let connected = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            guard connected else {
                close(client)
                close(upstream)
                continue
            }
            let link = Link(client: client, upstream: upstream)
            state.withLock { state in
                state.sockets.insert(client)
                state.sockets.insert(upstream)
            }
            startThread { [self] in self.pump(link, fromClient: true) }
            startThread { [self] in self.pump(link, fromClient: false) }
        }
    }

    /// One direction of one connection. Reads only while not blackholed; a chunk read just before a
    /// blackhole began is held until it ends.
    private func pump(_ link: Link, fromClient: Bool) {
        let source = fromClient ? link.client : link.upstream
        let destination = fromClient ? link.upstream : link.client
        var framer = MessageFramer(startsWithUntypedMessage: fromClient)
        var buffer = [UInt8](repeating: 0, count: 65536)
        loop: while !stopped {
            if mode == .blackhole {
                usleep(10_000)
                continue
            }
            guard Self.waitReadable(source, milliseconds: 50) else { continue }
            let count = read(source, &buffer, buffer.count)
            guard count > 0 else { break }
            while mode == .blackhole && !stopped { usleep(10_000) }
            let chunk = Array(buffer[0..<count])
            let messages = framer.feed(chunk)
            if fromClient {
                for message in messages { self.observeClientMessage(message, link: link) }
            } else if link.cutPending.load(ordering: .acquiring) {
                // Everything the server says after the marked command is swallowed; its ReadyForQuery,
                // sent after the commit, is the moment to cut.
                if link.syncForwarded.load(ordering: .acquiring), messages.contains(where: { $0.type == UInt8(ascii: "Z") }) {
                    self.cut(link)
                    break loop
                }
                continue
            }
            guard Self.writeAll(destination, chunk) else { break }
            if fromClient && link.cutPending.load(ordering: .acquiring) && messages.contains(where: { $0.type == UInt8(ascii: "S") }) {
                link.syncForwarded.store(true, ordering: .releasing)
            }
        }
        shutdown(destination, Int32(SHUT_WR))
        if link.finishDirection() {
            state.withLock { state in
                state.sockets.remove(link.client)
                state.sockets.remove(link.upstream)
            }
            close(link.client)
            close(link.upstream)
        }
    }

    private func observeClientMessage(_ message: MessageFramer.Message, link: Link) {
        guard message.type == UInt8(ascii: "B") else { return }
        let armed: Bool = state.withLock { state in
            guard let marker = state.cutMarker, Self.contains(message.body, marker) else { return false }
            state.cutMarker = nil
            return true
        }
        if armed { link.cutPending.store(true, ordering: .releasing) }
    }

    private func cut(_ link: Link) {
        shutdown(link.client, Int32(SHUT_RDWR))
        shutdown(link.upstream, Int32(SHUT_RDWR))
        state.withLock { state in
            state.cuts += 1
            state.mode = state.modeAfterCut
        }
    }

    // MARK: Sockets

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }

    private static func waitReadable(_ fd: Int32, milliseconds: Int32) -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, milliseconds) > 0
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    private static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}

/// One proxied connection: its two sockets and what its two pumps tell each other.
private final class Link: Sendable {
    let client: Int32
    let upstream: Int32
    /// The client sent the marked command: the server's answers from here on are swallowed.
    let cutPending = Atomic<Bool>(false)
    /// The Sync that ends the marked command reached the server.
    let syncForwarded = Atomic<Bool>(false)
    private let openDirections = Atomic<Int>(2)

    init(client: Int32, upstream: Int32) {
        self.client = client
        self.upstream = upstream
    }

    /// True for the second direction to finish: it closes the sockets.
    func finishDirection() -> Bool {
        openDirections.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0
    }
}

/// Splits a PostgreSQL protocol byte stream into messages: a type byte and a length that counts itself.
/// The client's first message (startup, or a cancel request) has no type byte.
struct MessageFramer {
    struct Message {
        /// 0 for the untyped first message.
        var type: UInt8
        var body: [UInt8]
    }

    private var untypedNext: Bool
    private var pending: [UInt8] = []

    init(startsWithUntypedMessage: Bool) {
        self.untypedNext = startsWithUntypedMessage
    }

    /// The messages `bytes` completes.
    mutating func feed(_ bytes: [UInt8]) -> [Message] {
        pending += bytes
        var messages: [Message] = []
        var offset = 0
        while true {
            let headerSize = untypedNext ? 4 : 5
            guard pending.count - offset >= headerSize else { break }
            let lengthStart = offset + (untypedNext ? 0 : 1)
            let length = pending[lengthStart..<(lengthStart + 4)].reduce(0) { $0 << 8 | Int($1) }
            let total = (untypedNext ? 0 : 1) + length
            guard length >= 4, pending.count - offset >= total else { break }
            messages.append(Message(type: untypedNext ? 0 : pending[offset], body: Array(pending[(lengthStart + 4)..<(offset + total)])))
            offset += total
            untypedNext = false
        }
        pending.removeFirst(offset)
        return messages
    }
}
