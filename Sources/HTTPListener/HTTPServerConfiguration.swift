import Foundation
import HTTPWire

/// Connection-level limits of the listener. Every field has a documented default and can be changed.
public struct ListenerLimits: Sendable, Hashable {
    /// Request parser limits (head bytes, body bytes, field count). Default: ``HTTPParserLimits/init(maxHeaderBytes:maxBodyBytes:maxHeaderCount:)`` defaults.
    public var parser: HTTPParserLimits
    /// Time from the first byte of a request until it is complete (head and body). Past it the client gets
    /// 408 and the connection closes. Absolute, not reset by trickling bytes, so a slow-loris client cannot
    /// hold a connection. Default: 10 s.
    public var requestReadTimeout: Duration
    /// The old name of ``requestReadTimeout``, which always bounded the body too.
    @available(*, deprecated, renamed: "requestReadTimeout")
    public var headerReadTimeout: Duration {
        get { requestReadTimeout }
        set { requestReadTimeout = newValue }
    }
    /// Time a keep-alive connection may sit with nothing received, pending or being written before it is
    /// closed silently; also how long a partly written response may wait for the peer to read before the
    /// connection is dropped. Default: 60 s.
    public var idleTimeout: Duration
    /// Open connections across all event loops. At the limit, a new connection makes room by evicting
    /// idle connections and those slowest to send their request (``maxConnectionsPerPeer`` explains how);
    /// when every connection is doing work, it is answered 503 with a JSON body and closed. Each connection
    /// takes a file descriptor, and a slow client can hold up to `maxHeaderBytes` of parser buffer for the
    /// header timeout, so with the defaults 8,192 connections cost at most about 256 MiB. `ci-callbackd
    /// serve` raises its open-file limit toward the hard limit and lowers this to fit. Default: 8192.
    public var maxConnections: Int
    /// Connections beyond `maxConnections` held at once only to be answered 503; beyond it they are closed
    /// without an answer, so a connection flood cannot make the refusals themselves exhaust descriptors.
    /// Per event loop. Default: 256.
    public var maxRefusingConnections: Int
    /// Open connections from one client IP address. A new connection from a peer at the limit closes that
    /// peer's idle or slow connections first (oldest first), and is answered 503 only when all of them are
    /// doing work, so one address cannot take every connection with slow requests. Each event loop enforces
    /// an even share of it (rounded up). Behind a proxy every client has the proxy's address: raise it to
    /// `maxConnections` there. Default: 1024.
    public var maxConnectionsPerPeer: Int
    /// Requests one connection may have in flight (pipelining). At the limit the loop stops reading that
    /// connection until responses go out (backpressure). Default: 16.
    public var maxPipelinedRequests: Int
    /// Request-body bytes held in memory at once across all connections: bodies being received (a
    /// `Content-Length` is reserved whole when the head arrives, a chunked body as its chunks are
    /// announced) and bodies of requests being handled, until they are answered. A request that would
    /// pass it is answered 503 with `Retry-After` and the connection closes, so a burst of large bodies
    /// cannot exhaust memory. Default: 64 MiB.
    public var maxInflightBodyBytes: Int

    /// Creates limits; every argument has the documented default.
    public init(
        parser: HTTPParserLimits = HTTPParserLimits(),
        requestReadTimeout: Duration = .seconds(10),
        idleTimeout: Duration = .seconds(60),
        maxConnections: Int = 8192,
        maxConnectionsPerPeer: Int = 1024,
        maxRefusingConnections: Int = 256,
        maxPipelinedRequests: Int = 16,
        maxInflightBodyBytes: Int = 64 << 20
    ) {
        self.maxInflightBodyBytes = maxInflightBodyBytes
        self.maxRefusingConnections = maxRefusingConnections
        self.parser = parser
        self.requestReadTimeout = requestReadTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.maxConnectionsPerPeer = maxConnectionsPerPeer
        self.maxPipelinedRequests = maxPipelinedRequests
    }
}

/// Where and how ``HTTPServer`` listens.
public struct HTTPServerConfiguration: Sendable {
    /// An IPv4 or IPv6 literal to bind (`"::"` listens dual-stack; `"[::1]"` brackets are accepted);
    /// `"localhost"` means `127.0.0.1`. Host names are not resolved. Default: `"0.0.0.0"`.
    public var host: String = "0.0.0.0"
    /// The TCP port; 0 binds an ephemeral port (read it with ``HTTPServer/waitUntilListening()``). Default: 8080.
    public var port: Int = 8080
    /// Connection-level limits.
    public var limits = ListenerLimits()
    /// Event loop threads, sharing one listening socket. Default: active cores, at most 4.
    public var eventLoopCount: Int = min(ProcessInfo.processInfo.activeProcessorCount, 4)
    /// Requests being handled by the responder at once, across all connections; further parsed requests
    /// wait in a queue (bounded by connections × pipelined requests). Default: 512.
    public var maxConcurrentRequests: Int = 512
    /// After shutdown starts, how long in-flight requests may take to finish and be written before every
    /// remaining connection is closed. Default: 10 s.
    public var shutdownGracePeriod: Duration = .seconds(10)

    /// Creates the default configuration.
    public init() {}
}
