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
        key(of: secret).map { signature(key: $0, id: id, timestamp: timestamp, body: body) }
    }

    /// The `webhook-signature` value for one attempt, signed with a secret's key bytes.
    public static func signature(key: [UInt8], id: String, timestamp: Int64, body: [UInt8]) -> String {
        let message = Array("\(id).\(timestamp).".utf8) + body
        return "v1," + Data(Digest.hmacSHA256(key: key, message: message)).base64EncodedString()
    }
}

/// One POST's Standard Webhooks signature, for the second it is sent: `webhook-timestamp` is when the
/// attempt was made, and a POST may wait for its subscription's turn in the sender for several timeouts
/// after it was signed. A consumer refuses a timestamp outside its tolerance (5 minutes in
/// `standardwebhooks`), so the sender signs it again when the second has moved on
/// (``WebhookSenderThread/PreparedPost/signed(at:)``).
struct WebhookSignature: Sendable {
    let key: [UInt8]
    /// The event's `webhook-id`.
    let id: String
    /// The unix second it is signed for: `webhook-timestamp`.
    let timestamp: Int64
    /// `webhook-signature`.
    let value: String

    init(key: [UInt8], id: String, timestamp: Int64, body: [UInt8]) {
        self.key = key
        self.id = id
        self.timestamp = timestamp
        self.value = WebhookSigning.signature(key: key, id: id, timestamp: timestamp, body: body)
    }

    /// Its headers: `webhook-id`, `webhook-timestamp` and `webhook-signature`.
    var headers: [(String, String)] {
        [("webhook-id", id), ("webhook-timestamp", String(timestamp)), ("webhook-signature", value)]
    }

    /// The current unix second.
    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }
}
