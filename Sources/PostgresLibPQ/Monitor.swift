#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import TimeUnits

/// A pthread mutex with several condition variables that time out on the monotonic clock.
///
/// `NSCondition` pairs one condition with its own mutex and takes wall-clock deadlines; the pool needs two
/// conditions (work available, timer) over ONE lock, so that signalling one kind of waiter never wakes the
/// other, and deadlines that a clock change cannot move.
final class Monitor: @unchecked Sendable {
    // The pointers are allocated once, never reassigned, and only handed to pthread functions, which do
    // their own synchronisation: sharing them across threads is what they are for.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let conditions: UnsafeMutablePointer<pthread_cond_t>
    private let conditionCount: Int

    init(conditionCount: Int) {
        self.conditionCount = conditionCount
        self.mutex = .allocate(capacity: 1)
        self.conditions = .allocate(capacity: conditionCount)
        var mutexAttributes = pthread_mutexattr_t()
        Self.check(pthread_mutexattr_init(&mutexAttributes), "pthread_mutexattr_init")
        #if DEBUG
        // As swift-log's Lock: debug builds make misuse (unlocking a mutex this thread does not hold,
        // locking it twice) an error that `check` stops on, instead of undefined behaviour.
        Self.check(pthread_mutexattr_settype(&mutexAttributes, .init(PTHREAD_MUTEX_ERRORCHECK)), "pthread_mutexattr_settype")
        #endif
        Self.check(pthread_mutex_init(self.mutex, &mutexAttributes), "pthread_mutex_init")
        Self.check(pthread_mutexattr_destroy(&mutexAttributes), "pthread_mutexattr_destroy")
        var attributes = pthread_condattr_t()
        Self.check(pthread_condattr_init(&attributes), "pthread_condattr_init")
        #if !canImport(Darwin)
        Self.check(pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC), "pthread_condattr_setclock")
        #endif
        for index in 0..<conditionCount {
            Self.check(pthread_cond_init(self.conditions + index, &attributes), "pthread_cond_init")
        }
        Self.check(pthread_condattr_destroy(&attributes), "pthread_condattr_destroy")
    }

    deinit {
        for index in 0..<self.conditionCount {
            Self.check(pthread_cond_destroy(self.conditions + index), "pthread_cond_destroy")
        }
        Self.check(pthread_mutex_destroy(self.mutex), "pthread_mutex_destroy")
        self.conditions.deallocate()
        self.mutex.deallocate()
    }

    func lock() {
        Self.check(pthread_mutex_lock(self.mutex), "pthread_mutex_lock")
    }

    func unlock() {
        Self.check(pthread_mutex_unlock(self.mutex), "pthread_mutex_unlock")
    }

    /// Waits on `condition`; the mutex must be held and is held again on return (spurious wake-ups happen:
    /// re-check the predicate).
    func wait(_ condition: Int) {
        Self.check(pthread_cond_wait(self.conditions + condition, self.mutex), "pthread_cond_wait")
    }

    /// Like ``wait(_:)``, returning at `deadline` at the latest.
    func wait(_ condition: Int, until deadline: ContinuousClock.Instant) {
        let remaining = deadline - ContinuousClock.now
        guard remaining > .zero else { return }
        #if canImport(Darwin)
        var relative = Self.timespec(remaining)
        let result = pthread_cond_timedwait_relative_np(self.conditions + condition, self.mutex, &relative)
        #else
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let nanoseconds = remaining.inNanoseconds
        var absolute = timespec(
            tv_sec: now.tv_sec + Int(nanoseconds / 1_000_000_000),
            tv_nsec: now.tv_nsec + Int(nanoseconds % 1_000_000_000)
        )
        if absolute.tv_nsec >= 1_000_000_000 {
            absolute.tv_sec += 1
            absolute.tv_nsec -= 1_000_000_000
        }
        let result = pthread_cond_timedwait(self.conditions + condition, self.mutex, &absolute)
        #endif
        // Reaching the deadline is the expected way out; anything else is misuse.
        if result != ETIMEDOUT {
            Self.check(result, "pthread_cond_timedwait")
        }
    }

    func signal(_ condition: Int) {
        Self.check(pthread_cond_signal(self.conditions + condition), "pthread_cond_signal")
    }

    func broadcast(_ condition: Int) {
        Self.check(pthread_cond_broadcast(self.conditions + condition), "pthread_cond_broadcast")
    }

    /// Stops on a failed pthread call, as swift-log's `Lock` does: each failure means a broken invariant
    /// (a destroyed or foreign-held mutex, a bad attribute), and carrying on would corrupt the pool.
    private static func check(_ result: Int32, _ function: StaticString) {
        precondition(result == 0, "\(function) failed with error \(result)")
    }

    #if canImport(Darwin)
    private static func timespec(_ duration: Duration) -> timespec {
        let nanoseconds = duration.inNanoseconds
        return Darwin.timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    }
    #endif
}
