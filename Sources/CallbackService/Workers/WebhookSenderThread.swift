import CWebhookHTTP
import Foundation
import Synchronization
import TimeUnits

/// The one thread that sends every webhook POST of a ``WebhookHTTPClient``, all at once, with libcurl's
/// multi interface: it starts queued POSTs while fewer than the concurrency are in flight, each
/// subscription's at most its share (``WebhookDeliveryConfiguration/subscriptionShare``) and the
/// subscriptions in turn (``WebhookSendQueue``), waits in `curl_multi_poll` for any of their sockets (or a
/// new batch), and answers each batch when its last POST has ended.
///
/// One thread for every POST, not one blocking POST per thread: each POST handed to a thread and its
/// answer handed back were two thread wake-ups, most of the service's CPU per delivery. Every libcurl call
/// is made here but `curl_multi_wakeup`, which libcurl lets any thread make and which does not block, so
/// Swift's cooperative threads never wait on the network.
///
/// The thread runs only while there is work. The first batch starts it; it ends once it has had nothing to
/// send for ``idleLifetime``, closing its connections (a quiet service holds none), or, after ``finish()``,
/// as soon as nothing is left to send. The next batch starts it again. While it runs, its one multi handle
/// keeps one cache of connections for every POST, so connections to a consumer are reused from batch to
/// batch.
final class WebhookSenderThread: Sendable {
    /// How long the thread keeps its connections, and itself, with nothing to send.
    static let defaultIdleLifetime: Duration = .seconds(30)

    let configuration: WebhookDeliveryConfiguration
    let idleLifetime: Duration
    /// The most POSTs in flight at once.
    let concurrency: Int

    init(configuration: WebhookDeliveryConfiguration, idleLifetime: Duration = defaultIdleLifetime) {
        self.configuration = configuration
        self.idleLifetime = idleLifetime
        self.concurrency = max(1, configuration.concurrency)
        self.shared = Mutex(Shared(waiting: WebhookSendQueue(perSubscriptionLimit: configuration.subscriptionShare)))
    }

    /// A POST made ready for libcurl.
    struct PreparedPost: Sendable {
        /// Whose POST it is: its share of the slots (``WebhookSendQueue``).
        let subscriptionID: String
        let url: String
        /// The header lines but the signature's ("Name: value"), each ended by a NUL, one after another.
        let unsignedLines: [CChar]
        private(set) var signature: WebhookSignature?
        /// ``unsignedLines`` and then the signature's lines.
        private(set) var headerLines: [CChar]
        let body: [UInt8]
        /// ``WebhookHTTPClient/Request/skipsAfterEndpointFailure``.
        let skipsAfterEndpointFailure: Bool

        init(_ request: WebhookHTTPClient.Request) {
            subscriptionID = request.subscriptionID
            url = request.url
            body = request.body
            skipsAfterEndpointFailure = request.skipsAfterEndpointFailure
            unsignedLines = Self.lines(request.headers)
            signature = request.signature
            headerLines = unsignedLines + Self.lines(signature?.headers ?? [])
        }

        /// This POST as sent at `timestamp` (a unix second): itself unless it was signed for an earlier second.
        func signed(at timestamp: Int64) -> PreparedPost {
            guard let signature, signature.timestamp != timestamp else { return self }
            var post = self
            let renewed = WebhookSignature(key: signature.key, id: signature.id, timestamp: timestamp, body: body)
            post.signature = renewed
            post.headerLines = unsignedLines + Self.lines(renewed.headers)
            return post
        }

        private static func lines(_ headers: [(String, String)]) -> [CChar] {
            var lines: [CChar] = []
            for (name, value) in headers {
                lines.append(contentsOf: "\(name): \(value)".utf8.map { CChar(bitPattern: $0) })
                lines.append(0)
            }
            return lines
        }
    }

    /// POSTs given together, answered together.
    final class Batch: @unchecked Sendable {
        // @unchecked: `responses` and `unanswered` change only on the sender thread, once the batch is given.
        let posts: [PreparedPost]
        private var responses: [WebhookHTTPClient.Response?]
        private var unanswered: Int
        private let continuation: CheckedContinuation<[WebhookHTTPClient.Response], Never>

        init(_ posts: [PreparedPost], continuation: CheckedContinuation<[WebhookHTTPClient.Response], Never>) {
            self.posts = posts
            self.responses = Array(repeating: nil, count: posts.count)
            self.unanswered = posts.count
            self.continuation = continuation
        }

