import CallbackService
import Testing

/// When freed memory is given back to the operating system: once after a burst, never while idle.
@Suite("Memory trim policy")
struct MemoryTrimPolicyTests {
    @Test func trimPolicy_BurstThenIdle_TrimsOnceWhenTheBurstIsFreed() {
        var policy = TrimPolicy(threshold: 16 << 20)
        let readings = [30 << 20, 120 << 20, 250 << 20, 200 << 20, 40 << 20, 40 << 20, 40 << 20, 39 << 20]
        let trims = readings.map { policy.shouldTrim(inUse: $0) }
        #expect(trims == [false, false, false, true, true, false, false, false])
    }

    @Test func trimPolicy_SteadyOrSmallSwings_NeverTrims() {
        var policy = TrimPolicy(threshold: 16 << 20)
        let trims = [30, 35, 31, 40, 28, 33].map { policy.shouldTrim(inUse: $0 << 20) }
        #expect(!trims.contains(true))
    }
}
