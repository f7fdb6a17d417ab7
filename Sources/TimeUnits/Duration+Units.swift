/// A `Duration` in the units that APIs, SQL settings and metrics take: one definition of the arithmetic on
/// `components`, instead of a copy beside every timeout.
///
/// The integer units saturate at `Int64.min`/`.max` rather than trap, so a setting of "forever" (a
/// duration of centuries) stays a valid, very long wait.
extension Duration {
    /// Seconds with their fraction, for `TimeInterval`-based APIs and seconds-valued metrics.
    public var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// Whole milliseconds, truncated toward zero: for logs and SQL settings where a lost fraction is harmless.
    public var inMilliseconds: Int64 {
        whole(perSecond: 1_000, roundingUp: false)
    }

    /// Whole milliseconds, rounded up: for waits where a short positive duration must not become 0
    /// (to `poll(2)` and libpq, 0 means "don't wait" or "no timeout").
    public var inMillisecondsRoundedUp: Int64 {
        whole(perSecond: 1_000, roundingUp: true)
    }

    /// Whole microseconds, truncated toward zero.
    public var inMicroseconds: Int64 {
        whole(perSecond: 1_000_000, roundingUp: false)
    }

    /// Whole nanoseconds, truncated toward zero.
    public var inNanoseconds: Int64 {
        whole(perSecond: 1_000_000_000, roundingUp: false)
    }

    private func whole(perSecond: Int64, roundingUp: Bool) -> Int64 {
        let (seconds, attoseconds) = components
        let attosecondsPerUnit = 1_000_000_000_000_000_000 / perSecond
        var fraction = attoseconds / attosecondsPerUnit
        if roundingUp, attoseconds > 0, attoseconds % attosecondsPerUnit != 0 {
            fraction += 1
        }
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: perSecond)
        guard !overflow else { return seconds < 0 ? .min : .max }
        let (total, overflowAdding) = scaled.addingReportingOverflow(fraction)
        guard !overflowAdding else { return scaled < 0 ? .min : .max }
        return total
    }
}
