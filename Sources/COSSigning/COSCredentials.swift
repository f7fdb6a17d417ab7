/// A Tencent Cloud API key pair, optionally a temporary one (STS) with its session token.
///
/// `description` and `debugDescription` never show `secretKey` or `sessionToken`, so credentials can be
/// interpolated into log messages or test failures without leaking them. The SecretId is shown
/// abbreviated: it is sent in clear in every `Authorization` header, but abbreviating it keeps full
/// identifiers out of logs.
public struct COSCredentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The SecretId (`q-ak` in the `Authorization` header).
    public var secretID: String
    /// The SecretKey. Only ever used as HMAC key material; never printed.
    public var secretKey: String
    /// The session token of temporary credentials; `nil` for a permanent key.
    public var sessionToken: String?

    /// Creates credentials.
    /// - Parameters:
    ///   - secretID: The SecretId.
    ///   - secretKey: The SecretKey.
    ///   - sessionToken: The token of temporary (STS) credentials, or `nil` for a permanent key pair.
    public init(secretID: String, secretKey: String, sessionToken: String? = nil) {
        self.secretID = secretID
        self.secretKey = secretKey
        self.sessionToken = sessionToken
    }

    /// Which service a request goes to, because the two name the temporary-credential header differently.
    public enum Service: Sendable, Hashable {
        /// Cloud Object Storage (`<bucket>.cos.<region>.myqcloud.com`): header `x-cos-security-token`.
        case cos
        /// Cloud Infinite (`<bucket>.ci.<region>.myqcloud.com`): header `x-ci-security-token`, as Tencent's
        /// Python, C++ and Android SDKs send it for CI requests.
        case ci
    }

    /// The headers a request made with these credentials must carry, and sign, besides its own.
    ///
    /// Empty for a permanent key. For temporary credentials, the session-token header; its name starts with
    /// `x-cos-` or `x-ci-`, so ``COSSigner/headersToSign(from:)`` selects it for signing like any other
    /// such header. Add these to the request *before* choosing the headers to sign.
    /// - Parameter service: The service the request goes to. Defaults to `.cos`, the header the COS
    ///   "Request Signature" document names.
    /// - Returns: Zero or one `(name, value)` pair.
    public func securityTokenHeaders(for service: Service = .cos) -> [(name: String, value: String)] {
        guard let sessionToken, !sessionToken.isEmpty else { return [] }
        switch service {
        case .cos: return [(name: "x-cos-security-token", value: sessionToken)]
        case .ci: return [(name: "x-ci-security-token", value: sessionToken)]
        }
    }

    public var description: String {
        "COSCredentials(secretID: \(Self.abbreviated(secretID)), secretKey: <redacted>)"
    }

    public var debugDescription: String {
        let token = sessionToken == nil ? "nil" : "<redacted>"
        return "COSCredentials(secretID: \(Self.abbreviated(secretID)), secretKey: <redacted>, sessionToken: \(token))"
    }

    /// First and last four characters; identifiers too short for that to hide anything are fully masked.
    private static func abbreviated(_ identifier: String) -> String {
        guard identifier.count >= 12 else { return "<redacted>" }
        return "\(identifier.prefix(4))…\(identifier.suffix(4))"
    }
}
