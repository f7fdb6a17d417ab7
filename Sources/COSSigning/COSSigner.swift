#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The parts of an HTTP request that the COS signature covers.
public struct COSSigningRequest: Sendable {
    /// The HTTP method, any case (`"GET"`, `"PUT"`, …); it is lower-cased when signed.
    public var method: String
    /// The **decoded** path, e.g. `/exampleobject(腾讯云)` or `/jobs/j123`, exactly as it is signed.
    public var path: String
    /// The query parameters to sign, decoded. A valueless parameter (`?uploads`) has value `""`.
    public var query: [(name: String, value: String)]
    /// The headers to sign, chosen by the caller (see ``COSSigner/headersToSign(from:)``).
    public var headers: [(name: String, value: String)]

    /// Creates a request description to sign.
    /// - Parameters:
    ///   - method: The HTTP method.
    ///   - path: The decoded request path.
    ///   - query: Decoded query parameters, in request order.
    ///   - headers: The headers to sign.
    public init(
        method: String,
        path: String,
        query: [(name: String, value: String)] = [],
        headers: [(name: String, value: String)] = []
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
    }
}

/// A computed COS signature, with every intermediate value of the algorithm.
///
/// The intermediates are exposed so they can be compared with Tencent's published examples; only
/// ``authorization`` goes on the wire. `description` omits ``signKey``, which can sign any request
/// until the key time ends.
public struct COSSignature: Sendable, Hashable, CustomStringConvertible {
    /// `"<start>;<end>"` in Unix seconds: both `q-sign-time` and `q-key-time`.
    public var keyTime: String
    /// Lowercase hex HMAC-SHA1 of ``keyTime`` under the SecretKey.
    public var signKey: String
    /// Sorted, lower-cased, encoded query parameter names joined by `;` (`q-url-param-list`).
    public var urlParamList: String
    /// `name=value` query pairs, sorted by name, joined by `&`.
    public var httpParameters: String
    /// Sorted, lower-cased, encoded header names joined by `;` (`q-header-list`).
    public var headerList: String
    /// `name=value` header pairs, sorted by name, joined by `&`.
    public var httpHeaders: String
    /// `method\npath\nhttpParameters\nhttpHeaders\n`.
    public var httpString: String
    /// Lowercase hex SHA-1 of ``httpString``.
    public var sha1OfHTTPString: String
    /// `sha1\nkeyTime\nsha1OfHTTPString\n`.
    public var stringToSign: String
    /// Lowercase hex HMAC-SHA1 of ``stringToSign`` under ``signKey`` (its hex text, not its bytes).
    public var signature: String
    /// The complete `Authorization` header value: `q-sign-algorithm=sha1&q-ak=…&q-signature=…`.
    public var authorization: String

    public var description: String {
        "COSSignature(keyTime: \(keyTime), headerList: \(headerList), urlParamList: \(urlParamList), "
            + "signature: \(signature), signKey: <redacted>)"
    }
}

/// Computes the COS / CI request signature (`q-sign-algorithm=sha1`) for outgoing requests.
///
/// Implements the COS "Request Signature" document (https://cloud.tencent.com/document/product/436/7778),
/// checked against its published examples and the Go SDK's `auth.go`.
public enum COSSigner {
    /// Signs `request` for the key time `start;end`.
    /// - Parameters:
    ///   - request: What to sign.
    ///   - credentials: The key pair; the SecretId goes into `q-ak`.
    ///   - start: Start of validity, Unix seconds.
    ///   - end: End of validity, Unix seconds.
    /// - Returns: The signature with all intermediate values.
    public static func sign(_ request: COSSigningRequest, credentials: COSCredentials, start: Int, end: Int) -> COSSignature {
        let keyTime = "\(start);\(end)"
        let parts = SignatureComputation(
            method: request.method, path: request.path, query: request.query, headers: request.headers,
            secretKey: credentials.secretKey, keyTime: keyTime
        )
        let authorization =
            "q-sign-algorithm=sha1&q-ak=\(credentials.secretID)&q-sign-time=\(keyTime)&q-key-time=\(keyTime)"
            + "&q-header-list=\(parts.headers.list)&q-url-param-list=\(parts.parameters.list)&q-signature=\(parts.signature)"
        return COSSignature(
            keyTime: keyTime,
            signKey: parts.signKey,
            urlParamList: parts.parameters.list,
            httpParameters: parts.parameters.formatted,
            headerList: parts.headers.list,
            httpHeaders: parts.headers.formatted,
            httpString: parts.httpString,
            sha1OfHTTPString: parts.sha1OfHTTPString,
            stringToSign: parts.stringToSign,
            signature: parts.signature,
            authorization: authorization
        )
    }

    /// Signs `request` for a window that starts at `now` (rounded down to a second).
    /// - Parameters:
    ///   - request: What to sign.
    ///   - credentials: The key pair.
    ///   - now: Start of validity.
    ///   - validFor: Length of validity, whole seconds (fractions are dropped). Default: 600 s, the SDKs' usual value.
    /// - Returns: The signature with all intermediate values.
    public static func sign(
        _ request: COSSigningRequest,
        credentials: COSCredentials,
        now: Date,
        validFor: Duration = .seconds(600)
    ) -> COSSignature {
        let start = Int(now.timeIntervalSince1970.rounded(.down))
        let seconds = Int(validFor.components.seconds)
        return sign(request, credentials: credentials, start: start, end: start + max(seconds, 0))
    }

