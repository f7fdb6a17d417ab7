import Foundation
import JobStore
import Testing

@testable import CallbackService

/// The per-subscription circuit breaker, without sockets or a database: the clock is the `at:` argument.
@Suite("Webhook circuit breaker")
struct WebhookCircuitBreakerTests {
    let configuration: WebhookDeliveryConfiguration = {
        var configuration = WebhookDeliveryConfiguration()
        configuration.breakerThreshold = 3
        configuration.breakerCoolDown = .seconds(1)
        configuration.breakerMaxCoolDown = .seconds(5)
        return configuration
    }()
    let start = Date(timeIntervalSince1970: 1_800_000_000)
    let down = WebhookCircuitBreaker.Signal.failed(retryAfter: nil)

    func at(_ seconds: Double) -> Date { start.addingTimeInterval(seconds) }

    @Test func signal_NoAnswer5xxAnd429Count_OtherAnswersDoNot() {
        #expect(WebhookCircuitBreaker.Signal(.init(status: nil)) == .failed(retryAfter: nil))
        #expect(WebhookCircuitBreaker.Signal(.init(status: 500)) == .failed(retryAfter: nil))
        #expect(WebhookCircuitBreaker.Signal(.init(status: 503, retryAfterSeconds: 7)) == .failed(retryAfter: .seconds(7)))
        #expect(WebhookCircuitBreaker.Signal(.init(status: 429, retryAfterSeconds: 30)) == .failed(retryAfter: .seconds(30)))
        for status in [200, 204, 301, 400, 404, 410] {
            #expect(WebhookCircuitBreaker.Signal(.init(status: status)) == .answered, "\(status)")
        }
    }

    @Test func closed_FailuresBelowThreshold_StayClosed_AnAnswerCountsFromZero() {
        var breaker = WebhookCircuitBreaker()
        #expect(breaker.apply(down, probe: false, at: at(0), configuration: configuration) == .init(action: .none, holdsDelivery: false))
        #expect(breaker.apply(down, probe: false, at: at(1), configuration: configuration) == .init(action: .none, holdsDelivery: false))
        #expect(breaker.apply(.answered, probe: false, at: at(2), configuration: configuration) == .init(action: .none, holdsDelivery: false))
        #expect(breaker.record.isUntouched)
        // Two more failures are again below the threshold.
        _ = breaker.apply(down, probe: false, at: at(3), configuration: configuration)
        _ = breaker.apply(down, probe: false, at: at(4), configuration: configuration)
        #expect(breaker.record.state == .closed && breaker.admission(at: at(4)) == .any)
    }

    @Test func closed_ThresholdFailures_Open_NoAttemptUntilTheCoolDown_ThenOneProbe() {
        var breaker = WebhookCircuitBreaker()
        _ = breaker.apply(down, probe: false, at: at(0), configuration: configuration)
        _ = breaker.apply(down, probe: false, at: at(0.1), configuration: configuration)
        let opened = breaker.apply(down, probe: false, at: at(0.2), configuration: configuration)
        #expect(opened == .init(action: .open(nextProbe: at(1.2)), holdsDelivery: true))
        #expect(breaker.record.state == .open && breaker.record.since == at(0.2) && breaker.record.openings == 1)
        #expect(breaker.admission(at: at(0.5)) == .none)
        #expect(breaker.admission(at: at(1.2)) == .probe)
    }

    @Test func open_FailedProbes_DoubleTheCoolDown_UpToTheCap() {
        var breaker = WebhookCircuitBreaker(WebhookBreakerRecord(state: .halfOpen, failures: 3, openings: 1, since: at(0), nextProbeAt: at(31)))
        var now = 1.0
        var pauses: [Double] = []
        for _ in 0..<5 {
            let transition = breaker.apply(down, probe: true, at: at(now), configuration: configuration)
            #expect(transition.holdsDelivery)
            guard case .open(let nextProbe) = transition.action else {
                Issue.record("a failed probe must open the breaker again: \(transition)")
                return
            }
            pauses.append(nextProbe.timeIntervalSince(at(now)))
            #expect(breaker.admission(at: nextProbe.addingTimeInterval(-0.001)) == .none)
            now = nextProbe.timeIntervalSince(start)
        }
        #expect(pauses == [2, 4, 5, 5, 5])
        // It has been open since the first opening.
        #expect(breaker.record.since == at(0) && breaker.record.state == .open)
    }

