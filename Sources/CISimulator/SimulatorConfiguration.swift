/// How ``CISimulator`` behaves. Every field has a documented default; tests shorten the times.
public struct SimulatorConfiguration: Sendable {
    // MARK: Listener

    /// Address to bind. Default: `127.0.0.1`.
    public var host: String = "127.0.0.1"
    /// Port to bind; 0 picks a free one (read it with ``CISimulator/waitUntilListening()``). Default: 0.
    public var port: Int = 0
    /// Listener threads. Default: 1 (a simulator needs no more).
    public var eventLoopCount: Int = 1

    // MARK: Identity

    /// The only SecretId accepted; requests signed with another get 403 `InvalidAccessKeyId`.
    /// Default: `AKIDsimulator`.
    public var secretID: String = "AKIDsimulator"
    /// The SecretKey signatures are checked against. Default: `simulator-secret-key`.
    public var secretKey: String = "simulator-secret-key"
    /// Written as `Input/BucketId` of every job. Default: `examplebucket-1250000000`.
    public var bucket: String = "examplebucket-1250000000"
    /// Written as `Input/Region`. Default: `ap-chongqing`.
    public var region: String = "ap-chongqing"
    /// The queue of jobs submitted without `QueueId`. Default: `p2242ab62c7c94486915508540933a2c6`.
    public var defaultQueueID: String = "p2242ab62c7c94486915508540933a2c6"
    /// Where callbacks go for jobs submitted without `CallBack` (a queue's `NotifyConfig` on real CI);
    /// `nil` means no callback. Default: `nil`.
    public var defaultCallbackURL: String?
    /// The UTC offset times are written in. Default: +08:00, like CI.
    public var utcOffsetSeconds: Int = 8 * 3600

    // MARK: Job lifecycle

    /// Time from submission to `Running`. Default: 1 s.
    public var runningAfter: Duration = .seconds(1)
    /// Time from `Running` to the final state (`Success`, or `Failed` for objects whose key contains
    /// `missing`). Default: 3 s.
    public var jobDuration: Duration = .seconds(3)
    /// The watermark text a successful job extracts from an object key.
    /// Default: ``defaultWatermarkText(for:)``, `"wm-"` + the key's last path component.
    public var watermarkText: @Sendable (String) -> String = SimulatorConfiguration.defaultWatermarkText(for:)

    // MARK: Callback delivery

    /// Extra wait between the final state and its callback. Default: 0.
    public var callbackDelay: Duration = .zero
    /// Chance that a callback body is sent twice. Default: 0.
    public var duplicateProbability: Double = 0
    /// Chance that a `Running` callback is also sent, *after* the final one. Default: 0.
    public var outOfOrderProbability: Double = 0
    /// Chance that the final callback is never sent. Default: 0.
    public var dropProbability: Double = 0
    /// Attempts per callback body, the first included; a non-2xx answer or a connection error is retried.
    /// Default: 5.
    public var maxDeliveryAttempts: Int = 5
    /// Wait before the first delivery retry; it doubles with each further one. Default: 100 ms.
    public var deliveryBackoff: Duration = .milliseconds(100)
    /// How long one delivery may take. Default: 5 s.
    public var deliveryTimeout: Duration = .seconds(5)
    /// Seeds every random choice (JobIds, drop/duplicate/out-of-order draws): the same seed and the same
    /// sequence of submissions give the same run. `nil` draws a seed, which is logged. Default: `nil`.
    public var seed: UInt64?

    // MARK: API limits

    /// `size` of `GET /jobs` when the request gives none (CI's default). Default: 10.
    public var defaultPageSize: Int = 10
    /// The largest `size` accepted (CI's maximum). Default: 100.
    public var maxPageSize: Int = 100
    /// The most comma-joined JobIds one `GET /jobs/<ids>` may name. Default: 100.
    public var maxJobIDsPerDescribe: Int = 100

    /// Creates the default configuration.
    public init() {}

    /// `"wm-"` + the last `/`-separated component of `objectKey` (`input/demo.mp4` → `wm-demo.mp4`).
    public static func defaultWatermarkText(for objectKey: String) -> String {
        let last = objectKey.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? objectKey
        return "wm-" + last
    }
}

/// What the simulator has done so far.
public struct SimulatorStatistics: Sendable, Hashable, CustomStringConvertible {
    /// API requests received, faults included.
    public var requests = 0
    /// Requests answered by ``CISimulator/failNextRequests(count:status:retryAfter:)``.
    public var injectedFaults = 0
    /// Requests refused with 403.
    public var authenticationFailures = 0
    /// Jobs created.
    public var jobsSubmitted = 0
    /// Callback bodies a receiver answered with 2xx.
    public var delivered = 0
    /// Final callbacks withheld on purpose (``SimulatorConfiguration/dropProbability``).
    public var dropped = 0
    /// Extra copies of a callback body scheduled (``SimulatorConfiguration/duplicateProbability``).
    public var duplicates = 0
    /// Late `Running` callbacks scheduled (``SimulatorConfiguration/outOfOrderProbability``).
    public var outOfOrder = 0
    /// Delivery attempts after a failed one.
    public var retries = 0
    /// Callback bodies given up after ``SimulatorConfiguration/maxDeliveryAttempts``.
    public var failures = 0

    /// All zero.
    public init() {}

    public var description: String {
        "requests=\(requests) injectedFaults=\(injectedFaults) authenticationFailures=\(authenticationFailures) "
            + "jobsSubmitted=\(jobsSubmitted) delivered=\(delivered) dropped=\(dropped) duplicates=\(duplicates) "
            + "outOfOrder=\(outOfOrder) retries=\(retries) failures=\(failures)"
    }
}
