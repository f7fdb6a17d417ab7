#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A validity window in Unix seconds, written `"<start>;<end>"` in `q-sign-time` and `q-key-time`.
public struct COSTimeWindow: Sendable, Hashable, CustomStringConvertible {
    /// First valid second (inclusive).
    public var start: Int
    /// Last valid second (inclusive).
    public var end: Int

    /// Creates a window.
    /// - Parameters:
    ///   - start: First valid Unix second.
    ///   - end: Last valid Unix second.
    public init(start: Int, end: Int) {
        self.start = start
        self.end = end
    }

    /// Whether `second` (Unix seconds) lies in the window, both ends included.
    public func contains(_ second: Int) -> Bool { start <= second && second <= end }

    /// The wire form, `"<start>;<end>"`.
    public var description: String { "\(start);\(end)" }

    /// Parses `"<start>;<end>"`: two unsigned decimal numbers, `start <= end`, nothing else.
    init?(parsing text: Substring) {
        let parts = text.split(separator: ";", omittingEmptySubsequences: false)
        guard parts.count == 2,
            let start = Self.parseSeconds(parts[0]),
            let end = Self.parseSeconds(parts[1]),
            start <= end
        else { return nil }
        self.init(start: start, end: end)
    }

    private static func parseSeconds(_ text: Substring) -> Int? {
        // Int(_:) alone would also accept a sign; the wire form is digits only.
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int(text)
    }
}

/// A parsed COS `Authorization` header value (`q-sign-algorithm=sha1&q-ak=…&q-signature=…`).
///
/// Parsing checks only the form; ``COSSignatureVerifier`` checks the signature and the time window.
public struct COSAuthorization: Sendable, Hashable {
    /// `q-sign-algorithm`; always `"sha1"` once parsed.
    public var algorithm: String
    /// `q-ak`: the SecretId, which tells the verifier which SecretKey to use.
    public var secretID: String
    /// `q-sign-time`: when the signature is valid.
    public var signTime: COSTimeWindow
    /// `q-key-time`: the window the SignKey was derived for.
    public var keyTime: COSTimeWindow
    /// `q-header-list`: lower-cased, encoded names of the signed headers.
    public var headerList: [String]
    /// `q-url-param-list`: lower-cased, encoded names of the signed query parameters.
    public var urlParamList: [String]
    /// `q-signature`: 40 hex digits.
    public var signature: String

    /// Creates an authorization from its fields, e.g. to build one by hand in a test.
    public init(
        algorithm: String = "sha1",
        secretID: String,
        signTime: COSTimeWindow,
        keyTime: COSTimeWindow,
        headerList: [String],
        urlParamList: [String],
        signature: String
    ) {
        self.algorithm = algorithm
        self.secretID = secretID
        self.signTime = signTime
        self.keyTime = keyTime
        self.headerList = headerList
        self.urlParamList = urlParamList
        self.signature = signature
    }

