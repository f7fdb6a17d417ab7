import CEpoll
#if canImport(Glibc)
import Glibc
#endif

/// A parsed bind address: IPv4 or IPv6 literal, no name resolution.
struct BindAddress: Sendable {
    enum Family: Sendable {
        case ipv4(in_addr)
        case ipv6(in6_addr)
    }

    let family: Family
    let host: String
    let port: Int
    /// `"::"`: accept IPv4 too (IPV6_V6ONLY off).
    let dualStack: Bool

    init(host rawHost: String, port: Int) throws(HTTPServerError) {
        var host = rawHost
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "localhost" { host = "127.0.0.1" }
        self.host = host
        self.port = port
        guard (0...65535).contains(port) else { throw HTTPServerError(.invalidAddress, address: "\(rawHost):\(port)") }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            family = .ipv4(v4)
            dualStack = false
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 {
            family = .ipv6(v6)
            dualStack = host == "::"
            return
        }
        throw HTTPServerError(.invalidAddress, address: "\(rawHost):\(port)")
    }

    /// Creates, binds and listens one non-blocking socket.
    ///
    /// No `SO_REUSEPORT`: with it, a second process (another instance, even another version) could bind
    /// the same port and silently take part of the traffic. Without it, `bind(2)` itself refuses with
    /// `EADDRINUSE` while any other socket listens on the port, atomically, so there is no window in which
    /// two instances starting at once both succeed. `SO_REUSEADDR` only lets a restart bind while old
    /// connections sit in TIME_WAIT; on Linux it never lets two sockets listen on one port.
    func listen(backlog: Int32 = 1024) throws(HTTPServerError) -> (fd: Int32, port: Int) {
        let address = BindAddress.describe(family: family, host: host, port: port)
        let domain: Int32
        switch family {
        case .ipv4: domain = AF_INET
        case .ipv6: domain = AF_INET6
        }
        let fd = cepoll_socket(domain)
        guard fd >= 0 else { throw .systemCall(.socketFailed, address: address) }
        var success = false
        defer { if !success { close(fd) } }

        guard setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) else { throw .systemCall(.socketFailed, address: address) }
        let result: Int32
        switch family {
        case .ipv4(let addr):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = in_port_t(UInt16(port).bigEndian)
            sin.sin_addr = addr
            result = withUnsafePointer(to: &sin) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .ipv6(let addr):
            guard setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, dualStack ? 0 : 1) else {
                throw .systemCall(.socketFailed, address: address)
            }
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = in_port_t(UInt16(port).bigEndian)
            sin6.sin6_addr = addr
            result = withUnsafePointer(to: &sin6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
        guard result == 0 else { throw .systemCall(.bindFailed, address: address) }
        guard Glibc.listen(fd, backlog) == 0 else { throw .systemCall(.listenFailed, address: address) }

        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw .systemCall(.socketFailed, address: address) }
        success = true
        return (fd, SocketText.port(of: storage))
    }

    static func describe(family: Family, host: String, port: Int) -> String {
        switch family {
        case .ipv4: "\(host):\(port)"
        case .ipv6: "[\(host)]:\(port)"
        }
    }
}

func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) -> Bool {
    var value = value
    return setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0
}

/// Text forms of socket addresses.
enum SocketText {
    /// The peer IP as text; an IPv4-mapped IPv6 address (a dual-stack listener's IPv4 peer) is unmapped to
    /// dotted form so logs and allow-lists see one spelling per client.
    static func host(of storage: sockaddr_storage) -> String {
        var storage = storage
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(storage.ss_family) {
        case AF_INET:
            let ok = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var addr = sin.pointee.sin_addr
                    return inet_ntop(AF_INET, &addr, &buffer, socklen_t(buffer.count)) != nil
                }
            }
            return ok ? Self.string(fromNulTerminated: buffer) : ""
        case AF_INET6:
            let ok = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var addr = sin6.pointee.sin6_addr
                    let bytes = withUnsafeBytes(of: &addr) { Array($0) }
                    if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
                        var v4 = in_addr()
                        withUnsafeMutableBytes(of: &v4) { $0.copyBytes(from: bytes[12..<16]) }
                        return inet_ntop(AF_INET, &v4, &buffer, socklen_t(buffer.count)) != nil
                    }
                    return inet_ntop(AF_INET6, &addr, &buffer, socklen_t(buffer.count)) != nil
                }
            }
            return ok ? Self.string(fromNulTerminated: buffer) : ""
        default:
            return ""
        }
    }

    private static func string(fromNulTerminated buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func port(of storage: sockaddr_storage) -> Int {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
        default:
            return 0
        }
    }
}

/// Monotonic time in nanoseconds, for deadlines.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func closeDescriptor(_ fd: Int32) {
    _ = close(fd)
}
