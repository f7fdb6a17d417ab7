import Testing

@testable import ci_callbackd

/// Durations where zero means "off" (`LIST_YIELD`, `DB_STATEMENT_TIMEOUT`, `RECONCILE_AFTER`): pure.
@Suite("Duration settings")
struct DurationSettingTests {
    @Test func durationOrZero_zeroInAnyUnitIsOff_othersParseAsDurations_garbageIsRefused() {
        #expect(SettingParsers.durationOrZero("0") == .zero)
        #expect(SettingParsers.durationOrZero("0s") == .zero)
        #expect(SettingParsers.durationOrZero("0ms") == .zero)
        #expect(SettingParsers.durationOrZero("100ms") == .milliseconds(100))
        #expect(SettingParsers.durationOrZero("2s") == .seconds(2))
        #expect(SettingParsers.durationOrZero("-1s") == nil)
        #expect(SettingParsers.durationOrZero("soon") == nil)
        #expect(SettingParsers.durationOrZero("") == nil)
    }
}
