import COSSigning
import Foundation

/// Standard Webhooks v1 symmetric signatures: `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`
/// where the key is the bytes behind a `whsec_` secret's base64.
public enum WebhookSigning {
    public static let secretPrefix = "whsec_"
    /// Random bytes behind a new secret: inside the 24–512 bytes the specification allows.
    public static let secretByteCount = 32

    /// A new secret: `whsec_` + base64 of ``secretByteCount`` bytes from the system's generator.
    public static func newSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<secretByteCount).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return secretPrefix + Data(bytes).base64EncodedString()
    }

    /// The key bytes of a `whsec_` secret; nil for anything else.
    public static func key(of secret: String) -> [UInt8]? {
        guard secret.hasPrefix(secretPrefix), let data = Data(base64Encoded: String(secret.dropFirst(secretPrefix.count))), !data.isEmpty
        else { return nil }
        return Array(data)
    }

    /// The `webhook-signature` value for one attempt; nil when `secret` is not a `whsec_` secret.
    public static func signature(secret: String, id: String, timestamp: Int64, body: [UInt8]) -> String? {
        guard let key = key(of: secret) else { return nil }
        let message = Array("\(id).\(timestamp).".utf8) + body
        return "v1," + Data(Digest.hmacSHA256(key: key, message: message)).base64EncodedString()
    }
}