    @Test func open_ProbeAnswered_Closes_AndCountsFromZero() {
        var breaker = WebhookCircuitBreaker(WebhookBreakerRecord(state: .halfOpen, failures: 9, openings: 4, since: at(0), nextProbeAt: at(40)))
        #expect(breaker.apply(.answered, probe: true, at: at(10), configuration: configuration) == .init(action: .close, holdsDelivery: false))
        #expect(breaker.record == WebhookBreakerRecord(state: .closed, failures: 0, openings: 0, since: at(10), nextProbeAt: nil))
        #expect(breaker.admission(at: at(10)) == .any)
        // Closed again, it takes the full threshold to open.
        _ = breaker.apply(down, probe: false, at: at(11), configuration: configuration)
        #expect(breaker.record.state == .closed)
    }

    @Test func open_AttemptLeasedBeforeOpening_FailureHeldBack_AnswerCloses() {
        let open = WebhookBreakerRecord(state: .open, failures: 3, openings: 1, since: at(0), nextProbeAt: at(1))
        var breaker = WebhookCircuitBreaker(open)
        #expect(breaker.apply(down, probe: false, at: at(0.5), configuration: configuration) == .init(action: .none, holdsDelivery: true))
        #expect(breaker.record.nextProbeAt == at(1) && breaker.record.openings == 1)
        breaker = WebhookCircuitBreaker(open)
        #expect(breaker.apply(.answered, probe: false, at: at(0.5), configuration: configuration).action == .close)
    }

    @Test func retryAfter_IsTheCoolDownsFloor_CappedByMaxRetryAfter() {
        var configuration = self.configuration
        configuration.maxRetryAfter = .seconds(100)
        var breaker = WebhookCircuitBreaker(WebhookBreakerRecord(failures: 2))
        #expect(breaker.apply(.failed(retryAfter: .seconds(30)), probe: false, at: at(0), configuration: configuration).action == .open(nextProbe: at(30)))
        #expect(breaker.apply(.failed(retryAfter: .seconds(500)), probe: true, at: at(30), configuration: configuration).action == .open(nextProbe: at(130)))
        // Shorter than the cool-down: the cool-down stands.
        #expect(breaker.apply(.failed(retryAfter: .seconds(1)), probe: true, at: at(130), configuration: configuration).action == .open(nextProbe: at(134)))
        // An attempt leased before the opening pushes the probe back when it asks for longer.
        #expect(breaker.apply(.failed(retryAfter: .seconds(20)), probe: false, at: at(131), configuration: configuration).action == .open(nextProbe: at(151)))
    }

    @Test func coolDown_DoublesFromTheBase_CappedAtTheMaximum() {
        let defaults = WebhookDeliveryConfiguration()
        #expect((1...6).map { WebhookCircuitBreaker.coolDown(openings: $0, configuration: defaults) } == [1, 2, 4, 8, 10, 10].map { Duration.seconds($0) })
        #expect(WebhookCircuitBreaker.coolDown(openings: 10_000, configuration: defaults) == .seconds(10))
    }

    /// The recorder's fold of a batch: in order, per subscription; failures after the opening hold their
    /// deliveries back; an unknown (deleted) subscription changes nothing.
    @Test func applyBreakers_Batch_OpensPerSubscription_HoldsLaterFailures() {
        let inputs = [
            WebhookDeliveryWorker.BreakerInput(subscription: "a", probe: false, signal: down),
            WebhookDeliveryWorker.BreakerInput(subscription: "b", probe: false, signal: .answered),
            WebhookDeliveryWorker.BreakerInput(subscription: "a", probe: false, signal: down),
            WebhookDeliveryWorker.BreakerInput(subscription: "a", probe: false, signal: down),
            WebhookDeliveryWorker.BreakerInput(subscription: "a", probe: false, signal: down),
            WebhookDeliveryWorker.BreakerInput(subscription: "gone", probe: false, signal: down),
        ]
        let applied = WebhookDeliveryWorker.applyBreakers(
            inputs, stored: ["a": WebhookBreakerRecord(), "b": WebhookBreakerRecord()], now: at(0), configuration: configuration)
        #expect(applied.holds == [false, false, false, true, true, false])
        #expect(Set(applied.breakers.keys) == ["a"])
        #expect(applied.breakers["a"]?.state == .open && applied.breakers["a"]?.failures == 4)
        #expect(applied.actions.count == 1 && applied.actions.first?.0 == "a" && applied.actions.first?.1 == .open(nextProbe: at(1)))
    }
}
