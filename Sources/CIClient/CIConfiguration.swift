import COSSigning
import Foundation

/// Where and as whom ``CIClient`` calls Tencent Cloud Infinite, and how patiently.
///
/// `description` comes from ``COSCredentials``, which never prints the SecretKey or session token.
public struct CIConfiguration: Sendable, CustomStringConvertible {
    /// The key pair every request is signed with.
    public var credentials: COSCredentials
    /// `BucketName-APPID`, for example `examplebucket-1250000000`.
    public var bucket: String
    /// The bucket's region, for example `ap-chongqing`.
    public var region: String
    /// The API's base URL. Default: `https://<bucket>.ci.<region>.myqcloud.com`; tests point it at a
    /// simulator (`http://127.0.0.1:<port>`). A path in it is kept as a prefix of `/jobs`.
    public var endpoint: URL
    /// The queue jobs are submitted to and listed from when a request names none; `nil` leaves it to CI
    /// (submission then uses the bucket's default queue).
    public var queueID: String?
    /// Longest time one HTTP exchange (connect, send, receive) may take before it counts as a timeout.
    /// Default: 10 s.
    public var requestTimeout: Duration = .seconds(10)
    /// Attempts per call, the first included; retries happen on network errors, timeouts, 5xx and 429
    /// (for `POST /jobs` only where CI cannot have created the job, see ``CIClient``). Default: 4.
    public var maxAttempts: Int = 4
    /// Backoff before retry *n* is drawn uniformly from `0...min(maxBackoff, baseBackoff × 2^(n-1))`
    /// ("full jitter"). Default: 200 ms.
    public var baseBackoff: Duration = .milliseconds(200)
    /// Upper bound of one backoff. Default: 5 s.
    public var maxBackoff: Duration = .seconds(5)
    /// Longest `Retry-After` the client waits out by itself; a longer one ends the call with a retryable
    /// error that carries the server's value, so a caller with a schedule of its own (a reconciler) can
    /// come back later instead of holding a task for minutes. Default: 30 s.
    public var maxRetryAfter: Duration = .seconds(30)
    /// How long each request signature stays valid. Default: 600 s, what Tencent's SDKs use.
    public var signatureValidity: Duration = .seconds(600)

    /// Creates a configuration.
    /// - Parameters:
    ///   - credentials: The key pair (and session token of temporary credentials).
    ///   - bucket: `BucketName-APPID`.
    ///   - region: The region, for example `ap-chongqing`.
    ///   - endpoint: The base URL; `nil` means `https://<bucket>.ci.<region>.myqcloud.com`.
    ///   - queueID: The default queue, or `nil`.
    public init(credentials: COSCredentials, bucket: String, region: String, endpoint: URL? = nil, queueID: String? = nil) {
        self.credentials = credentials
        self.bucket = bucket
        self.region = region
        self.endpoint = endpoint ?? Self.defaultEndpoint(bucket: bucket, region: region)
        self.queueID = queueID
    }

    /// `https://<bucket>.ci.<region>.myqcloud.com`.
    ///
    /// A bucket or region that cannot form a host name yields a URL under the reserved `.invalid` domain,
    /// which no request can reach; ``validate()`` reports the actual mistake.
    public static func defaultEndpoint(bucket: String, region: String) -> URL {
        URL(string: "https://\(bucket).ci.\(region).myqcloud.com") ?? URL(string: "https://ci-endpoint.invalid")!
    }

    /// Reads the configuration from environment variables.
    ///
    /// `CI_SECRET_ID`, `CI_SECRET_KEY`, `CI_SESSION_TOKEN` (optional), `CI_BUCKET`, `CI_REGION`,
    /// `CI_QUEUE_ID` (optional), `CI_ENDPOINT` (optional). An empty value counts as unset, because
    /// compose files and Kubernetes manifests commonly pass `CI_SECRET_ID=` for "not configured".
    /// - Parameter env: The environment, for example `ProcessInfo.processInfo.environment`.
    /// - Returns: `nil` when `CI_SECRET_ID` is unset: the service then runs without calling CI.
    /// - Throws: ``CIConfigurationError`` naming the first variable that is missing or invalid.
    public static func fromEnvironment(_ env: [String: String]) throws(CIConfigurationError) -> CIConfiguration? {
        func value(_ name: String) -> String? {
            guard let raw = env[name] else { return nil }
            let trimmed = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            return trimmed.isEmpty ? nil : trimmed
        }
        func required(_ name: String) throws(CIConfigurationError) -> String {
            guard let found = value(name) else { throw CIConfigurationError(variable: name, reason: "is required when CI_SECRET_ID is set") }
            return found
        }
        guard let secretID = value("CI_SECRET_ID") else { return nil }
        let secretKey = try required("CI_SECRET_KEY")
        let bucket = try required("CI_BUCKET")
        let region = try required("CI_REGION")
        var endpoint: URL?
        if let text = value("CI_ENDPOINT") {
            guard let url = URL(string: text), Self.isUsableEndpoint(url) else {
                throw CIConfigurationError(variable: "CI_ENDPOINT", reason: "is not an http(s) URL with a host")
            }
            endpoint = url
        }
        let configuration = CIConfiguration(
            credentials: COSCredentials(secretID: secretID, secretKey: secretKey, sessionToken: value("CI_SESSION_TOKEN")),
            bucket: bucket,
            region: region,
            endpoint: endpoint,
            queueID: value("CI_QUEUE_ID")
        )
        try configuration.validate()
        return configuration
    }

