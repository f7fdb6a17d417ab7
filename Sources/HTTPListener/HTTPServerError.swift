#if canImport(Glibc)
import Glibc
#endif

/// A failure to start or run the HTTP server.
///
/// `description` names the failure and the errno; the bound address and the system's error text are in
/// `debugDescription`.
public struct HTTPServerError: Error, Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    fileprivate enum Base: String, Sendable, Hashable {
        case invalidAddress
        case socketFailed
        case bindFailed
        case listenFailed
        case eventLoopFailed
        case alreadyStarted
        case stopped
    }

    /// The kind of failure.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate let base: Base

        /// The host is not an IPv4 or IPv6 literal (or `localhost`), or the port is out of range.
        public static let invalidAddress = Code(base: .invalidAddress)
        /// `socket(2)` or a socket option failed.
        public static let socketFailed = Code(base: .socketFailed)
        /// `bind(2)` failed, for example with `EADDRINUSE` or `EACCES`.
        public static let bindFailed = Code(base: .bindFailed)
        /// `listen(2)` failed.
        public static let listenFailed = Code(base: .listenFailed)
        /// Creating an event loop's epoll set, eventfd or thread failed.
        public static let eventLoopFailed = Code(base: .eventLoopFailed)
        /// ``HTTPServer/run()`` was called more than once.
        public static let alreadyStarted = Code(base: .alreadyStarted)
        /// The server stopped (or failed) before it was listening.
        public static let stopped = Code(base: .stopped)

        public var description: String { base.rawValue }
    }

    /// The kind of failure.
    public let code: Code
    /// The `errno` captured at the failing call, when a system call failed.
    public let errno: Int32?
    /// The address involved, as `host:port` text.
    public let address: String

    init(_ code: Code, errno: Int32? = nil, address: String) {
        self.code = code
        self.errno = errno
        self.address = address
    }

    /// Captures the current `errno`; call it right after the failing system call.
    static func systemCall(_ code: Code, address: String) -> HTTPServerError {
        HTTPServerError(code, errno: Glibc.errno, address: address)
    }

    public var description: String {
        if let errno { return "HTTPServerError.\(code)(errno: \(errno))" }
        return "HTTPServerError.\(code)"
    }

    public var debugDescription: String {
        var text = "HTTPServerError.\(code)(address: \(address)"
        if let errno { text += ", errno: \(errno) \(String(cString: strerror(errno)))" }
        return text + ")"
    }
}
