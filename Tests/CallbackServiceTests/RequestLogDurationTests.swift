import Testing

@testable import CallbackService

/// The request log's duration field, formatted without Foundation on the hot path.
@Suite("Request log duration")
struct RequestLogDurationTests {
    @Test(arguments: [
        (Duration.zero, "0.000"),
        (Duration.microseconds(7), "0.007"),
        (Duration.microseconds(1_234), "1.234"),
        (Duration.microseconds(1_050), "1.050"),
        (Duration.milliseconds(12_000), "12000.000"),
        (Duration.nanoseconds(999), "0.000"),
        (Duration.seconds(-1), "0.000"),
    ])
    func requestLogDuration_isMillisecondsWithThreeDecimals(duration: Duration, expected: String) {
        #expect(CallbackApplication.milliseconds(duration) == expected)
    }
}