    /// Percent-encodes `s` as the signature requires (RFC 3986, uppercase hex).
    ///
    /// Only `A–Z a–z 0–9 - _ . ~` stay literal; every other UTF-8 byte becomes `%XX`, so a space is `%20`
    /// (never `+`) and `/`, `=`, `+`, `,`, `:` are all encoded.
    /// - Parameter s: Decoded text.
    /// - Returns: The encoded text.
    public static func urlEncode(_ s: String) -> String {
        var encoded: [UInt8] = []
        encoded.reserveCapacity(s.utf8.count)
        for byte in s.utf8 {
            if isUnreserved(byte) {
                encoded.append(byte)
            } else {
                encoded.append(UInt8(ascii: "%"))
                encoded.append(upperHexDigits[Int(byte >> 4)])
                encoded.append(upperHexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: encoded, as: UTF8.self)
    }

    /// The headers a client signs, as Tencent's Go SDK chooses them.
    ///
    /// Selects `host`, `content-type`, `content-length`, `content-md5` and every `x-cos-*` / `x-ci-*` header
    /// (names compared case-insensitively), in their original order. `date` is never selected: a request
    /// that must sign it can use ``headersToSign(from:including:)``.
    /// - Parameter allHeaders: Every header the request will carry.
    /// - Returns: The subset to pass as ``COSSigningRequest/headers``.
    public static func headersToSign(from allHeaders: [(name: String, value: String)]) -> [(name: String, value: String)] {
        headersToSign(from: allHeaders, including: [])
    }

    /// The headers a client signs: those of ``headersToSign(from:)`` plus any named in `extraNames`.
    /// - Parameters:
    ///   - allHeaders: Every header the request will carry.
    ///   - extraNames: Further header names to sign, e.g. `["date"]`; compared case-insensitively.
    /// - Returns: The subset to pass as ``COSSigningRequest/headers``.
    public static func headersToSign(
        from allHeaders: [(name: String, value: String)],
        including extraNames: Set<String>
    ) -> [(name: String, value: String)] {
        let extras = Set(extraNames.map { $0.lowercased() })
        return allHeaders.filter { header in
            let name = header.name.lowercased()
            return alwaysSignedHeaders.contains(name) || name.hasPrefix("x-cos-") || name.hasPrefix("x-ci-")
                || extras.contains(name)
        }
    }

    private static let alwaysSignedHeaders: Set<String> = ["host", "content-type", "content-length", "content-md5"]
    private static let upperHexDigits = Array("0123456789ABCDEF".utf8)

    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }
}

/// The signature algorithm proper, shared by ``COSSigner`` (which signs) and ``COSSignatureVerifier``
/// (which recomputes), so that the two cannot drift apart.
struct SignatureComputation {
    /// A canonicalised list of pairs: `list` is the `;`-joined names, `formatted` the `&`-joined `name=value`.
    struct Canonical {
        var list: String
        var formatted: String
        /// The encoded, lower-cased names in signing order.
        var names: [String]
    }

    var signKey: String
    var parameters: Canonical
    var headers: Canonical
    var httpString: String
    var sha1OfHTTPString: String
    var stringToSign: String
    var signatureBytes: [UInt8]
    var signature: String

    init(
        method: String,
        path: String,
        query: [(name: String, value: String)],
        headers: [(name: String, value: String)],
        secretKey: String,
        keyTime: String
    ) {
        signKey = Hex.encode(Digest.hmacSHA1(key: Array(secretKey.utf8), message: Array(keyTime.utf8)))
        parameters = Self.canonicalise(query)
        self.headers = Self.canonicalise(headers)
        httpString = "\(method.lowercased())\n\(path)\n\(parameters.formatted)\n\(self.headers.formatted)\n"
        sha1OfHTTPString = Hex.encode(Digest.sha1(httpString.utf8))
        stringToSign = "sha1\n\(keyTime)\n\(sha1OfHTTPString)\n"
        // The key is the hex *text* of SignKey, not its 20 raw bytes: that is what the document and every SDK do.
        signatureBytes = Digest.hmacSHA1(key: Array(signKey.utf8), message: Array(stringToSign.utf8))
        signature = Hex.encode(signatureBytes)
    }

    /// Encodes and lower-cases names, encodes values (case kept), and sorts by name. Pairs with equal names
    /// keep their given order, as Go's `url.Values` does, so a repeated parameter signs deterministically.
    static func canonicalise(_ pairs: [(name: String, value: String)]) -> Canonical {
        let encoded = pairs.enumerated().map { index, pair in
            (name: COSSigner.urlEncode(pair.name).lowercased(), value: COSSigner.urlEncode(pair.value), index: index)
        }
        // Encoded names are ASCII, so String ordering here is byte ordering, as in the SDKs' sort.
        let sorted = encoded.sorted { ($0.name, $0.index) < ($1.name, $1.index) }
        let names = sorted.map(\.name)
        return Canonical(
            list: names.joined(separator: ";"),
            formatted: sorted.map { "\($0.name)=\($0.value)" }.joined(separator: "&"),
            names: names
        )
    }
}
