import Dispatch
import Foundation
import Logging
import PostgresLibPQ
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The test cluster: `DATABASE_URL`, or the project-local cluster under `<repo>/.pgdata/run`.
private let databaseURL: String = {
    if let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty { return url }
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    return "postgresql://postgres@/ci_callbackd?host=\(repo)/.pgdata/run&port=54329"
}()

/// The cluster's TCP port on loopback (the proxy's upstream): the URL's `port`, else 54329.
private let clusterTCPPort: UInt16 = {
    let components = URLComponents(string: databaseURL)
    if let port = components?.port { return UInt16(port) }
    if let value = components?.queryItems?.first(where: { $0.name == "port" })?.value, let port = UInt16(value) { return port }
    return 54329
}()

/// `DATABASE_URL` with its host and port replaced by 127.0.0.1:`port` (user, database and options kept).
private func loopbackURL(port: UInt16, password: String? = nil) -> String {
    var components = URLComponents(string: databaseURL) ?? URLComponents()
    components.scheme = "postgresql"
    components.host = "127.0.0.1"
    components.port = Int(port)
    if components.user == nil { components.user = "postgres" }
    components.password = password
    if components.path.isEmpty || components.path == "/" { components.path = "/ci_callbackd" }
    components.queryItems = components.queryItems?.filter { $0.name != "host" && $0.name != "port" }
    if components.queryItems?.isEmpty == true { components.queryItems = nil }
    return components.string!
}

private func makeConfiguration(_ conninfo: String, size: Int) -> PostgresPool.Configuration {
    var configuration = PostgresPool.Configuration(conninfo: conninfo)
    configuration.size = size
    configuration.connectTimeout = .seconds(2)
    return configuration
}

private let quietLogger = Logger(label: "test.postgres.pool") { _ in SwiftLogNoOpLogHandler() }

