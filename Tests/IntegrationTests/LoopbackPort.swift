import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A free loopback port, for a service that must know its own port before it listens (the callback URL
/// CI is given) or that is stopped and started again on it (a database made to fail).
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`): a port the kernel hands out for
/// port 0 is one it also gives to outgoing connections as their local port, so under load (benchmarks,
/// webhook deliveries, other suites) another socket may hold it by the time the service binds it again.
/// A port below that range is only ever bound on purpose.
func freeLoopbackPort() throws -> Int {
    let ephemeralStart = ephemeralPortRangeStart()
    let low = 10_000
    for _ in 0..<200 {
        let candidate = Int.random(in: low..<max(low + 1, ephemeralStart))
        if try isFreeLoopbackPort(candidate) { return candidate }
    }
    throw LoopbackPortError()
}

struct LoopbackPortError: Error, CustomStringConvertible {
    var description: String { "no free loopback port below the ephemeral range in 200 tries" }
}

/// The first port of the kernel's ephemeral range; 32768 (Linux's default) when it cannot be read.
private func ephemeralPortRangeStart() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
        let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first, let start = Int(first), start > 10_001
    else { return 32768 }
    return start
}

private func isFreeLoopbackPort(_ port: Int) throws -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(fd >= 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port)).bigEndian
    return withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}
