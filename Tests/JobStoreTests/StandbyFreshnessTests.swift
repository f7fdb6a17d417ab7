import JobStore
import Testing

/// The read-routing rule (``StandbyFreshness``), driven by explicit instants.
@Suite("Standby freshness")
struct StandbyFreshnessTests {
    let start = ContinuousClock.now

    func at(_ milliseconds: Int) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    @Test func freshness_BeforeAnyProbe_ReadsThePrimary() {
        let freshness = StandbyFreshness(maxLag: .seconds(1))
        #expect(freshness.route(jobID: nil, now: at(0)) == .primary(.standbyDown))
        #expect(freshness.lag(now: at(0)) == nil)
    }

    @Test func freshness_StandbyCaughtUp_ReadsTheStandby() {
        var freshness = StandbyFreshness(maxLag: .seconds(1))
        freshness.probed(primaryLSN: 100, takenAt: at(0), replayLSN: 100, inRecovery: true)
        #expect(freshness.route(jobID: "a", now: at(500)) == .standby)
        #expect(freshness.route(jobID: nil, now: at(500)) == .standby)
        #expect(freshness.lag(now: at(500)) == .zero)
    }

    @Test func freshness_ReplayBehindLongerThanMaxLag_ReadsThePrimary() {
        var freshness = StandbyFreshness(maxLag: .seconds(1))
        freshness.probed(primaryLSN: 100, takenAt: at(0), replayLSN: 100, inRecovery: true)
        freshness.probed(primaryLSN: 200, takenAt: at(200), replayLSN: 100, inRecovery: true)
        #expect(freshness.route(jobID: nil, now: at(900)) == .standby)
        freshness.probed(primaryLSN: 300, takenAt: at(1100), replayLSN: 150, inRecovery: true)
        #expect(freshness.route(jobID: nil, now: at(1100)) == .primary(.lagging))
        #expect(freshness.lag(now: at(1100)) == .milliseconds(1100))
        // Replay reaches the position sampled at 200 ms: covered through then, still too old.
        freshness.probed(primaryLSN: 300, takenAt: at(1300), replayLSN: 250, inRecovery: true)
        #expect(freshness.coveredThrough == at(200))
        #expect(freshness.route(jobID: nil, now: at(1300)) == .primary(.lagging))
        freshness.probed(primaryLSN: 300, takenAt: at(1400), replayLSN: 300, inRecovery: true)
        #expect(freshness.route(jobID: nil, now: at(1400)) == .standby)
    }

    @Test func freshness_ProbesStop_CoverageAgesIntoLagging() {
        var freshness = StandbyFreshness(maxLag: .seconds(1))
        freshness.probed(primaryLSN: 100, takenAt: at(0), replayLSN: 100, inRecovery: true)
        #expect(freshness.route(jobID: nil, now: at(1001)) == .primary(.lagging))
    }

    @Test func freshness_JobAcknowledgedAfterCoverage_ReadsThePrimaryUntilReplayed() {
        var freshness = StandbyFreshness(maxLag: .seconds(1))
        freshness.probed(primaryLSN: 100, takenAt: at(0), replayLSN: 100, inRecovery: true)
        freshness.acknowledged(["a"], at: at(10))
        #expect(freshness.route(jobID: "a", now: at(20)) == .primary(.recentWrite))
        #expect(freshness.route(jobID: "b", now: at(20)) == .standby)
        #expect(freshness.route(jobID: nil, now: at(20)) == .standby)
        // Sampled after the acknowledgement, but not replayed yet.
        freshness.probed(primaryLSN: 150, takenAt: at(50), replayLSN: 120, inRecovery: true)
        #expect(freshness.route(jobID: "a", now: at(60)) == .primary(.recentWrite))
        freshness.probed(primaryLSN: 160, takenAt: at(100), replayLSN: 150, inRecovery: true)
        #expect(freshness.route(jobID: "a", now: at(110)) == .standby)
    }

    @Test func freshness_MoreAcknowledgementsThanRemembered_PerJobReadsWaitForTheForgottenOnes() {
        var freshness = StandbyFreshness(maxLag: .seconds(1), recentWriteCapacity: 2)
        freshness.probed(primaryLSN: 100, takenAt: at(0), replayLSN: 100, inRecovery: true)
        freshness.acknowledged(["a"], at: at(10))
        freshness.acknowledged(["b"], at: at(11))
        freshness.acknowledged(["c"], at: at(12))
        // "a" was forgotten: no per-job read can tell whether it is about "a".
        #expect(freshness.route(jobID: "z", now: at(20)) == .primary(.recentWrite))
        #expect(freshness.route(jobID: nil, now: at(20)) == .standby)
        freshness.probed(primaryLSN: 110, takenAt: at(30), replayLSN: 110, inRecovery: true)
        #expect(freshness.route(jobID: "z", now: at(40)) == .standby)
        #expect(freshness.route(jobID: "c", now: at(40)) == .standby)
    }

    @Test func freshness_StandbyUnreachableOrPromoted_ReadsThePrimary() {
        var freshness = StandbyFreshness(maxLag: .seconds(1))
        freshness.probed(primaryLSN: 100, takenAt: at(0), replayLSN: 100, inRecovery: true)
        freshness.probeFailed()
        #expect(freshness.route(jobID: nil, now: at(10)) == .primary(.standbyDown))
        freshness.probed(primaryLSN: 100, takenAt: at(20), replayLSN: 100, inRecovery: true)
        #expect(freshness.route(jobID: nil, now: at(30)) == .standby)
        freshness.probed(primaryLSN: 100, takenAt: at(40), replayLSN: nil, inRecovery: false)
        #expect(freshness.route(jobID: nil, now: at(50)) == .primary(.standbyDown))
    }
}