        /// Records how post `index` went; resumes the caller with every response once this was the last.
        func answer(_ index: Int, with response: WebhookHTTPClient.Response) {
            responses[index] = response
            unanswered -= 1
            // Every index is answered once, so none is nil by now.
            if unanswered == 0 { continuation.resume(returning: responses.compactMap { $0 }) }
        }
    }

    /// Post `index` of `batch`.
    struct Queued {
        let batch: Batch
        let index: Int

        var post: PreparedPost { batch.posts[index] }
    }

    /// The thread's multi handle (a `cwh_sender`), as callers see it. `@unchecked Sendable`: the one call
    /// they make on it is `cwh_sender_wakeup`, which libcurl lets any thread make.
    struct SenderHandle: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    enum ThreadState {
        /// No thread: the next batch starts one.
        case stopped
        /// Started, without its multi handle yet: it takes the queue before it first waits, so it needs no wake-up.
        case starting
        /// Waits in this multi handle, which a new batch wakes.
        case running(SenderHandle)
    }

    /// What callers and the thread share.
    struct Shared {
        /// POSTs waiting for their turn: the timeout of each starts only when it is sent (libcurl's own
        /// queue, `CURLMOPT_MAX_TOTAL_CONNECTIONS`, would count the wait against it).
        var waiting: WebhookSendQueue<Queued>
        var finished = false
        var thread: ThreadState = .stopped

        mutating func enqueue(_ batch: Batch) {
            for (index, post) in batch.posts.enumerated() { waiting.append(Queued(batch: batch, index: index), subscription: post.subscriptionID) }
        }
    }

    /// One lock for callers and the thread, since giving a batch and the thread's decision to end must not
    /// interleave: the thread ends only under this lock with the queue empty, and a batch queued after
    /// that finds `.stopped` and starts a new thread. A mutex and not a condition variable: the thread
    /// waits in `curl_multi_poll`, for its sockets and new work at once, and a caller wakes it with
    /// `curl_multi_wakeup`, under this lock so that the handle is not freed meanwhile.
    private let shared: Mutex<Shared>

    /// Queues the batch's POSTs, and wakes or starts the thread for them.
    func send(_ batch: Batch) {
        let startThread = shared.withLock { shared in
            shared.enqueue(batch)
            switch shared.thread {
            case .stopped:
                shared.thread = .starting
                return true
            case .starting:
                return false
            case .running(let sender):
                _ = cwh_sender_wakeup(sender.pointer)
                return false
            }
        }
        if startThread {
            let thread = Thread { [self] in serve() }
            thread.name = "webhook-send"
            thread.start()
        }
    }

    /// Lets the thread end once everything given so far is sent. A batch given later starts it again.
    func finish() {
        shared.withLock { shared in
            shared.finished = true
            if case .running(let sender) = shared.thread { _ = cwh_sender_wakeup(sender.pointer) }
        }
    }

    /// Whether the thread runs (or is about to).
    var isRunning: Bool {
        shared.withLock { shared in
            if case .stopped = shared.thread { return false }
            return true
        }
    }

    /// The POSTs libcurl runs now, each under its tag (its slot's index here).
    private struct InFlight {
        private var slots: [Queued?] = []
        private var free: [Int] = []

        var count: Int { slots.count - free.count }

        /// Keeps `queued`; returns its tag.
        mutating func add(_ queued: Queued) -> Int {
            if let tag = free.popLast() {
                slots[tag] = queued
                return tag
            }
            slots.append(queued)
            return slots.count - 1
        }

        mutating func remove(_ tag: Int) -> Queued? {
            guard slots.indices.contains(tag), let queued = slots[tag] else { return nil }
            slots[tag] = nil
            free.append(tag)
            return queued
        }
    }

