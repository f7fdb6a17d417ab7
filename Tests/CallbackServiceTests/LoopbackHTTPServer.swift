import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A small HTTP/1.1 server on 127.0.0.1 for the webhook client's tests, a thread per connection, keeping
/// connections open between requests. It answers by path:
/// - `/STATUS` or `/STATUS/RETRY_AFTER`: that status (and `Retry-After` header), with an empty body;
/// - `/held`: 200 once ``release()`` is called, counting the requests held meanwhile;
/// - `/never`: no answer at all, until the client closes the connection;
/// - `/slow/MILLISECONDS`: 200 after that long;
/// - `/big`: 200 with a 100 KiB body.
final class LoopbackHTTPServer: @unchecked Sendable {
    // @unchecked: every `var` below is read and written only with `condition` locked.
    private let condition = NSCondition()
    private let listener: Int32
    let port: Int

    private var acceptedCount = 0
    private var closedCount = 0
    private var heldCount = 0
    private var mostHeldCount = 0
    private var answeredCount = 0
    private var released = false
    private var stopped = false
    /// The accept loop has closed the listener: its descriptor number may belong to another socket of
    /// this process now (the test process shares it with every other suite), so it is never touched again.
    private var listenerClosed = false
    private var connections: Set<Int32> = []
    private var requests: [Request] = []

    /// A request as received.
    struct Request: Sendable {
        var path: String
        /// Header names lowercased.
        var headers: [String: String]
        var body: [UInt8]
    }

    struct ServerError: Error, CustomStringConvertible {
        var description: String
    }

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw ServerError(description: "socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(listener, socketAddress, length) == 0 && listen(listener, 128) == 0 && getsockname(listener, socketAddress, &length) == 0
            }
        }
        guard bound else {
            close(listener)
            throw ServerError(description: "bind/listen: errno \(errno)")
        }
        self.listener = listener
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "test-http-accept"
        thread.start()
    }

    func url(_ path: String, host: String = "127.0.0.1") -> String { "http://\(host):\(port)\(path)" }

    /// Connections accepted so far.
    var accepted: Int { locked { acceptedCount } }
    /// Connections that ended so far (closed by the client).
    var closed: Int { locked { closedCount } }
    /// `/held` requests waiting for ``release()`` now.
    var held: Int { locked { heldCount } }
    /// The most `/held` requests that waited at once.
    var mostHeld: Int { locked { mostHeldCount } }
    /// Requests answered so far.
    var answered: Int { locked { answeredCount } }
    /// Every request received, in arrival order.
    var received: [Request] { locked { requests } }

    /// Answers the `/held` requests waiting, and every later one at once.
    func release() {
        locked {
            released = true
            condition.broadcast()
        }
    }

    /// Stops accepting, and ends every connection.
    func stop() {
        locked {
            stopped = true
            released = true
            condition.broadcast()
            for connection in connections { shutdown(connection, Int32(SHUT_RDWR)) }
            if !listenerClosed { shutdown(listener, Int32(SHUT_RDWR)) }
        }
    }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }

    private func acceptLoop() {
        defer {
            locked {
                listenerClosed = true
                close(listener)
            }
        }
        while true {
            let connection = accept(listener, nil, nil)
            if connection < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            let keep = locked {
                if stopped { return false }
                acceptedCount += 1
                connections.insert(connection)
                return true
            }
            guard keep else {
                close(connection)
                return
            }
            let thread = Thread { [self] in serve(connection) }
            thread.name = "test-http-connection"
            thread.start()
        }
    }

    private func serve(_ connection: Int32) {
        defer {
            locked {
                connections.remove(connection)
                closedCount += 1
            }
            close(connection)
        }
        var buffer: [UInt8] = []
        while let request = readRequest(connection, &buffer) {
            locked { requests.append(request) }
            let parts = request.path.split(separator: "/").map(String.init)
            var status = 200
            var headers = ""
            var body: [UInt8] = []
            switch parts.first {
            case "never":
                // Read until the client gives up and closes.
                var byte: UInt8 = 0
                while read(connection, &byte, 1) > 0 {}
                return
            case "held":
                locked {
                    heldCount += 1
                    mostHeldCount = max(mostHeldCount, heldCount)
                    while !released { condition.wait() }
                    heldCount -= 1
                }
            case "slow":
                usleep(useconds_t((parts.count > 1 ? Int(parts[1]) ?? 0 : 0) * 1000))
            case "big":
                body = Array(repeating: UInt8(ascii: "x"), count: 100 * 1024)
            default:
                status = parts.first.flatMap { Int($0) } ?? 404
                if parts.count > 1 { headers = "Retry-After: \(parts[1])\r\n" }
            }
            let head = "HTTP/1.1 \(status) Test\r\nContent-Length: \(body.count)\r\n\(headers)\r\n"
            guard writeAll(connection, Array(head.utf8) + body) else { return }
            locked { answeredCount += 1 }
        }
    }

    /// The next request on the connection; nil once it is closed (or malformed).
    private func readRequest(_ connection: Int32, _ buffer: inout [UInt8]) -> Request? {
        let separator = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while true {
            headEnd = buffer.indices.dropLast(3).first { buffer[$0..<$0 + 4].elementsEqual(separator) }
            if headEnd != nil { break }
            guard readMore(connection, &buffer) else { return nil }
        }
        guard let headEnd else { return nil }
        let lines = String(decoding: buffer[..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
        let requestLine = lines[0].split(separator: " ")
        guard requestLine.count == 3 else { return nil }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = headers["content-length"].flatMap { Int($0) } ?? 0
        let bodyStart = headEnd + 4
        while buffer.count < bodyStart + length {
            guard readMore(connection, &buffer) else { return nil }
        }
        let body = Array(buffer[bodyStart..<bodyStart + length])
        buffer.removeFirst(bodyStart + length)
        return Request(path: String(requestLine[1]), headers: headers, body: body)
    }

    private func readMore(_ connection: Int32, _ buffer: inout [UInt8]) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let count = read(connection, &chunk, chunk.count)
        guard count > 0 else { return false }
        buffer.append(contentsOf: chunk[..<count])
        return true
    }

    private func writeAll(_ connection: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written <= 0 { return false }
            offset += written
        }
        return true
    }
}
