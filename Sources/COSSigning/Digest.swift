import CCrypto

/// SHA-1, SHA-256, HMAC-SHA1 and HMAC-SHA256 over OpenSSL libcrypto's one-shot APIs.
///
/// `EVP_Digest` and `HMAC()` are the non-deprecated OpenSSL 3 entry points, so building against
/// libcrypto 3.x produces no deprecation warnings. Both only fail on allocation failure inside
/// libcrypto, which this module treats like any other out-of-memory condition: a trap.
public enum Digest {
    /// Length in bytes of a SHA-1 digest (and of an HMAC-SHA1 tag).
    public static let sha1Length = 20
    /// Length in bytes of a SHA-256 digest.
    public static let sha256Length = 32

    /// The SHA-1 digest of `data`.
    /// - Parameter data: The bytes to hash, for example `string.utf8`.
    /// - Returns: 20 raw digest bytes.
    public static func sha1(_ data: some Sequence<UInt8>) -> [UInt8] {
        digest(data, algorithm: EVP_sha1(), length: sha1Length)
    }

    /// The SHA-256 digest of `data`.
    /// - Parameter data: The bytes to hash, for example `string.utf8`.
    /// - Returns: 32 raw digest bytes.
    public static func sha256(_ data: some Sequence<UInt8>) -> [UInt8] {
        digest(data, algorithm: EVP_sha256(), length: sha256Length)
    }

    /// HMAC-SHA1 of `message` under `key` (RFC 2104).
    /// - Parameters:
    ///   - key: The MAC key, any length (keys longer than the block size are hashed, as RFC 2104 says).
    ///   - message: The bytes to authenticate.
    /// - Returns: 20 raw tag bytes.
    public static func hmacSHA1(key: [UInt8], message: [UInt8]) -> [UInt8] {
        hmac(EVP_sha1(), length: sha1Length, key: key, message: message)
    }

    /// HMAC-SHA256 of `message` under `key` (RFC 2104): what Standard Webhooks signs deliveries with, and the
    /// console's session MACs.
    /// - Returns: 32 raw tag bytes.
    public static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        hmac(EVP_sha256(), length: sha256Length, key: key, message: message)
    }

    private static func hmac(_ algorithm: OpaquePointer?, length: Int, key: [UInt8], message: [UInt8]) -> [UInt8] {
        precondition(key.count <= Int(Int32.max), "HMAC key longer than libcrypto accepts")
        var output = [UInt8](repeating: 0, count: length)
        var outputLength: UInt32 = 0
        let produced = withNonNullBytes(key) { keyPointer, keyCount in
            withNonNullBytes(message) { messagePointer, messageCount in
                output.withUnsafeMutableBufferPointer { out in
                    HMAC(
                        algorithm, keyPointer, Int32(keyCount),
                        messagePointer.assumingMemoryBound(to: UInt8.self), messageCount,
                        out.baseAddress, &outputLength
                    ) != nil
                }
            }
        }
        precondition(produced && outputLength == UInt32(length), "libcrypto HMAC failed")
        return output
    }

    /// Whether `presented` equals `expected`, in time that depends only on `presented`'s length: never on
    /// where the bytes differ, nor on the length of `expected`.
    ///
    /// The one comparison for secrets and MACs received from outside (request signatures, API and
    /// callback tokens, console session MACs and form tokens), so that response timing reveals neither how
    /// many leading bytes of a guess were right nor how long a token is.
    /// - Parameters:
    ///   - presented: what the client sent.
    ///   - expected: the secret or the MAC computed here.
    public static func constantTimeEqual(_ presented: [UInt8], _ expected: [UInt8]) -> Bool {
        guard !presented.isEmpty else { return expected.isEmpty }
        let sameLength = presented.count == expected.count
        // On a length mismatch `presented` is compared with itself, so the work is the same either way.
        let other = sameLength ? expected : presented
        let bytesEqual = presented.withUnsafeBytes { p in
            other.withUnsafeBytes { o in CRYPTO_memcmp(p.baseAddress, o.baseAddress, p.count) == 0 }
        }
        return bytesEqual && sameLength
    }

    private static func digest(_ data: some Sequence<UInt8>, algorithm: OpaquePointer?, length: Int) -> [UInt8] {
        // Contiguous inputs (Array, native String.UTF8View) are hashed in place; anything else is copied once.
        let result = data.withContiguousStorageIfAvailable { digest(UnsafeRawBufferPointer($0), algorithm: algorithm, length: length) }
        return result ?? Array(data).withUnsafeBytes { digest($0, algorithm: algorithm, length: length) }
    }

    private static func digest(_ bytes: UnsafeRawBufferPointer, algorithm: OpaquePointer?, length: Int) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: length)
        var outputLength: UInt32 = 0
        let status = withNonNullBytes(bytes) { pointer, count in
            output.withUnsafeMutableBufferPointer { out in
                EVP_Digest(pointer, count, out.baseAddress, &outputLength, algorithm, nil)
            }
        }
        precondition(status == 1 && outputLength == UInt32(length), "libcrypto EVP_Digest failed")
        return output
    }

    /// Calls `body` with a pointer that is never NULL, even for empty input: an empty Swift buffer may have a
    /// nil base address, and libcrypto rejects a NULL data pointer on some paths even when the length is zero.
    private static func withNonNullBytes<R>(
        _ bytes: UnsafeRawBufferPointer,
        _ body: (UnsafeRawPointer, Int) -> R
    ) -> R {
        if let base = bytes.baseAddress, !bytes.isEmpty { return body(base, bytes.count) }
        var placeholder: UInt8 = 0
        return withUnsafeBytes(of: &placeholder) { body($0.baseAddress!, 0) }
    }

    private static func withNonNullBytes<R>(_ bytes: [UInt8], _ body: (UnsafeRawPointer, Int) -> R) -> R {
        bytes.withUnsafeBytes { withNonNullBytes($0, body) }
    }
}

/// Lowercase hexadecimal encoding, the form every hex value in the COS signature uses.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Encodes `bytes` as lowercase hexadecimal, two characters per byte.
    /// - Parameter bytes: The bytes to encode.
    /// - Returns: A string of `2 * bytes.count` characters from `0-9a-f`.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var characters: [UInt8] = []
        characters.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes {
            characters.append(digits[Int(byte >> 4)])
            characters.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: characters, as: UTF8.self)
    }

    /// Decodes hexadecimal text (either case).
    /// - Parameter text: An even number of hex digits, with nothing else.
    /// - Returns: The decoded bytes, or `nil` if `text` has odd length or a non-hex character.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count.isMultiple(of: 2) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count / 2)
        var index = 0
        while index < utf8.count {
            guard let high = value(of: utf8[index]), let low = value(of: utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func value(of digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
