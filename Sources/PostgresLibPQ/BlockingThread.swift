import Foundation

// MARK: The one way libpq is kept off Swift's cooperative pool
//
// libpq blocks: connecting, sending, waiting for a result. The cooperative pool has one thread per core,
// so a libpq call made there stalls every task scheduled on that thread. Therefore every libpq call in
// this code runs on a thread started by `startBlockingThread(name:_:)` below, which owns the connection it
// works on; async code hands it a closure and suspends on a continuation until the thread resumes it.
// There are two shapes of the one mechanism:
//
// - `PostgresPool`: one such thread per connection (plus one timer thread), all taking jobs from the
//   pool's queue, for work that needs *a* connection for one closure (`withConnection`, `submit`, and
//   through them `PoolBatcher`'s group commit and batched lookups).
// - `BlockingThread`: one such thread taking closures in order and keeping state between them, for work
//   that needs *its own* connection: a session that must outlive one closure (`SweepLock`'s advisory lock)
//   or a loop that lives as long as its owner (`JobCompletionListener`'s LISTEN).
//
// Not a DispatchQueue (its worker threads are shared with the rest of the process, and it starts more of
// them when they block), and never `Task.detached` (it runs on the cooperative pool).

/// Starts the named thread that runs `body`: the only place that starts a thread for libpq work.
func startBlockingThread(name: String, _ body: @escaping @Sendable () -> Void) {
    let thread = Thread(block: body)
    thread.name = name
    thread.start()
}

/// One thread of our own that runs closures in the order they are given, each with inout access to
/// `State`, which lives on that thread only (see the mechanism described at the top of this file).
///
/// The state is made on the thread, on first use, and no other thread ever touches it, so it needs no
/// lock: a ``PostgresConnection`` kept between calls is simply a `PostgresConnection?` state.
public final class BlockingThread<State>: Sendable {
    private typealias Job = @Sendable (inout State?) -> Void

    /// Callers (any thread) append, the thread takes. `@unchecked Sendable`: every `var` is read and
    /// written only while `monitor` is locked.
    private final class Queue: @unchecked Sendable {
        let monitor = Monitor(conditionCount: 1)
        var jobs: [Job] = []
        var started = false
        var finished = false
    }

    private let name: String
    private let makeState: @Sendable () -> State
    private let queue = Queue()

    /// - Parameters:
    ///   - name: The thread's name (shown by debuggers and `top -H`).
    ///   - state: Makes the thread's state, on the thread, before its first job.
    public init(name: String, state: @escaping @Sendable () -> State) {
        self.name = name
        self.makeState = state
    }

    /// Runs `work` on the thread, after everything given before it, and returns its value.
    /// - Throws: what `work` throws; ``BlockingThreadFinished`` after ``finish(_:)``.
    public func run<T: Sendable>(_ work: @escaping @Sendable (inout State) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let accepted = enqueue { [makeState] state in
                var current = state ?? makeState()
                continuation.resume(with: Result { try work(&current) })
                state = current
            }
            if !accepted { continuation.resume(throwing: BlockingThreadFinished()) }
        }
    }

    /// Runs `last` on the thread after everything given before it (not at all if the thread never ran,
    /// so there is no state to clean up), then lets the thread end; later ``run(_:)`` calls throw.
    public func finish(_ last: @escaping @Sendable (inout State) -> Void = { _ in }) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.monitor.lock()
            let alreadyFinished = queue.finished
            let started = queue.started
            queue.finished = true
            if !alreadyFinished && started {
                queue.jobs.append { state in
                    if var current = state {
                        last(&current)
                        state = current
                    }
                    continuation.resume()
                }
                queue.monitor.signal(0)
            }
            queue.monitor.unlock()
            if alreadyFinished || !started { continuation.resume() }
        }
    }

    private func enqueue(_ job: @escaping Job) -> Bool {
        queue.monitor.lock()
        guard !queue.finished else {
            queue.monitor.unlock()
            return false
        }
        queue.jobs.append(job)
        let start = !queue.started
        queue.started = true
        queue.monitor.signal(0)
        queue.monitor.unlock()
        if start {
            startBlockingThread(name: name) { [queue] in Self.runJobs(queue) }
        }
        return true
    }

    /// The thread: takes jobs in order until finished and drained.
    private static func runJobs(_ queue: Queue) {
        var state: State? = nil
        while true {
            queue.monitor.lock()
            while queue.jobs.isEmpty && !queue.finished { queue.monitor.wait(0) }
            if queue.jobs.isEmpty {
                queue.monitor.unlock()
                return
            }
            let job = queue.jobs.removeFirst()
            queue.monitor.unlock()
            job(&state)
        }
    }
}

/// A ``BlockingThread`` was given work after ``BlockingThread/finish(_:)``.
public struct BlockingThreadFinished: Error, Sendable, CustomStringConvertible {
    public var description: String { "the thread was finished; it takes no more work" }
}