@Suite(.serialized)
struct PostgresPoolTests {
    @Test func pool_HundredConcurrentCallsOnFourConnectionsAllSucceed() async throws {
        let pool = PostgresPool(configuration: makeConfiguration(databaseURL, size: 4), logger: quietLogger)
        let sums = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<100 {
                group.addTask {
                    try await pool.withConnection { connection in
                        try connection.query("SELECT \(index)::int + 1000 AS v").first?["v"].int ?? -1
                    }
                }
            }
            var values: [Int] = []
            for try await value in group { values.append(value) }
            return values
        }
        #expect(sums.sorted() == Array(1000..<1100))
        let statistics = pool.statistics
        #expect(statistics.size == 4)
        #expect(statistics.acquired == 100)
        #expect(statistics.open >= 1 && statistics.open <= 4)
        #expect(statistics.inUse == 0)
        #expect(statistics.waiting == 0)
        let backends = try await pool.withConnection { connection in
            try connection.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'ci-callbackd' AND pid = pg_backend_pid()")
                .first?["n"].int
        }
        #expect(backends == 1)
        await pool.close()
        #expect(pool.statistics.open == 0)
    }

    @Test func pool_StatisticsTrackLazyConnectsAndWaits() async throws {
        let pool = PostgresPool(configuration: makeConfiguration(databaseURL, size: 2), logger: quietLogger)
        let initial = pool.statistics
        #expect(initial == PostgresPool.Statistics(size: 2, open: 0, inUse: 0, waiting: 0, totalWaitSeconds: 0, acquired: 0))
        let inUseDuringCall = try await pool.withConnection { _ in pool.statistics.inUse }
        #expect(inUseDuringCall == 1)
        let after = pool.statistics
        #expect(after.open == 1)
        #expect(after.acquired == 1)
        #expect(after.inUse == 0)
        #expect(after.totalWaitSeconds >= 0 && after.totalWaitSeconds < 5)
        await pool.close()
    }

    @Test func pool_DeadPortThrowsConnectionFailedQuicklyAndLogsRedactedConninfo() async throws {
        let records = LogRecords()
        let logger = Logger(label: "test.postgres.pool") { _ in RecordingLogHandler(records: records) }
        let conninfo = loopbackURL(port: 1, password: "p4ss-secret")
        let pool = PostgresPool(configuration: makeConfiguration(conninfo, size: 2), logger: logger)
        for _ in 0..<3 {
            let started = ContinuousClock.now
            let error = await #expect(throws: PostgresError.self) {
                try await pool.withConnection { _ in 1 }
            }
            #expect(error?.code == .connectionFailed)
            #expect(error?.isConnectionProblem == true)
            #expect(ContinuousClock.now - started < .seconds(3))
        }
        #expect(pool.statistics.open == 0)
        #expect(pool.statistics.inUse == 0)
        await pool.close()
        let logged = records.all
        #expect(logged.contains { $0.message == "postgres connect failed" && $0.level == .warning })
        #expect(logged.contains { $0.metadata["db.conninfo"]?.contains("***") == true })
        #expect(!logged.contains { $0.rendered.contains("p4ss-secret") })
    }

    @Test func pool_RecoversWhenTheDatabaseComesBackWithoutRecreatingThePool() async throws {
        let proxy = TCPProxy(upstreamPort: clusterTCPPort)
        try proxy.start()
        defer { proxy.stop() }
        let pool = PostgresPool(configuration: makeConfiguration(loopbackURL(port: proxy.port), size: 2), logger: quietLogger)
        let query: @Sendable (PostgresConnection) throws -> Int? = { try $0.query("SELECT 1 AS one").first?["one"].int }

        #expect(try await pool.withConnection(query) == 1)

        proxy.stop()
        for _ in 0..<4 {
            let started = ContinuousClock.now
            let error = await #expect(throws: PostgresError.self) { try await pool.withConnection(query) }
            #expect(error?.isConnectionProblem == true)
            #expect(ContinuousClock.now - started < .seconds(3))
        }
        #expect(pool.statistics.open == 0)

        try proxy.start()
        for _ in 0..<4 {
            #expect(try await pool.withConnection(query) == 1)
        }
        #expect(pool.statistics.open >= 1)
        await pool.close()
    }

    @Test func pool_JobWaitingLongerThanAcquireTimeoutFailsWithTimeout() async throws {
        var configuration = makeConfiguration(databaseURL, size: 1)
        configuration.acquireTimeout = .milliseconds(200)
        let pool = PostgresPool(configuration: configuration, logger: quietLogger)
        // The only connection stays busy until the waiting job has failed: the timeout must come from the
        // pool's timer, not from the connection freeing up (no wall-clock bound needed to tell them apart).
        let release = DispatchSemaphore(value: 0)
        let holder = Task {
            try await pool.withConnection { connection in
                release.wait()
                return try connection.query("SELECT 1 AS one").first?["one"].int
            }
        }
        for _ in 0..<500 where pool.statistics.inUse < 1 {
            try await Task.sleep(for: .milliseconds(10))
        }
        try #require(pool.statistics.inUse == 1)
        // Without a working timer the waiter would wait for the holder forever; this lets it through
        // instead, so a broken timer fails the expectation below rather than hanging the run.
        let watchdog = Task {
            try await Task.sleep(for: .seconds(10))
            release.signal()
        }
        let started = ContinuousClock.now
        let error = await #expect(throws: PostgresError.self) { try await pool.withConnection { _ in 1 } }
        watchdog.cancel()
        #expect(error?.code == .timeout)
        #expect(error?.isConnectionProblem == true)
        #expect(ContinuousClock.now - started >= .milliseconds(150), "not before the acquire timeout")
        #expect(pool.statistics.inUse == 1, "the connection was still busy when the waiter timed out")
        release.signal()
        #expect(try await holder.value == 1)
        await pool.close()
    }

    @Test func pool_CancelledQueuedJobNeverRuns() async throws {
        let pool = PostgresPool(configuration: makeConfiguration(databaseURL, size: 1), logger: quietLogger)
        let ran = RanFlag()
        // The only connection is held until the test lets go, so the second job surely queues behind it
        // (waiting for states, not sleeping a fixed time: the machine may be loaded).
        let release = DispatchSemaphore(value: 0)
        let blocker = Task { try await pool.withConnection { _ in release.wait() } }
        for _ in 0..<1000 where pool.statistics.inUse < 1 {
            try await Task.sleep(for: .milliseconds(5))
        }
        let queued = Task {
            try await pool.withConnection { _ in ran.set() }
        }
        for _ in 0..<1000 where pool.statistics.waiting < 1 {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(pool.statistics.waiting == 1)
        queued.cancel()
        let outcome = await queued.result
        #expect(throws: CancellationError.self) { try outcome.get() }
        #expect(pool.statistics.waiting == 0)
        release.signal()
        _ = try await blocker.value
        #expect(!ran.isSet)
        await pool.close()
    }

    @Test func pool_BodyErrorIsRethrownAndHealthyConnectionKept() async throws {
        let pool = PostgresPool(configuration: makeConfiguration(databaseURL, size: 1), logger: quietLogger)
        let firstPID = try await pool.withConnection { Int($0.backendPID) }
        let error = await #expect(throws: PostgresError.self) {
            try await pool.withConnection { try $0.query("SELECT 1/0") }
        }
        #expect(error?.sqlState == "22012")
        let secondPID = try await pool.withConnection { Int($0.backendPID) }
        #expect(firstPID == secondPID)
        await pool.close()
    }

    @Test func pool_RollsBackATransactionTheBodyLeftOpen() async throws {
        let pool = PostgresPool(configuration: makeConfiguration(databaseURL, size: 1), logger: quietLogger)
        let table = "pg_pool_\(UInt32.random(in: 0...UInt32.max))"
        try await pool.withConnection { connection in
            try connection.execute(simpleSQL: "CREATE TEMP TABLE \(table) (v int)")
            try connection.execute(simpleSQL: "BEGIN")
            try connection.query("INSERT INTO \(unsafeRaw: table) VALUES (\(1))")
        }
        let count = try await pool.withConnection { connection in
            try connection.query("SELECT count(*)::int AS n FROM \(unsafeRaw: table)").first?["n"].int
        }
        #expect(count == 0)
        await pool.close()
    }

    @Test func pool_CloseLetsQueuedWorkFinishAndReturnsPromptly() async throws {
        let pool = PostgresPool(configuration: makeConfiguration(databaseURL, size: 1), logger: quietLogger)
        let finished = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<4 {
                group.addTask {
                    try await pool.withConnection { connection in
                        try connection.query("SELECT pg_sleep(0.1)")
                        return index
                    }
                }
            }
            var queuedAtClose = 0
            for _ in 0..<300 {
                queuedAtClose = pool.statistics.waiting
                if queuedAtClose >= 3 { break }
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(queuedAtClose >= 3)
            let started = ContinuousClock.now
            await pool.close()
            #expect(ContinuousClock.now - started < .seconds(2))
            var finished: [Int] = []
            for try await index in group { finished.append(index) }
            return finished
        }
        #expect(finished.sorted() == [0, 1, 2, 3])
        #expect(pool.statistics.open == 0)
    }

    @Test func pool_CloseIsIdempotentAndRejectsLaterWork() async throws {
        let pool = PostgresPool(configuration: makeConfiguration(databaseURL, size: 2), logger: quietLogger)
        #expect(try await pool.withConnection { _ in 5 } == 5)
        await pool.close()
        await pool.close()
        let error = await #expect(throws: PostgresError.self) { try await pool.withConnection { _ in 1 } }
        #expect(error?.code == .poolClosed)
        #expect(error?.isConnectionProblem == false)
        #expect(pool.statistics.open == 0)
    }
}

