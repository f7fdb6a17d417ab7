import CWebhookHTTP
import Foundation
import TimeUnits

/// Sends webhook attempts with libcurl, all of them from one thread (``WebhookSenderThread``) that drives
/// every POST at once through libcurl's multi interface.
///
/// Why libcurl and not the listener's socket code or URLSession: consumers are `https://` URLs, and libcurl
/// (already linked by FoundationNetworking) brings TLS with certificate checks; unlike URLSession, it lets
/// us see the resolved address right before connecting (`CURLOPT_OPENSOCKETFUNCTION`), so the address
/// policy checks the address actually connected to, not one a second DNS answer could replace. It also
/// bounds the whole exchange (`CURLOPT_TIMEOUT_MS`), never follows redirects, ignores proxy variables, and
/// stops reading the response body at the cap.
///
/// Why batches: a POST handed to a thread and answered back costs two thread wake-ups, which were most of
/// the service's CPU per delivery. A batch costs one hand-off to the sender thread and one resume back.
struct WebhookHTTPClient: Sendable {
    let configuration: WebhookDeliveryConfiguration
    private let sender: WebhookSenderThread

    init(configuration: WebhookDeliveryConfiguration) {
        self.init(configuration: configuration, idleLifetime: WebhookSenderThread.defaultIdleLifetime)
    }

    /// - Parameter idleLifetime: how long the sender keeps its connections with nothing to send (tests
    ///   shorten it).
    init(configuration: WebhookDeliveryConfiguration, idleLifetime: Duration) {
        self.configuration = configuration
        self.sender = WebhookSenderThread(configuration: configuration, idleLifetime: idleLifetime)
    }

    /// One POST of a batch.
    struct Request: Sendable {
        /// The subscription it is for: one subscription's POSTs hold at most its share of the concurrency
        /// (``WebhookDeliveryConfiguration/subscriptionShare``).
        var subscriptionID: String
        var url: String
        /// Its headers but the signature's.
        var headers: [(String, String)]
        /// Its Standard Webhooks headers, signed again by the sender if it is sent in a later second; nil
        /// for a POST without them.
        var signature: WebhookSignature? = nil
        var body: [UInt8]
        /// Given up on, not sent, when a POST of the same subscription ends without an answer (a timeout, a
        /// refused connection) while this one waits for its turn: answered ``Response/skipped``. A walk's
        /// deliveries are, so that a walk of hundreds of events to a consumer that hangs takes one timeout,
        /// not one per round of the subscription's share; they are written pending, with no attempt.
        var skipsAfterEndpointFailure = false
    }

    /// How an attempt went.
    struct Response: Sendable, Hashable {
        /// nil when no response status arrived.
        var status: Int?
        var retryAfterSeconds: Int64?
        /// What went wrong (transport, address policy), for the attempt's history; nil when answered.
        var error: String?
        /// How long the POST took, from its start on a connection slot; nil when it was never started. A
        /// measurement, not part of the answer: equality leaves it out.
        var elapsed: Duration? = nil
        /// When the sender saw it end; nil when it was never given to the sender. With ``elapsed``, when it
        /// was sent: a POST may wait for its turn long after its batch was given. Left out of equality too.
        var endedAt: ContinuousClock.Instant? = nil
        /// Not sent: an earlier POST of its subscription ended without an answer while it waited for its
        /// turn (``Request/skipsAfterEndpointFailure``).
        var skipped = false

        static func == (lhs: Self, rhs: Self) -> Bool {
            lhs.status == rhs.status && lhs.retryAfterSeconds == rhs.retryAfterSeconds && lhs.error == rhs.error && lhs.skipped == rhs.skipped
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(status)
            hasher.combine(retryAfterSeconds)
            hasher.combine(error)
            hasher.combine(skipped)
        }

        /// The answer of a POST given up on after `failure`, another POST of its subscription, ended unanswered.
        static func skipped(after failure: Response) -> Response {
            Response(
                status: nil, retryAfterSeconds: nil, error: "not sent: an earlier POST to the endpoint failed (\(failure.error ?? "no answer"))",
                endedAt: .now, skipped: true)
        }
    }

    /// Sends every request concurrently and returns their responses in the same order, once all have ended.
    /// At most ``WebhookDeliveryConfiguration/concurrency`` POSTs of the process are in flight at once, at
    /// most ``WebhookDeliveryConfiguration/subscriptionShare`` of them one subscription's; the others wait
    /// their turn (the subscriptions in turn, each one's first given first sent), and each one's timeout
    /// starts when it is sent. A POST that ends unanswered skips its subscription's POSTs still waiting
    /// that allow it (``Request/skipsAfterEndpointFailure``).
    func post(_ requests: [Request]) async -> [Response] {
        if requests.isEmpty { return [] }
        // Header lines are laid out here, on the caller's task: the one sender thread does only libcurl's work.
        let prepared = requests.map(WebhookSenderThread.PreparedPost.init)
        return await withCheckedContinuation { continuation in
            sender.send(WebhookSenderThread.Batch(prepared, continuation: continuation))
        }
    }

    /// Lets the sender thread end once the POSTs given so far are sent. A batch given later is still sent.
    func finish() {
        sender.finish()
    }

    /// Whether the sender thread is running (tests: it ends when finished or idle).
    var isSending: Bool { sender.isRunning }
}

extension WebhookHTTPClient.Response {
    /// The response as libcurl reported it.
    init(_ result: cwh_result) {
        let elapsed = Duration.microseconds(result.total_time_us)
        if result.answered != 0 {
            self.init(
                status: result.status, retryAfterSeconds: result.retry_after_seconds >= 0 ? result.retry_after_seconds : nil, error: nil,
                elapsed: elapsed, endedAt: .now)
            return
        }
        let message = withUnsafeBytes(of: result.error) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        self.init(status: nil, retryAfterSeconds: nil, error: message.isEmpty ? "request failed" : message, elapsed: elapsed, endedAt: .now)
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
        self.init(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
}