    /// Parses an `Authorization` header value.
    ///
    /// All seven `q-` fields must be present exactly once (the two lists may be empty); fields this
    /// version does not know are ignored so that a newer client is not rejected for adding one.
    /// - Parameter header: The header value, surrounding whitespace allowed.
    /// - Throws: ``COSAuthorizationError/unsupportedAlgorithm`` for an algorithm other than `sha1`;
    ///   ``COSAuthorizationError/malformed`` for anything else wrong.
    public init(parsing header: String) throws(COSAuthorizationError) {
        var fields: [Substring: Substring] = [:]
        for component in header.trimmingASCIIWhitespace().split(separator: "&", omittingEmptySubsequences: false) {
            guard let equals = component.firstIndex(of: "=") else {
                throw .malformed("a field has no '='")
            }
            let name = component[..<equals]
            guard Self.knownFields.contains(name) else { continue }
            guard fields.updateValue(component[component.index(after: equals)...], forKey: name) == nil else {
                throw .malformed("\(name) appears more than once")
            }
        }
        func required(_ name: Substring) throws(COSAuthorizationError) -> Substring {
            guard let value = fields[name] else { throw .malformed("\(name) is missing") }
            return value
        }
        // Presence of every field is checked first, so a header that is both incomplete and uses another
        // algorithm is reported as malformed.
        for name in Self.knownFields { _ = try required(name) }
        let algorithm = try required("q-sign-algorithm")
        guard algorithm == "sha1" else { throw .unsupportedAlgorithm }
        let secretID = try required("q-ak")
        guard !secretID.isEmpty else { throw .malformed("q-ak is empty") }
        guard let signTime = COSTimeWindow(parsing: try required("q-sign-time")) else {
            throw .malformed("q-sign-time is not <start>;<end>")
        }
        guard let keyTime = COSTimeWindow(parsing: try required("q-key-time")) else {
            throw .malformed("q-key-time is not <start>;<end>")
        }
        guard let headerList = Self.parseList(try required("q-header-list")) else {
            throw .malformed("q-header-list has an empty name")
        }
        guard let urlParamList = Self.parseList(try required("q-url-param-list")) else {
            throw .malformed("q-url-param-list has an empty name")
        }
        let signature = try required("q-signature")
        guard signature.utf8.count == 2 * Digest.sha1Length, Hex.decode(signature) != nil else {
            throw .malformed("q-signature is not 40 hex digits")
        }
        self.init(
            algorithm: String(algorithm), secretID: String(secretID), signTime: signTime, keyTime: keyTime,
            headerList: headerList, urlParamList: urlParamList, signature: String(signature)
        )
    }

    private static let knownFields: [Substring] = [
        "q-sign-algorithm", "q-ak", "q-sign-time", "q-key-time", "q-header-list", "q-url-param-list", "q-signature",
    ]

    /// `""` is the empty list; otherwise `;`-separated non-empty names.
    private static func parseList(_ text: Substring) -> [String]? {
        guard !text.isEmpty else { return [] }
        let names = text.split(separator: ";", omittingEmptySubsequences: false)
        guard names.allSatisfy({ !$0.isEmpty }) else { return nil }
        return names.map(String.init)
    }
}

/// Why an `Authorization` header was rejected.
///
/// Compare with the static constants (`error == .expired`). ``detail`` says more (which field, which
/// header name) but never contains key material, signatures or header values, and is not part of equality.
public struct COSAuthorizationError: Error, Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    private enum Code: String, Sendable, Hashable {
        case malformed, unsupportedAlgorithm, expired, signatureMismatch, missingSignedHeader, missingSignedParameter
    }

    private let code: Code
    /// A non-secret explanation for logs and tests; empty when the code says it all.
    public let detail: String

    private init(_ code: Code, detail: String = "") {
        self.code = code
        self.detail = detail
    }

    /// The header value is not a well-formed COS `Authorization`.
    public static let malformed = Self(.malformed)
    /// `q-sign-algorithm` is not `sha1`.
    public static let unsupportedAlgorithm = Self(.unsupportedAlgorithm)
    /// The current time is outside `q-sign-time` or `q-key-time` (expired, or not yet valid).
    public static let expired = Self(.expired)
    /// The signature does not match the request under the given SecretKey.
    public static let signatureMismatch = Self(.signatureMismatch)
    /// A header named in `q-header-list` is absent from the request.
    public static let missingSignedHeader = Self(.missingSignedHeader)
    /// A query parameter named in `q-url-param-list` is absent from the request.
    public static let missingSignedParameter = Self(.missingSignedParameter)

    static func malformed(_ detail: String) -> Self { Self(.malformed, detail: detail) }
    static func expired(_ detail: String) -> Self { Self(.expired, detail: detail) }
    static func missingSignedHeader(_ name: String) -> Self { Self(.missingSignedHeader, detail: "header \(name)") }
    static func missingSignedParameter(_ name: String) -> Self { Self(.missingSignedParameter, detail: "parameter \(name)") }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    public var description: String { "COSAuthorizationError.\(code.rawValue)" }

    public var debugDescription: String {
        detail.isEmpty ? description : "\(description): \(detail)"
    }
}

