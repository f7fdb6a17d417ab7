/// When to give freed memory back: once the heap in use has fallen `threshold` below its peak since the
/// last trim. A burst ends in one trim; an idle or steady service never trims.
public struct TrimPolicy: Sendable, Hashable {
    public let threshold: Int
    private var peak = 0

    public init(threshold: Int) {
        self.threshold = threshold
    }

    /// Records the heap in use now; true when it is time to trim.
    public mutating func shouldTrim(inUse: Int) -> Bool {
        peak = max(peak, inUse)
        guard peak - inUse >= threshold else { return false }
        peak = inUse
        return true
    }
}
