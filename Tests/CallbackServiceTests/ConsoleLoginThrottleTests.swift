import Foundation
import Testing

@testable import CallbackService

/// Failed console logins per address, with the clock passed in.
@Suite("Console login throttle")
struct ConsoleLoginThrottleTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    func throttle(attempts: Int = 3, addresses: Int = 100) -> ConsoleLoginThrottle {
        ConsoleLoginThrottle(limits: .init(attempts: attempts, window: .seconds(60), addresses: addresses))
    }

    @Test func throttle_afterTheAllowedFailures_refusesTheAddressUntilItsWindowEnds() {
        var throttle = throttle()
        for second in 0..<3 {
            #expect(throttle.decision(for: "198.51.100.1", now: start.addingTimeInterval(Double(second))) == .allow)
            throttle.recordFailure(from: "198.51.100.1", now: start.addingTimeInterval(Double(second)))
        }
        #expect(throttle.decision(for: "198.51.100.1", now: start.addingTimeInterval(10)) == .refuse(retryAfterSeconds: 50))
        #expect(throttle.decision(for: "198.51.100.1", now: start.addingTimeInterval(59.5)) == .refuse(retryAfterSeconds: 1))
        #expect(throttle.decision(for: "198.51.100.2", now: start.addingTimeInterval(10)) == .allow, "other addresses are not held up")
        #expect(throttle.decision(for: "198.51.100.1", now: start.addingTimeInterval(60)) == .allow)
        throttle.recordFailure(from: "198.51.100.1", now: start.addingTimeInterval(60))
        #expect(throttle.decision(for: "198.51.100.1", now: start.addingTimeInterval(61)) == .allow, "a new window counts from one")
    }

    @Test func throttle_aSuccess_forgetsTheAddressesFailures() {
        var throttle = throttle()
        for _ in 0..<2 { throttle.recordFailure(from: "a", now: start) }
        throttle.recordSuccess(from: "a")
        throttle.recordFailure(from: "a", now: start)
        #expect(throttle.decision(for: "a", now: start) == .allow)
    }

    @Test func throttle_tracksAtMostItsAddresses_droppingExpiredThenOldestWindows() {
        var throttle = throttle(attempts: 1, addresses: 3)
        for (offset, address) in ["a", "b", "c"].enumerated() { throttle.recordFailure(from: address, now: start.addingTimeInterval(Double(offset))) }
        throttle.recordFailure(from: "d", now: start.addingTimeInterval(5))
        #expect(throttle.trackedAddresses == 3)
        #expect(throttle.decision(for: "a", now: start.addingTimeInterval(6)) == .allow, "the oldest window made room")
        #expect(throttle.decision(for: "d", now: start.addingTimeInterval(6)) != .allow)
        for index in 0..<1000 { throttle.recordFailure(from: "x\(index)", now: start.addingTimeInterval(7)) }
        #expect(throttle.trackedAddresses == 3)
        throttle.recordFailure(from: "late", now: start.addingTimeInterval(120))
        #expect(throttle.trackedAddresses == 1, "expired windows go first")
    }
}
