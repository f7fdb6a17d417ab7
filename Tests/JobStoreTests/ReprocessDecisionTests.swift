import CIModel
import Testing

@testable import JobStore

/// Ingest's precedence replayed in receive order, for one job of one reprocessed callback: no database.
@Suite("Reprocess decision")
struct ReprocessDecisionTests {
    static func current(id: Int64, state: JobState, at micros: Int64?) -> ReprocessDecision.Current {
        ReprocessDecision.Current(callbackID: id, stateRank: state.precedence, receivedMicros: micros)
    }

    @Test func decide_laterCallback_winsOnEqualOrHigherRank_earlierOnlyOnHigher() {
        let running = Self.current(id: 5, state: .running, at: 1_000)
        #expect(ReprocessDecision.decide(incoming: .running, callbackID: 9, receivedMicros: 2_000, hasEvent: true, verification: nil, current: running) == .apply(newEvent: false))
        #expect(ReprocessDecision.decide(incoming: .running, callbackID: 2, receivedMicros: 500, hasEvent: true, verification: nil, current: running) == .keep)
        #expect(ReprocessDecision.decide(incoming: .success, callbackID: 2, receivedMicros: 500, hasEvent: true, verification: nil, current: running) == .apply(newEvent: false))
    }

    @Test func decide_lateRunningAfterSuccess_neverWins_butIsRecorded() {
        let success = Self.current(id: 5, state: .success, at: 1_000)
        #expect(ReprocessDecision.decide(incoming: .running, callbackID: 9, receivedMicros: 2_000, hasEvent: false, verification: nil, current: success) == .record)
        #expect(ReprocessDecision.decide(incoming: .running, callbackID: 9, receivedMicros: 2_000, hasEvent: true, verification: nil, current: success) == .keep)
    }

    @Test func decide_theCurrentCallback_refreshesItsOwnReading() {
        let current = Self.current(id: 5, state: .success, at: 1_000)
        #expect(ReprocessDecision.decide(incoming: .running, callbackID: 5, receivedMicros: 1_000, hasEvent: true, verification: nil, current: current) == .apply(newEvent: false))
    }

    @Test func decide_sameInstant_callbackIDBreaksTheTie() {
        let current = Self.current(id: 5, state: .running, at: 1_000)
        #expect(ReprocessDecision.decide(incoming: .running, callbackID: 6, receivedMicros: 1_000, hasEvent: true, verification: nil, current: current) == .apply(newEvent: false))
        #expect(ReprocessDecision.decide(incoming: .running, callbackID: 4, receivedMicros: 1_000, hasEvent: true, verification: nil, current: current) == .keep)
    }

    @Test func decide_noJobRow_newBodyCreatesIt_historyWithoutJobIsLeftDeleted() {
        #expect(ReprocessDecision.decide(incoming: .success, callbackID: 1, receivedMicros: 1, hasEvent: false, verification: nil, current: nil) == .apply(newEvent: true))
        #expect(ReprocessDecision.decide(incoming: .success, callbackID: 1, receivedMicros: 1, hasEvent: true, verification: nil, current: nil) == .keep)
    }

    @Test func decide_pendingOrContradictedVerification_isLeftToTheVerifier() {
        for verification in ["pending", "contradicted"] {
            #expect(ReprocessDecision.decide(incoming: .success, callbackID: 1, receivedMicros: 1, hasEvent: true, verification: verification, current: nil) == .skipVerification)
        }
    }
}
