import CWebhookHTTP
import Foundation
import TimeUnits

/// Sends one webhook attempt with libcurl, on one of the worker's sender threads
/// (``WebhookSenderThreads``: the call blocks; Swift's cooperative threads must not).
///
/// Why libcurl and not the listener's socket code or URLSession: consumers are `https://` URLs, and libcurl
/// (already linked by FoundationNetworking) brings TLS with certificate checks; unlike URLSession, it lets
/// us see the resolved address right before connecting (`CURLOPT_OPENSOCKETFUNCTION`), so the address
/// policy checks the address actually connected to, not one a second DNS answer could replace. It also
/// bounds the whole exchange (`CURLOPT_TIMEOUT_MS`), never follows redirects, ignores proxy variables, and
/// stops reading the response body at the cap.
struct WebhookHTTPClient: Sendable {
    let configuration: WebhookDeliveryConfiguration
    private let senders: WebhookSenderThreads

    init(configuration: WebhookDeliveryConfiguration) {
        self.configuration = configuration
        self.senders = WebhookSenderThreads(capacity: configuration.concurrency)
    }

    /// How an attempt went.
    struct Response: Sendable, Hashable {
        /// nil when no response status arrived.
        var status: Int?
        var retryAfterSeconds: Int64?
        /// What went wrong (transport, address policy), for the attempt's history; nil when answered.
        var error: String?
    }

    /// POSTs `body` with `headers` to `url`.
    func post(url: String, headers: [(String, String)], body: [UInt8]) async -> Response {
        await withCheckedContinuation { continuation in
            senders.run { [configuration] session in
                continuation.resume(
                    returning: Self.postBlocking(session: session, url: url, headers: headers, body: body, configuration: configuration))
            }
        }
    }

    /// Lets the sender threads end once the attempts given so far are sent.
    func finish() {
        senders.finish()
    }

    /// The address policy, handed to C as its context: a class so that C can hold a pointer to it.
    private final class AddressPolicy {
        let configuration: WebhookDeliveryConfiguration
        init(_ configuration: WebhookDeliveryConfiguration) { self.configuration = configuration }
    }

    private static func postBlocking(session: OpaquePointer?, url: String, headers: [(String, String)], body: [UInt8], configuration: WebhookDeliveryConfiguration) -> Response {
        let policy = AddressPolicy(configuration)
        let lines = headers.map { "\($0.0): \($0.1)" }
        var result = cwh_result()
        let timeoutMilliseconds = Int(configuration.timeout.inMilliseconds)
        let filter: cwh_address_filter = { context, address, length in
            guard let context, let address else { return 0 }
            let policy = Unmanaged<AddressPolicy>.fromOpaque(context).takeUnretainedValue()
            guard let ip = IPAddress(socketAddress: address, length: length) else { return 0 }
            return policy.configuration.allowsDestination(ip) ? 1 : 0
        }
        let answered = withExtendedLifetime(policy) {
            let context = Unmanaged.passUnretained(policy).toOpaque()
            return withCStringArray(lines) { headerPointers in
                body.withUnsafeBytes { bodyBytes in
                    cwh_post(
                        session, url, headerPointers, lines.count, bodyBytes.baseAddress, bodyBytes.count, timeoutMilliseconds,
                        configuration.maxResponseBytes, filter, context, &result)
                }
            }
        }
        if answered == 0 {
            return Response(status: result.status, retryAfterSeconds: result.retry_after_seconds >= 0 ? result.retry_after_seconds : nil, error: nil)
        }
        let message = withUnsafeBytes(of: result.error) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return Response(status: nil, retryAfterSeconds: nil, error: message.isEmpty ? "request failed" : message)
    }
}

/// Runs `body` with the strings as an array of C strings, valid only during the call.
private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer($0) }
    return pointers.withUnsafeBufferPointer { buffer in
        body(buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!)
    }
}

extension IPAddress {
    /// The address of an `AF_INET` or `AF_INET6` socket address.
    init?(socketAddress: UnsafePointer<sockaddr>, length: socklen_t) {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(socketAddress.pointee.sa_family) {
        case AF_INET:
            guard Int(length) >= MemoryLayout<sockaddr_in>.size else { return nil }
            var address = socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            guard inet_ntop(AF_INET, &address, &text, socklen_t(text.count)) != nil else { return nil }
        case AF_INET6:
            guard Int(length) >= MemoryLayout<sockaddr_in6>.size else { return nil }
            var address = socketAddress.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
            guard inet_ntop(AF_INET6, &address, &text, socklen_t(text.count)) != nil else { return nil }
        default:
            return nil
        }
        self.init(String(cString: text))
    }
}
