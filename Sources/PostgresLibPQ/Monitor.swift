#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

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
        pthread_mutex_init(self.mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        #if !canImport(Darwin)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        #endif
        for index in 0..<conditionCount {
            pthread_cond_init(self.conditions + index, &attributes)
        }
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        for index in 0..<self.conditionCount {
            pthread_cond_destroy(self.conditions + index)
        }
        pthread_mutex_destroy(self.mutex)
        self.conditions.deallocate()
        self.mutex.deallocate()
    }

    func lock() {
        pthread_mutex_lock(self.mutex)
    }

    func unlock() {
        pthread_mutex_unlock(self.mutex)
    }

    /// Waits on `condition`; the mutex must be held and is held again on return (spurious wake-ups happen:
    /// re-check the predicate).
    func wait(_ condition: Int) {
        pthread_cond_wait(self.conditions + condition, self.mutex)
    }

    /// Like ``wait(_:)``, returning at `deadline` at the latest.
    func wait(_ condition: Int, until deadline: ContinuousClock.Instant) {
        let remaining = deadline - ContinuousClock.now
        guard remaining > .zero else { return }
        #if canImport(Darwin)
        var relative = Self.timespec(remaining)
        pthread_cond_timedwait_relative_np(self.conditions + condition, self.mutex, &relative)
        #else
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let (seconds, attoseconds) = remaining.components
        var absolute = timespec(
            tv_sec: now.tv_sec + Int(seconds),
            tv_nsec: now.tv_nsec + Int(attoseconds / 1_000_000_000)
        )
        if absolute.tv_nsec >= 1_000_000_000 {
            absolute.tv_sec += 1
            absolute.tv_nsec -= 1_000_000_000
        }
        pthread_cond_timedwait(self.conditions + condition, self.mutex, &absolute)
        #endif
    }

    func signal(_ condition: Int) {
        pthread_cond_signal(self.conditions + condition)
    }

    func broadcast(_ condition: Int) {
        pthread_cond_broadcast(self.conditions + condition)
    }

    #if canImport(Darwin)
    private static func timespec(_ duration: Duration) -> timespec {
        let (seconds, attoseconds) = duration.components
        return Darwin.timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    }
    #endif
}
