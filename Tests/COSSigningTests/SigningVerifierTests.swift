import COSSigning
import Foundation
import Testing

private let secretID = "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q"
private let secretKey = "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
private let start = 1_656_574_974
private let end = 1_656_578_574
private let inWindow = Date(timeIntervalSince1970: TimeInterval(start + 60))

private let requestHeaders: [(name: String, value: String)] = [
    (name: "Host", value: "test-1234567890.ci.ap-chongqing.myqcloud.com"),
    (name: "Content-Type", value: "application/xml"),
    (name: "x-cos-meta-source", value: "ci-callbackd"),
    (name: "User-Agent", value: "ci-callbackd/1"),
]
private let requestQuery: [(name: String, value: String)] = [
    (name: "queueId", value: "p0123AbCd"),
    (name: "states", value: "Success,Failed"),
    (name: "uploads", value: ""),
]

/// Signs the fixture request and parses the resulting header, as a client and a server would.
private func signedAuthorization(secretKey key: String = secretKey) throws -> COSAuthorization {
    let signature = COSSigner.sign(
        COSSigningRequest(method: "POST", path: "/jobs/腾讯云", query: requestQuery, headers: COSSigner.headersToSign(from: requestHeaders)),
        credentials: COSCredentials(secretID: secretID, secretKey: key),
        start: start, end: end
    )
    return try COSAuthorization(parsing: signature.authorization)
}

private func verifyFixture(
    _ authorization: COSAuthorization,
    method: String = "POST",
    path: String = "/jobs/腾讯云",
    query: [(name: String, value: String)] = requestQuery,
    headers: [(name: String, value: String)] = requestHeaders,
    secretKey key: String = secretKey,
    now: Date = inWindow
) -> Result<Void, COSAuthorizationError> {
    COSSignatureVerifier.verify(authorization, method: method, path: path, query: query, headers: headers, secretKey: key, now: now)
}

private func failure(_ result: Result<Void, COSAuthorizationError>) -> COSAuthorizationError? {
    if case .failure(let error) = result { return error }
    return nil
}

@Suite struct SigningAuthorizationParsingTests {
    @Test func parse_ReadsEveryFieldOfPublishedVector1() throws {
        let authorization = try COSAuthorization(
            parsing: "q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q&q-sign-time=1557989151;1557996351"
                + "&q-key-time=1557989151;1557996351"
                + "&q-header-list=content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read"
                + "&q-url-param-list=&q-signature=3b8851a11a569213c17ba8fa7dcf2abec6935172"
        )
        #expect(authorization.algorithm == "sha1")
        #expect(authorization.secretID == "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q")
        #expect(authorization.signTime == COSTimeWindow(start: 1_557_989_151, end: 1_557_996_351))
        #expect(authorization.keyTime == COSTimeWindow(start: 1_557_989_151, end: 1_557_996_351))
        #expect(authorization.headerList == ["content-length", "content-md5", "content-type", "date", "host", "x-cos-acl", "x-cos-grant-read"])
        #expect(authorization.urlParamList == [])
        #expect(authorization.signature == "3b8851a11a569213c17ba8fa7dcf2abec6935172")
    }

    @Test func parse_IgnoresUnknownFieldsAndSurroundingWhitespace() throws {
        let authorization = try COSAuthorization(
            parsing: "  q-sign-algorithm=sha1&q-ak=id&q-sign-time=1;2&q-key-time=1;2&q-header-list=host"
                + "&q-url-param-list=a;b&q-future=x&q-signature=98941391dd3f1e23d843ba411b0c183453485124\r\n"
        )
        #expect(authorization.urlParamList == ["a", "b"])
        #expect(authorization.headerList == ["host"])
    }

    private static let valid =
        "q-sign-algorithm=sha1&q-ak=id&q-sign-time=1;2&q-key-time=1;2&q-header-list=host&q-url-param-list="
        + "&q-signature=98941391dd3f1e23d843ba411b0c183453485124"

