/// Bounds that keep a hostile body from costing unbounded stack, memory or time.
///
/// Both parsers enforce the same limits; a body that exceeds one is rejected with a
/// ``CallbackDecodingError`` whose code is ``CallbackDecodingError/Code/limitExceeded``.
public struct CIDecodingLimits: Sendable, Hashable {
    /// Maximum nesting of elements (XML) or of objects and arrays (JSON); the root counts as 1.
    /// Default: 64. Real CI bodies nest about 6 deep.
    public var maxDepth: Int
    /// Maximum number of elements (XML) or of values (JSON) in one body. Default: 100_000.
    public var maxElements: Int

    /// Creates limits; the defaults suit CI callbacks and API responses.
    public init(maxDepth: Int = 64, maxElements: Int = 100_000) {
        self.maxDepth = maxDepth
        self.maxElements = maxElements
    }
}
