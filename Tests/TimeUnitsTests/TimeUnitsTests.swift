import Foundation
import Testing
import TimeUnits

@Suite struct DurationUnitsTests {
    @Test func durationUnits_FractionalDuration_TruncatesTowardZero() {
        let duration = Duration.milliseconds(1_500) + .nanoseconds(999)
        #expect(duration.inMilliseconds == 1_500)
        #expect(duration.inMicroseconds == 1_500_000)
        #expect(duration.inNanoseconds == 1_500_000_999)
        #expect(duration.inSeconds == 1.500000999)
        #expect(Duration.microseconds(-1_500).inMilliseconds == -1)
    }

    @Test func durationUnits_ShortPositiveWait_RoundsUpToOneMillisecond() {
        #expect(Duration.nanoseconds(1).inMillisecondsRoundedUp == 1)
        #expect(Duration.milliseconds(3).inMillisecondsRoundedUp == 3)
        #expect(Duration.zero.inMillisecondsRoundedUp == 0)
        #expect(Duration.microseconds(-1_500).inMillisecondsRoundedUp == -1)
    }

    @Test func durationUnits_Centuries_SaturateInsteadOfTrapping() {
        let forever = Duration.seconds(Int64.max / 2)
        #expect(forever.inNanoseconds == .max)
        #expect((Duration.zero - forever).inNanoseconds == .min)
        #expect(forever.inMilliseconds == .max)
    }

    @Test func dateMicroseconds_RoundTrip_KeepsEveryMicrosecond() {
        let micros: Int64 = 1_796_000_000_123_457
        #expect(Date(microsecondsSince1970: micros).microsecondsSince1970 == micros)
        #expect(Date(timeIntervalSince1970: -1.5).microsecondsSince1970 == -1_500_000)
    }
}