    @Test(arguments: [
        "",
        "garbage",
        "q-sign-algorithm",
        valid.replacingOccurrences(of: "&q-signature=98941391dd3f1e23d843ba411b0c183453485124", with: ""),
        valid.replacingOccurrences(of: "&q-url-param-list=", with: ""),
        valid + "&q-ak=other",
        valid.replacingOccurrences(of: "q-ak=id", with: "q-ak="),
        valid.replacingOccurrences(of: "q-sign-time=1;2", with: "q-sign-time=a;b"),
        valid.replacingOccurrences(of: "q-sign-time=1;2", with: "q-sign-time=1;"),
        valid.replacingOccurrences(of: "q-sign-time=1;2", with: "q-sign-time=3;2"),
        valid.replacingOccurrences(of: "q-key-time=1;2", with: "q-key-time=-1;2"),
        valid.replacingOccurrences(of: "q-key-time=1;2", with: "q-key-time=1;2;3"),
        valid.replacingOccurrences(of: "q-header-list=host", with: "q-header-list=host;;date"),
        valid.replacingOccurrences(of: "q-url-param-list=", with: "q-url-param-list=;"),
        valid.replacingOccurrences(of: "98941391dd3f1e23d843ba411b0c183453485124", with: "98941391dd3f1e23d843ba411b0c18345348512"),
        valid.replacingOccurrences(of: "98941391dd3f1e23d843ba411b0c183453485124", with: "z8941391dd3f1e23d843ba411b0c183453485124"),
        valid + "&",
    ])
    func parse_RejectsMalformedAuthorization(_ header: String) {
        #expect(throws: COSAuthorizationError.malformed) { try COSAuthorization(parsing: header) }
    }

    @Test func parse_RejectsAlgorithmOtherThanSHA1() {
        let header = Self.valid.replacingOccurrences(of: "q-sign-algorithm=sha1", with: "q-sign-algorithm=sha256")
        #expect(throws: COSAuthorizationError.unsupportedAlgorithm) { try COSAuthorization(parsing: header) }
    }

    @Test func error_DescriptionNamesOnlyTheCode() {
        do {
            _ = try COSAuthorization(parsing: Self.valid + "&q-ak=other")
            Issue.record("duplicate q-ak was accepted")
        } catch {
            #expect(error.description == "COSAuthorizationError.malformed")
            #expect(error.debugDescription == "COSAuthorizationError.malformed: q-ak appears more than once")
            #expect(!error.debugDescription.contains("98941391"))
        }
    }
}

@Suite struct SigningVerifierTests {
    @Test func verify_AcceptsPublishedVector1() throws {
        let authorization = try COSAuthorization(
            parsing: "q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q&q-sign-time=1557989151;1557996351"
                + "&q-key-time=1557989151;1557996351"
                + "&q-header-list=content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read"
                + "&q-url-param-list=&q-signature=3b8851a11a569213c17ba8fa7dcf2abec6935172"
        )
        let result = COSSignatureVerifier.verify(
            authorization,
            method: "PUT",
            path: "/exampleobject(腾讯云)",
            query: [],
            headers: [
                ("Host", "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"),
                ("Date", "Thu, 16 May 2019 06:45:51 GMT"),
                ("Content-Type", "text/plain"),
                ("Content-Length", "13"),
                ("Content-MD5", "mQ/fVh815F3k6TAUm8m0eg=="),
                ("x-cos-acl", "private"),
                ("x-cos-grant-read", "uin=\"100000000011\""),
                ("User-Agent", "unsigned, so ignored"),
            ],
            secretKey: secretKey,
            now: Date(timeIntervalSince1970: 1_557_989_151)
        )
        #expect(failure(result) == nil)
    }

    @Test func verify_AcceptsWhatSignProduced() throws {
        let authorization = try signedAuthorization()
        #expect(authorization.headerList == ["content-type", "host", "x-cos-meta-source"])
        #expect(authorization.urlParamList == ["queueid", "states", "uploads"])
        #expect(failure(verifyFixture(authorization)) == nil)
    }

    @Test func verify_AcceptsUppercaseHexSignature() throws {
        var authorization = try signedAuthorization()
        authorization.signature = authorization.signature.uppercased()
        #expect(failure(verifyFixture(authorization)) == nil)
    }

    @Test func verify_IgnoresUnsignedHeadersAndParameters() throws {
        let authorization = try signedAuthorization()
        let result = verifyFixture(
            authorization,
            query: requestQuery + [(name: "extra", value: "1")],
            headers: requestHeaders.map { $0.name == "User-Agent" ? (name: "User-Agent", value: "changed") : $0 }
        )
        #expect(failure(result) == nil)
    }

    @Test func verify_RejectsWrongSecretKey() throws {
        let authorization = try signedAuthorization(secretKey: "not-the-right-key")
        let error = failure(verifyFixture(authorization))
        #expect(error == .signatureMismatch)
        #expect(error.map { !String(reflecting: $0).contains(secretKey) } == true)
    }