/// Verifies incoming COS signatures, for a CI simulator or any service that accepts COS-signed requests.
public enum COSSignatureVerifier {
    /// Checks `authorization` against a received request.
    ///
    /// Only the headers and query parameters named in the authorization's lists are signed-over; others
    /// are ignored, as on COS. Each named one must be present (a named name matches every occurrence).
    /// The signature is compared in constant time.
    /// - Parameters:
    ///   - authorization: The parsed `Authorization` header.
    ///   - method: The request method.
    ///   - path: The **decoded** request path.
    ///   - query: All decoded query parameters of the request (valueless → `""`).
    ///   - headers: All request headers.
    ///   - secretKey: The SecretKey that belongs to ``COSAuthorization/secretID``.
    ///   - now: The current time; must lie within both `q-sign-time` and `q-key-time`.
    /// - Returns: `.success` or the first reason for rejection, checked in the order: time window,
    ///   missing signed header, missing signed parameter, signature.
    public static func verify(
        _ authorization: COSAuthorization,
        method: String,
        path: String,
        query: [(name: String, value: String)],
        headers: [(name: String, value: String)],
        secretKey: String,
        now: Date
    ) -> Result<Void, COSAuthorizationError> {
        guard authorization.algorithm == "sha1" else { return .failure(.unsupportedAlgorithm) }
        let second = Int(now.timeIntervalSince1970.rounded(.down))
        guard authorization.signTime.contains(second) else { return .failure(.expired("outside q-sign-time")) }
        guard authorization.keyTime.contains(second) else { return .failure(.expired("outside q-key-time")) }
        guard let received = Hex.decode(authorization.signature), received.count == Digest.sha1Length else {
            return .failure(.malformed("q-signature is not 40 hex digits"))
        }

        let signedHeaders: [(name: String, value: String)]
        switch select(authorization.headerList, from: headers) {
        case .success(let selected): signedHeaders = selected
        case .failure(let missing): return .failure(.missingSignedHeader(missing.name))
        }
        let signedQuery: [(name: String, value: String)]
        switch select(authorization.urlParamList, from: query) {
        case .success(let selected): signedQuery = selected
        case .failure(let missing): return .failure(.missingSignedParameter(missing.name))
        }

        let expected = SignatureComputation(
            method: method, path: path, query: signedQuery, headers: signedHeaders,
            secretKey: secretKey, keyTime: authorization.keyTime.description
        )
        // Comparing decoded bytes rather than hex text also accepts a client that sends uppercase hex.
        guard Digest.constantTimeEqual(received, expected.signatureBytes) else {
            return .failure(.signatureMismatch)
        }
        return .success(())
    }

    private struct MissingName: Error {
        var name: String
    }

    /// The pairs whose canonical (encoded, lower-cased) name is in `names`, in request order.
    private static func select(
        _ names: [String],
        from pairs: [(name: String, value: String)]
    ) -> Result<[(name: String, value: String)], MissingName> {
        let wanted = Set(names.map { $0.lowercased() })
        let selected = pairs.filter { wanted.contains(COSSigner.urlEncode($0.name).lowercased()) }
        let present = Set(selected.map { COSSigner.urlEncode($0.name).lowercased() })
        if let missing = names.first(where: { !present.contains($0.lowercased()) }) {
            return .failure(MissingName(name: missing))
        }
        return .success(selected)
    }
}

extension String {
    /// Trims spaces, tabs, CR and LF. Works on UTF-8 bytes because `"\r\n"` is a single `Character`, which a
    /// per-Character comparison with `"\r"` or `"\n"` would not trim; FoundationEssentials lacks `trimmingCharacters(in:)`.
    fileprivate func trimmingASCIIWhitespace() -> Substring {
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D || $0 == 0x0A }
        guard let first = utf8.firstIndex(where: { !isSpace($0) }), let last = utf8.lastIndex(where: { !isSpace($0) }) else {
            return self[endIndex...]
        }
        return self[first...last]
    }
}