    /// Checks the fields a request depends on, naming the environment variable each comes from.
    ///
    /// - Throws: ``CIConfigurationError`` for an empty key, a bucket that is not `name-appid`, a region
    ///   that is not a host label, a queue id with characters other than letters and digits, an endpoint
    ///   that is not http(s), or non-positive limits.
    public func validate() throws(CIConfigurationError) {
        if credentials.secretID.isEmpty || credentials.secretID.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7F || $0 == UInt8(ascii: "&") }) {
            throw CIConfigurationError(variable: "CI_SECRET_ID", reason: "must be non-empty printable ASCII without '&'")
        }
        if credentials.secretKey.isEmpty {
            throw CIConfigurationError(variable: "CI_SECRET_KEY", reason: "must not be empty")
        }
        if !Self.isBucket(bucket) {
            throw CIConfigurationError(variable: "CI_BUCKET", reason: "must be BucketName-APPID (lowercase letters, digits, '-', ending in -<digits>)")
        }
        if !Self.isHostLabel(region) {
            throw CIConfigurationError(variable: "CI_REGION", reason: "must be a region name such as ap-chongqing")
        }
        if let queueID, queueID.isEmpty || !queueID.utf8.allSatisfy(Self.isAlphanumeric) {
            throw CIConfigurationError(variable: "CI_QUEUE_ID", reason: "must be letters and digits")
        }
        if !Self.isUsableEndpoint(endpoint) {
            throw CIConfigurationError(variable: "CI_ENDPOINT", reason: "is not an http(s) URL with a host")
        }
        if maxAttempts < 1 {
            throw CIConfigurationError(variable: "maxAttempts", reason: "must be at least 1")
        }
        if requestTimeout <= .zero || baseBackoff < .zero || maxBackoff < baseBackoff || signatureValidity < .seconds(1) {
            throw CIConfigurationError(
                variable: "requestTimeout/baseBackoff/maxBackoff/signatureValidity",
                reason: "timeouts must be positive and maxBackoff at least baseBackoff"
            )
        }
    }

    public var description: String {
        "CIConfiguration(credentials: \(credentials), bucket: \(bucket), region: \(region), endpoint: \(endpoint.absoluteString), "
            + "queueID: \(queueID ?? "nil"))"
    }

    // MARK: Syntax checks

    static func isUsableEndpoint(_ url: URL) -> Bool {
        guard let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https" else { return false }
        guard let host = url.host, !host.isEmpty else { return false }
        return url.query == nil && url.fragment == nil
    }

    /// `name-appid`: a COS bucket name (lowercase letters, digits, `-`) with the numeric APPID suffix.
    static func isBucket(_ text: String) -> Bool {
        guard isHostLabel(text), let dash = text.lastIndex(of: "-") else { return false }
        let appID = text[text.index(after: dash)...]
        return dash != text.startIndex && !appID.isEmpty && appID.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    static func isHostLabel(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 63, text.first != "-", text.last != "-" else { return false }
        return text.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: "-")
        }
    }

    static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
    }
}

/// A CI setting that is missing or unusable. Names the variable, never shows its value (it may be a key).
public struct CIConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The environment variable (or configuration field) at fault, for example `CI_BUCKET`.
    public var variable: String
    /// What is wrong with it.
    public var reason: String

    /// Creates an error.
    public init(variable: String, reason: String) {
        self.variable = variable
        self.reason = reason
    }

    public var description: String { "\(variable) \(reason)" }
}
