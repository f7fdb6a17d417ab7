import Foundation
import Testing

@testable import JobStore

/// The overview's statement reads fixed, whole-minute ranges derived from the clock, and its rows make
/// the page's figures; pure, with an injected instant.
@Suite("Console overview window")
struct ConsoleOverviewWindowTests {
    let minute: Int64 = 60_000_000
    /// 2026-12-04 23:27:30 UTC.
    let now: Int64 = 1_796_426_850_000_000

    @Test func window_hourDayAndLiveRanges_areWholeMinutesEndingNow() {
        let window = ConsoleSQL.OverviewWindow(nowMicros: now, policy: ConsoleOverviewPolicy())
        let currentMinute = now - 30_000_000
        #expect(window.hourStartMicros == currentMinute - 59 * minute)
        #expect(window.dayBucketMicros == 20 * minute && window.dayBucketCount == 72)
        // 23:20 is the current bar; the first is 71 bars earlier.
        #expect(window.dayStartMicros == currentMinute - 7 * minute - 71 * 20 * minute)
        #expect(window.liveSinceMicros == currentMinute - 15 * minute, "the page counts at most the last 15 minutes itself")
    }

    @Test func window_liveWindowLongerThanTheDay_stopsAtTheDay() {
        var policy = ConsoleOverviewPolicy()
        policy.liveWindow = .seconds(3 * 86_400)
        let window = ConsoleSQL.OverviewWindow(nowMicros: now, policy: policy)
        #expect(window.liveSinceMicros == window.dayStartMicros)
    }

    @Test func overviewRows_capAndRollupLag_becomeTheFigures() throws {
        let window = ConsoleSQL.OverviewWindow(nowMicros: now, policy: ConsoleOverviewPolicy())
        let rows = [
            ConsoleSQL.OverviewRow(kind: .hour, micros: window.hourStartMicros + minute, outcome: .rejected, n: 2),
            ConsoleSQL.OverviewRow(kind: .hour, micros: window.hourStartMicros, outcome: .accepted, n: 5),
            ConsoleSQL.OverviewRow(kind: .day, micros: window.dayStartMicros, outcome: .accepted, n: 7),
            ConsoleSQL.OverviewRow(
                kind: .figures, micros: window.liveSinceMicros - minute, outcome: nil, n: 11, jobID: "j1", jobReceivedAt: "2026-12-01T00:00:00.000000Z",
                pending: 3, pendingMicros: 42),
        ]
        let overview = try ConsoleSQL.overview(rows, window: window, cap: 10)
        #expect(overview.openJobs.exceedsCap && overview.openJobs.counted == 11)
        #expect(!overview.verificationPending.exceedsCap && overview.verificationPending.counted == 3 && overview.oldestPendingMicros == 42)
        #expect(overview.longestSilentOpenJob?.jobID == "j1")
        #expect(overview.hour.map(\.outcome) == [.accepted, .rejected], "in time order")
        #expect(overview.day == [CallbackRateBucket(startMicros: window.dayStartMicros, outcome: .accepted, count: 7)])
        #expect(overview.rollupBehind, "the watermark is older than the live window")
    }

    @Test func overviewRows_withoutFigures_isAStoredRowError() {
        let window = ConsoleSQL.OverviewWindow(nowMicros: now, policy: ConsoleOverviewPolicy())
        #expect(throws: StoredRowError.self) { try ConsoleSQL.overview([], window: window, cap: 10) }
    }
}
