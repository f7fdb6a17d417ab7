import Testing

@testable import JobStore

/// The ranges a rollup run counts: pure arithmetic on microseconds.
@Suite("Callback rate ranges")
struct CallbackRateRangeTests {
    let minute = CallbackRateSQL.minuteMicros
    let policy = CallbackRollupPolicy()

    @Test func minuteFloor_roundsDown_alsoBeforeTheEpoch() {
        #expect(CallbackRateSQL.minuteFloor(125_000_000) == 120_000_000)
        #expect(CallbackRateSQL.minuteFloor(120_000_000) == 120_000_000)
        #expect(CallbackRateSQL.minuteFloor(-1) == -60_000_000)
    }

    @Test func chunk_startsTheSettleTimeBeforeTheWatermark_andEndsAtTheCurrentMinute() {
        let end = 1_000 * minute
        let range = CallbackRateSQL.chunk(watermark: end - minute, end: end, policy: policy)
        #expect(range.from == end - 3 * minute && range.to == end)
    }

    @Test func chunk_afterAPause_catchesUpAnHourATime_fromNoEarlierThanWhatIsKept() {
        let end = 100_000 * minute
        let first = CallbackRateSQL.chunk(watermark: 0, end: end, policy: policy)
        #expect(first.from == end - policy.keep.microseconds)
        #expect(first.to == first.from + 60 * minute)
        let last = CallbackRateSQL.chunk(watermark: end - 10 * minute, end: end, policy: policy)
        #expect(last.to == end)
    }

    @Test func chunk_whenCaughtUp_countsOnlyTheSettleTimeAgain() {
        let end = 1_000 * minute
        let range = CallbackRateSQL.chunk(watermark: end, end: end, policy: policy)
        #expect(range.from == end - 2 * minute && range.to == end)
    }
}