    /// The thread's body.
    private func serve() {
        let filter: cwh_address_filter = { context, address, length in
            guard let context, let address else { return 0 }
            let thread = Unmanaged<WebhookSenderThread>.fromOpaque(context).takeUnretainedValue()
            guard let ip = IPAddress(socketAddress: address, length: length) else { return 0 }
            return thread.configuration.allowsDestination(ip) ? 1 : 0
        }
        // Unretained: this thread's closure holds `self` until `serve` returns, and with it the handle.
        guard let sender = cwh_sender_new(concurrency, filter, Unmanaged.passUnretained(self).toOpaque()) else {
            answerWithoutSender()
            return
        }
        // Freed after `takeTurns` has made the state `.stopped`: no caller wakes it after that.
        defer { cwh_sender_free(sender) }
        shared.withLock { $0.thread = .running(SenderHandle(pointer: sender)) }

        let timeoutMilliseconds = Int(configuration.timeout.inMilliseconds)
        var inFlight = InFlight()
        // When a POST last started or ended: the thread's idle time counts from it.
        var lastActive = ContinuousClock.now
        var ended = cwh_result()
        var endedTag: UInt = 0
        // Subscriptions whose POSTs ended since the last turns were taken: their slots are free.
        var freed: [String] = []
        while true {
            let idle = lastActive.duration(to: .now) >= idleLifetime
            guard let turns = takeTurns(room: concurrency - inFlight.count, freed: freed, nothingInFlight: inFlight.count == 0, idle: idle) else { return }
            freed.removeAll(keepingCapacity: true)
            // Whether a POST ended (or could not start) in this round, making room for a queued one.
            var anyEnded = false
            for queued in turns {
                let tag = inFlight.add(queued)
                if let failure = start(queued.post, tag: tag, on: sender, timeoutMilliseconds: timeoutMilliseconds) {
                    _ = inFlight.remove(tag)
                    freed.append(queued.post.subscriptionID)
                    queued.batch.answer(queued.index, with: .init(failure))
                    anyEnded = true
                }
            }
            if !turns.isEmpty { lastActive = .now }
            _ = cwh_sender_perform(sender)
            while cwh_sender_take_ended(sender, &endedTag, &ended) == 1 {
                anyEnded = true
                guard let queued = inFlight.remove(Int(endedTag)) else { continue }
                freed.append(queued.post.subscriptionID)
                let response = WebhookHTTPClient.Response(ended)
                queued.batch.answer(queued.index, with: response)
                if response.status == nil { skipWaiting(of: queued.post.subscriptionID, after: response) }
            }
            if anyEnded {
                lastActive = .now
                continue  // start queued POSTs in the room made before waiting
            }
            // With POSTs in flight libcurl shortens the wait to its next timer (a timeout, a connect attempt).
            let wait = inFlight.count > 0 ? .seconds(1) : idleLifetime - lastActive.duration(to: .now)
            _ = cwh_sender_wait(sender, Int32(clamping: max(1, wait.inMillisecondsRoundedUp)))
        }
    }

    /// The queued POSTs to start now, at most `room`, once the slots of the POSTs of `freed` (one entry
    /// each) are given back; nil when the thread is to end: nothing to start, nothing in flight, and
    /// finished or idle long enough.
    private func takeTurns(room: Int, freed: [String], nothingInFlight: Bool, idle: Bool) -> [Queued]? {
        shared.withLock { shared in
            for subscription in freed { shared.waiting.ended(subscription: subscription) }
            let turns = shared.waiting.take(room: room).map(\.item)
            if turns.isEmpty, nothingInFlight, shared.finished || idle {
                shared.thread = .stopped
                return nil
            }
            return turns
        }
    }

    /// Answers the subscription's waiting POSTs that skip after an endpoint failure, without sending them:
    /// one of its POSTs just ended with `failure`, no answer. A consumer that hangs would otherwise hold the
    /// subscription's share for a whole timeout per round until its walk was through.
    private func skipWaiting(of subscription: String, after failure: WebhookHTTPClient.Response) {
        let skipped = shared.withLock { $0.waiting.remove(subscription: subscription) { $0.post.skipsAfterEndpointFailure } }
        guard !skipped.isEmpty else { return }
        let response = WebhookHTTPClient.Response.skipped(after: failure)
        for queued in skipped { queued.batch.answer(queued.index, with: response) }
    }

    /// Starts `post`; returns why it could not be started, or nil.
    private func start(_ post: PreparedPost, tag: Int, on sender: OpaquePointer, timeoutMilliseconds: Int) -> cwh_result? {
        let post = post.signed(at: WebhookSignature.now())
        var failure = cwh_result()
        let started = post.url.withCString { url in
            post.headerLines.withUnsafeBufferPointer { headers in
                post.body.withUnsafeBytes { body in
                    cwh_sender_start(
                        sender, url, headers.baseAddress, headers.count, body.baseAddress, body.count, timeoutMilliseconds,
                        configuration.maxResponseBytes, UInt(tag), &failure)
                }
            }
        }
        return started == 0 ? nil : failure
    }

    /// Without a multi handle (libcurl could not make one), every POST queued fails at once, and the thread ends.
    private func answerWithoutSender() {
        let failure = WebhookHTTPClient.Response(status: nil, retryAfterSeconds: nil, error: "cannot create a libcurl multi handle")
        while true {
            let queued: [Queued]? = shared.withLock { shared in
                let all = shared.waiting.takeAll()
                if all.isEmpty { shared.thread = .stopped }
                return all.isEmpty ? nil : all
            }
            guard let queued else { return }
            for post in queued { post.batch.answer(post.index, with: failure) }
        }
    }
}
