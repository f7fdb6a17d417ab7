/// Stops the process when an invariant does not hold.
///
/// `fatalError` traps (SIGILL), which libFuzzer reports as a crash and saves the input for; the
/// message names the invariant, so the crash log says what broke, not only where.
/// - Parameters:
///   - condition: the invariant.
///   - message: what broke, for the crash log; evaluated only on failure.
public func invariant(
    _ condition: @autoclosure () -> Bool,
    _ message: @autoclosure () -> String,
    file: StaticString = #fileID,
    line: UInt = #line
) {
    if !condition() { fatalError("invariant violated: \(message())", file: file, line: line) }
}

/// The bytes libFuzzer hands to `LLVMFuzzerTestOneInput`, and values derived from them.
public enum FuzzInput {
    /// Copies libFuzzer's buffer (which may be a null pointer when `size` is 0).
    public static func bytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
        guard let data, size > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: data, count: size))
    }

    /// A pseudo-random but reproducible number derived from the input (FNV-1a).
    ///
    /// libFuzzer gives a target no randomness of its own; deriving split points and chunk sizes from
    /// the bytes keeps every crash reproducible from its saved input alone.
    public static func hash(_ bytes: [UInt8]) -> UInt64 {
        var value: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            value ^= UInt64(byte)
            value &*= 0x0000_0100_0000_01B3
        }
        return value
    }

    /// Cut points `0 < c1 < c2 < … < bytes.count` (at most `count` of them) derived from the input.
    public static func cuts(_ bytes: [UInt8], count: Int) -> [Int] {
        guard bytes.count > 1 else { return [] }
        var state = hash(bytes)
        var points = Set<Int>()
        for _ in 0..<count {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            points.insert(1 + Int((state >> 33) % UInt64(bytes.count - 1)))
        }
        return points.sorted()
    }
}