private final class RanFlag: Sendable {
    private let value = Mutex(false)

    func set() { self.value.withLock { $0 = true } }
    var isSet: Bool { self.value.withLock { $0 } }
}

// MARK: - Log capture

private struct LogRecord: Sendable {
    var level: Logger.Level
    var message: String
    var metadata: [String: String]

    var rendered: String { "\(self.message) \(self.metadata)" }
}

private final class LogRecords: Sendable {
    private let records = Mutex<[LogRecord]>([])

    func append(_ record: LogRecord) {
        self.records.withLock { $0.append(record) }
    }

    var all: [LogRecord] { self.records.withLock { $0 } }
}

private struct RecordingLogHandler: LogHandler {
    let records: LogRecords
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = self.metadata
        merged.merge(event.metadata ?? [:]) { $1 }
        self.records.append(
            LogRecord(level: event.level, message: "\(event.message)", metadata: merged.mapValues { "\($0)" })
        )
    }
}

// MARK: - Loopback TCP proxy

/// Forwards 127.0.0.1:`port` to the cluster's TCP port, so a test can make the database "go away" (stop:
/// refuse new connections and cut open ones) and "come back" (start again on the same port).
private final class TCPProxy: @unchecked Sendable {
    // `lock` guards `listener`, `openSockets` and `acceptDone`; `upstreamPort` is immutable and `port` is
    // written only by start(), which the test calls from one task.
    private let lock = NSLock()
    private let upstreamPort: UInt16
    private(set) var port: UInt16 = 0
    private var listener: Int32 = -1
    private var openSockets: Set<Int32> = []
    private var acceptDone: DispatchSemaphore?

