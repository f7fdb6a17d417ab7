import CWebhookHTTP
import Foundation

/// The threads that send webhook attempts, each with a libcurl session of its own.
///
/// A libcurl POST blocks its thread, and Swift's cooperative threads must not block, so attempts run
/// here. Threads start as attempts need them, up to `capacity` (the worker's concurrency, the most
/// attempts in flight), and then wait for the next attempt. A thread idle for ``idleLifetime`` ends and
/// closes its connections, so a quiet worker holds none. Kept threads instead of one per attempt: under
/// load that was thousands of thread starts (an 8 MiB stack mapped and unmapped each) a second, and a
/// session handed between threads.
///
/// Each thread keeps its session, and so its open connections to consumers, between attempts: opening a
/// connection per attempt (TCP, and TLS for https) was a large part of each attempt's time and CPU.
final class WebhookSenderThreads: @unchecked Sendable {
    /// Work for a sender thread: given that thread's session (nil when libcurl could not make one; the
    /// attempt then opens a connection for itself alone).
    typealias Job = @Sendable (OpaquePointer?) -> Void

    /// How long a thread waits for an attempt before it ends.
    static let idleLifetime: TimeInterval = 30

    // `@unchecked Sendable`: every `var` below is read and written only with `condition` locked.
    private let condition = NSCondition()
    private var jobs: [Job] = []
    /// Index of the next job in `jobs`: taking from the front without shifting the array each time.
    private var head = 0
    private var waiting = 0
    private var threads = 0
    private var finished = false
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// Runs `job` on a sender thread: an idle one, a new one while fewer than `capacity` run, or else the
    /// first to finish its attempt.
    func run(_ job: @escaping Job) {
        condition.lock()
        jobs.append(job)
        // Queued jobs beyond the waiting threads (some already signalled, not yet awake) need a thread. A
        // thread ends only with the queue empty, so below the cap nothing given is left without one.
        let start = jobs.count - head > waiting && threads < capacity
        if start { threads += 1 }
        condition.signal()
        condition.unlock()
        if start {
            let thread = Thread { [self] in self.serve() }
            thread.name = "webhook-send"
            thread.start()
        }
    }

    /// Threads running now, busy or waiting for an attempt.
    var threadCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return threads
    }

    /// Threads waiting for an attempt.
    var idleThreadCount: Int {
        condition.lock()
        defer { condition.unlock() }
        return waiting
    }

    /// Lets every thread end once the queue is empty. A job given later still runs (on a thread started
    /// for it, which then ends too).
    func finish() {
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    private func serve() {
        let session = cwh_session_new()
        defer { cwh_session_free(session) }
        while let job = next() {
            job(session)
        }
    }

    /// The next job; nil when this thread should end (finished, or idle past its lifetime).
    private func next() -> Job? {
        condition.lock()
        defer { condition.unlock() }
        var deadline = Date(timeIntervalSinceNow: Self.idleLifetime)
        while head == jobs.count {
            if finished || Date() >= deadline {
                threads -= 1
                return nil
            }
            waiting += 1
            let signalled = condition.wait(until: deadline)
            waiting -= 1
            if signalled { deadline = Date(timeIntervalSinceNow: Self.idleLifetime) }
        }
        let job = jobs[head]
        head += 1
        if head == jobs.count {
            jobs.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }
}
