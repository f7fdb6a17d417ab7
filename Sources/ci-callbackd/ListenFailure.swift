import HTTPListener
#if canImport(Glibc)
import Glibc
#endif

/// Why `serve` could not listen, in words an operator can act on; ArgumentParser prints it as
/// `Error: …` and exits non-zero.
struct ListenFailure: Error, CustomStringConvertible {
    let underlying: HTTPServerError

    var description: String {
        let address = underlying.address
        switch (underlying.code, underlying.errno) {
        case (.bindFailed, EADDRINUSE):
            return "cannot listen on \(address): the port is in use by another process (another ci-callbackd?). "
                + "Stop it, or choose another port with --port / PORT."
        case (.bindFailed, EACCES):
            return "cannot listen on \(address): permission denied (ports below 1024 need CAP_NET_BIND_SERVICE). "
                + "Choose another port with --port / PORT."
        case (.bindFailed, EADDRNOTAVAIL):
            return "cannot listen on \(address): no local interface has this address. Check --host / HOST."
        case (.invalidAddress, _):
            return "cannot listen on \(address): --host / HOST must be an IPv4 or IPv6 literal (or localhost) and the port 0-65535."
        default:
            return "cannot listen on \(address): \(underlying.debugDescription)"
        }
    }
}
