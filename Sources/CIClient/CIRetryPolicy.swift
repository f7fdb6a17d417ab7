import TimeUnits
/// When and how long ``CIClient`` waits before trying a call again. Pure: no clock, no I/O.
public struct CIRetryPolicy: Sendable, Hashable {
    /// Attempts per call, the first included.
    public var maxAttempts: Int
    /// The first backoff ceiling; it doubles with every retry.
    public var baseBackoff: Duration
    /// The largest backoff ceiling.
    public var maxBackoff: Duration
    /// The longest `Retry-After` waited out; a longer one ends the call.
    public var maxRetryAfter: Duration

    /// Creates a policy.
    public init(maxAttempts: Int, baseBackoff: Duration, maxBackoff: Duration, maxRetryAfter: Duration) {
        self.maxAttempts = maxAttempts
        self.baseBackoff = baseBackoff
        self.maxBackoff = maxBackoff
        self.maxRetryAfter = maxRetryAfter
    }

    /// The policy a ``CIConfiguration`` describes.
    public init(configuration: CIConfiguration) {
        self.init(
            maxAttempts: configuration.maxAttempts,
            baseBackoff: configuration.baseBackoff,
            maxBackoff: configuration.maxBackoff,
            maxRetryAfter: configuration.maxRetryAfter
        )
    }

    /// The upper bound of the wait before retry `retry` (1 for the wait after the first attempt):
    /// `min(maxBackoff, baseBackoff × 2^(retry-1))`.
    public func backoffCeiling(retry: Int) -> Duration {
        let doublings = max(0, min(retry - 1, 30))  // 2^30 × any sane base already exceeds every sane maximum
        let ceiling = baseBackoff * (1 << doublings)
        return min(ceiling, maxBackoff)
    }

    /// The wait before retry `retry`: a uniform draw from `0...backoffCeiling(retry:)` ("full jitter",
    /// which spreads many clients' retries instead of synchronising them), but never less than the
    /// server's `Retry-After`.
    /// - Parameters:
    ///   - retry: 1 for the first retry.
    ///   - retryAfter: The server's `Retry-After`, if any.
    ///   - generator: The randomness source.
    public func delay(retry: Int, retryAfter: Duration?, using generator: inout some RandomNumberGenerator) -> Duration {
        let ceiling = backoffCeiling(retry: retry)
        let ceilingNanoseconds = ceiling.inNanoseconds
        let jittered: Duration = ceilingNanoseconds > 0 ? .nanoseconds(Int64.random(in: 0...ceilingNanoseconds, using: &generator)) : .zero
        guard let retryAfter else { return jittered }
        return max(jittered, retryAfter)
    }

    /// Whether a failed attempt may be repeated.
    ///
    /// Idempotent calls (the GETs) retry on every ``CIClientError/isRetryable`` error. `POST /jobs` is not
    /// idempotent (a repeat creates a second job), so it retries only where CI cannot have created one:
    /// a connection that was never established, and 429 or 503 answers (CI refused the request).
    /// - Parameters:
    ///   - error: The failure.
    ///   - idempotent: Whether repeating the request is harmless.
    ///   - connectionEstablished: `false` when the failure happened before a connection existed, so no
    ///     byte of the request was sent.
    public func mayRetry(_ error: CIClientError, idempotent: Bool, connectionEstablished: Bool) -> Bool {
        guard error.isRetryable else { return false }
        if let retryAfter = error.retryAfter, retryAfter > maxRetryAfter { return false }
        if idempotent { return true }
        if error.code == .ciError { return error.httpStatus == 429 || error.httpStatus == 503 }
        return error.code == .network && !connectionEstablished
    }

    /// Parses `Retry-After` as delta-seconds (what CI and most APIs send); an HTTP-date or anything else
    /// is ignored and the normal backoff applies.
    public static func parseRetryAfter(_ header: String?) -> Duration? {
        guard let text = header?.trimmingASCIISpaces(), !text.isEmpty, text.utf8.count <= 9,
            text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let seconds = Int64(text)
        else { return nil }
        return .seconds(seconds)
    }

}