    init(upstreamPort: UInt16) {
        self.upstreamPort = upstreamPort
    }

    struct SocketFailure: Error {
        var call: String
        var code: Int32
    }

    func start() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketFailure(call: "socket", code: errno) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: self.port)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            let code = errno
            close(fd)
            throw SocketFailure(call: "bind/listen", code: code)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = UInt16(bigEndian: address.sin_port)
        let done = DispatchSemaphore(value: 0)
        self.lock.withLock {
            self.listener = fd
            self.acceptDone = done
        }
        Thread { [self] in
            self.acceptLoop(fd)
            done.signal()
        }.start()
    }

    /// Refuses new connections and cuts every forwarded one; returns once the port is free again.
    func stop() {
        let (fd, sockets, done) = self.lock.withLock {
            let state = (self.listener, self.openSockets, self.acceptDone)
            self.listener = -1
            self.acceptDone = nil
            return state
        }
        if fd >= 0 {
            shutdown(fd, Int32(SHUT_RDWR))
        }
        for socket in sockets {
            shutdown(socket, Int32(SHUT_RDWR))
        }
        done?.wait()
    }

    private func acceptLoop(_ listener: Int32) {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                break
            }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: self.upstreamPort)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            let accepted = self.lock.withLock {
                guard connected == 0, self.listener == listener else { return false }
                self.openSockets.formUnion([client, upstream])
                return true
            }
            guard accepted else {
                close(client)
                close(upstream)
                continue
            }
            let pair = SocketPair(client: client, upstream: upstream) { [self] in
                self.lock.withLock { self.openSockets.subtract([client, upstream]) }
            }
            Thread { pair.pump(from: client, to: upstream) }.start()
            Thread { pair.pump(from: upstream, to: client) }.start()
        }
        close(listener)
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }
}

/// Two forwarding directions of one proxied connection; the second to finish closes both sockets.
private final class SocketPair: @unchecked Sendable {
    // `finished` is guarded by `lock`; the descriptors are immutable.
    private let lock = NSLock()
    private var finished = 0
    private let client: Int32
    private let upstream: Int32
    private let onClose: @Sendable () -> Void

    init(client: Int32, upstream: Int32, onClose: @escaping @Sendable () -> Void) {
        self.client = client
        self.upstream = upstream
        self.onClose = onClose
    }

    func pump(from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        loop: while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            var offset = 0
            while offset < count {
                let written = buffer.withUnsafeBytes { send(destination, $0.baseAddress! + offset, count - offset, Int32(MSG_NOSIGNAL)) }
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { break loop }
                offset += written
            }
        }
        shutdown(source, Int32(SHUT_RDWR))
        shutdown(destination, Int32(SHUT_RDWR))
        let last = self.lock.withLock {
            self.finished += 1
            return self.finished == 2
        }
        if last {
            self.onClose()
            close(self.client)
            close(self.upstream)
        }
    }
}
