import Foundation
import Synchronization

/// Limits failed console logins per client address: at most ``Limits/attempts`` failures in a window of
/// ``Limits/window``; past that the address is refused until its window ends. A value type with the
/// clock passed in, so it is unit-tested without time passing; ``ConsoleLoginLimiter`` shares one.
///
/// Memory is bounded: at most ``Limits/addresses`` addresses are tracked. When that many are, expired
/// windows are dropped first, then the address whose window started first (one scan, only when full).
struct ConsoleLoginThrottle: Sendable {
    struct Limits: Sendable, Hashable {
        /// Failed logins an address may make per window (`CONSOLE_LOGIN_ATTEMPTS`).
        var attempts = 10
        var window: Duration = .seconds(60)
        /// Addresses tracked at once.
        var addresses = 10_000
    }

    enum Decision: Sendable, Hashable {
        case allow
        /// Refused; the client may try again after this many whole seconds (`Retry-After`).
        case refuse(retryAfterSeconds: Int)
    }

    private struct Window: Sendable {
        var start: Date
        var failures: Int
    }

    let limits: Limits
    private var windows: [String: Window] = [:]

    init(limits: Limits) {
        self.limits = limits
    }

    /// Addresses tracked now.
    var trackedAddresses: Int { windows.count }

    /// Whether `address` may try a token now.
    func decision(for address: String, now: Date) -> Decision {
        guard let window = windows[address], window.failures >= limits.attempts else { return .allow }
        let ends = window.start.addingTimeInterval(Self.seconds(limits.window))
        guard now < ends else { return .allow }
        return .refuse(retryAfterSeconds: max(1, Int(ends.timeIntervalSince(now).rounded(.up))))
    }

    /// A wrong token from `address`.
    mutating func recordFailure(from address: String, now: Date) {
        if var window = windows[address], now < window.start.addingTimeInterval(Self.seconds(limits.window)) {
            window.failures += 1
            windows[address] = window
            return
        }
        if windows[address] == nil, windows.count >= limits.addresses { makeRoom(now: now) }
        windows[address] = Window(start: now, failures: 1)
    }

    /// A right token from `address`: its failures are forgotten.
    mutating func recordSuccess(from address: String) {
        windows[address] = nil
    }

    private mutating func makeRoom(now: Date) {
        let window = Self.seconds(limits.window)
        windows = windows.filter { now < $0.value.start.addingTimeInterval(window) }
        while windows.count >= max(limits.addresses, 1), let oldest = windows.min(by: { $0.value.start < $1.value.start })?.key {
            windows[oldest] = nil
        }
    }

    private static func seconds(_ duration: Duration) -> TimeInterval {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// The process's one ``ConsoleLoginThrottle``: every console request on every event loop consults it, so
/// it sits behind a lock.
final class ConsoleLoginLimiter: Sendable {
    private let throttle: Mutex<ConsoleLoginThrottle>

    init(limits: ConsoleLoginThrottle.Limits) {
        throttle = Mutex(ConsoleLoginThrottle(limits: limits))
    }

    func decision(for address: String, now: Date = Date()) -> ConsoleLoginThrottle.Decision {
        throttle.withLock { $0.decision(for: address, now: now) }
    }

    func recordFailure(from address: String, now: Date = Date()) {
        throttle.withLock { $0.recordFailure(from: address, now: now) }
    }

    func recordSuccess(from address: String) {
        throttle.withLock { $0.recordSuccess(from: address) }
    }
}