    @Test func verify_RejectsTamperedSignedHeader() throws {
        let authorization = try signedAuthorization()
        let tampered = requestHeaders.map { $0.name == "Content-Type" ? (name: "Content-Type", value: "text/plain") : $0 }
        #expect(failure(verifyFixture(authorization, headers: tampered)) == .signatureMismatch)
    }

    @Test func verify_RejectsTamperedSignedParameter() throws {
        let authorization = try signedAuthorization()
        let tampered = requestQuery.map { $0.name == "queueId" ? (name: "queueId", value: "p0123abcd") : $0 }
        #expect(failure(verifyFixture(authorization, query: tampered)) == .signatureMismatch)
    }

    @Test func verify_RejectsTamperedMethodOrPath() throws {
        let authorization = try signedAuthorization()
        #expect(failure(verifyFixture(authorization, method: "GET")) == .signatureMismatch)
        #expect(failure(verifyFixture(authorization, path: "/jobs/other")) == .signatureMismatch)
    }

    @Test func verify_RejectsTamperedSignature() throws {
        var authorization = try signedAuthorization()
        let flipped: Character = authorization.signature.first == "0" ? "1" : "0"
        authorization.signature = String(flipped) + authorization.signature.dropFirst()
        #expect(failure(verifyFixture(authorization)) == .signatureMismatch)
    }

    @Test func verify_RejectsMissingSignedHeader() throws {
        let authorization = try signedAuthorization()
        let error = failure(verifyFixture(authorization, headers: requestHeaders.filter { $0.name != "x-cos-meta-source" }))
        #expect(error == .missingSignedHeader)
        #expect(error?.detail == "header x-cos-meta-source")
    }

    @Test func verify_RejectsMissingSignedParameter() throws {
        let authorization = try signedAuthorization()
        let error = failure(verifyFixture(authorization, query: requestQuery.filter { $0.name != "uploads" }))
        #expect(error == .missingSignedParameter)
    }

    @Test func verify_RejectsExpiredWindow() throws {
        let authorization = try signedAuthorization()
        #expect(failure(verifyFixture(authorization, now: Date(timeIntervalSince1970: TimeInterval(end + 1)))) == .expired)
        #expect(failure(verifyFixture(authorization, now: Date(timeIntervalSince1970: TimeInterval(end)))) == nil)
    }

    @Test func verify_RejectsWindowNotYetStarted() throws {
        let authorization = try signedAuthorization()
        #expect(failure(verifyFixture(authorization, now: Date(timeIntervalSince1970: TimeInterval(start - 1)))) == .expired)
        #expect(failure(verifyFixture(authorization, now: Date(timeIntervalSince1970: TimeInterval(start)))) == nil)
    }

    @Test func verify_RejectsSignTimeOutsideKeyTime() throws {
        var authorization = try signedAuthorization()
        authorization.keyTime = COSTimeWindow(start: start, end: start + 10)
        #expect(failure(verifyFixture(authorization)) == .expired)
    }

    @Test func verify_RejectsMalformedAuthorizationBeforeVerifying() {
        #expect(throws: COSAuthorizationError.malformed) {
            try COSAuthorization(parsing: "q-sign-algorithm=sha1&q-ak=\(secretID)&q-signature=00")
        }
    }

    @Test func verify_AcceptsSessionTokenRequestAndRejectsSwappedToken() throws {
        let temporary = COSCredentials(secretID: secretID, secretKey: secretKey, sessionToken: "sts-token-1")
        let headers = requestHeaders + temporary.securityTokenHeaders(for: .ci)
        let signature = COSSigner.sign(
            COSSigningRequest(method: "GET", path: "/jobs/j1", headers: COSSigner.headersToSign(from: headers)),
            credentials: temporary, start: start, end: end
        )
        let authorization = try COSAuthorization(parsing: signature.authorization)
        #expect(authorization.headerList.contains("x-ci-security-token"))
        #expect(failure(verifyFixture(authorization, method: "GET", path: "/jobs/j1", query: [], headers: headers)) == nil)
        let swapped = requestHeaders + [(name: "x-ci-security-token", value: "sts-token-2")]
        #expect(failure(verifyFixture(authorization, method: "GET", path: "/jobs/j1", query: [], headers: swapped)) == .signatureMismatch)
    }
}
