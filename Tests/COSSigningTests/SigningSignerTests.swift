import COSSigning
import Foundation
import Testing

private let credentials = COSCredentials(
    secretID: "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q",
    secretKey: "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
)

@Suite struct SigningURLEncodeTests {
    // The table of SIGNATURE.md ("UrlEncode"), plus the characters the Go SDK also escapes.
    @Test(arguments: [
        (" ", "%20"), (":", "%3A"), (",", "%2C"), ("+", "%2B"), ("/", "%2F"), ("=", "%3D"), ("\"", "%22"),
        ("!", "%21"), ("'", "%27"), ("(", "%28"), (")", "%29"), ("*", "%2A"), ("%", "%25"), ("&", "%26"),
        (";", "%3B"), ("?", "%3F"), ("#", "%23"), ("@", "%40"),
        ("AZaz09-_.~", "AZaz09-_.~"),
        ("腾讯云", "%E8%85%BE%E8%AE%AF%E4%BA%91"),
        ("Thu, 16 May 2019 06:45:51 GMT", "Thu%2C%2016%20May%202019%2006%3A45%3A51%20GMT"),
        ("mQ/fVh815F3k6TAUm8m0eg==", "mQ%2FfVh815F3k6TAUm8m0eg%3D%3D"),
        ("", ""),
    ])
    func urlEncode_FollowsRFC3986WithUppercaseHex(_ input: String, _ expected: String) {
        #expect(COSSigner.urlEncode(input) == expected)
    }
}

@Suite struct SigningSignerTests {
    @Test func sign_ChinesePathIsSignedDecoded() {
        let signature = COSSigner.sign(
            COSSigningRequest(method: "GET", path: "/exampleobject(腾讯云)"),
            credentials: credentials, start: 1, end: 2
        )
        #expect(signature.httpString == "get\n/exampleobject(腾讯云)\n\n\n")
        #expect(!signature.httpString.contains("%E8"))
    }

    @Test func sign_LowercasesQueryNamesButNotValues() {
        let signature = COSSigner.sign(
            COSSigningRequest(method: "GET", path: "/jobs", query: [(name: "queueId", value: "p0123AbCd")]),
            credentials: credentials, start: 1, end: 2
        )
        #expect(signature.urlParamList == "queueid")
        #expect(signature.httpParameters == "queueid=p0123AbCd")
        #expect(signature.authorization.contains("&q-url-param-list=queueid&"))
    }

    @Test func sign_LowercasesHeaderNamesButNotValues() {
        let signature = COSSigner.sign(
            COSSigningRequest(method: "GET", path: "/", headers: [(name: "X-CI-Trace", value: "AbC")]),
            credentials: credentials, start: 1, end: 2
        )
        #expect(signature.headerList == "x-ci-trace")
        #expect(signature.httpHeaders == "x-ci-trace=AbC")
    }

    @Test func sign_ValuelessParameterSignsAsNameEqualsNothing() {
        let signature = COSSigner.sign(
            COSSigningRequest(method: "POST", path: "/object", query: [(name: "uploads", value: "")]),
            credentials: credentials, start: 1, end: 2
        )
        #expect(signature.urlParamList == "uploads")
        #expect(signature.httpParameters == "uploads=")
        #expect(signature.httpString == "post\n/object\nuploads=\n\n")
    }

    @Test func sign_DescribeMediaJobsQueryIsSortedAndEncoded() {
        // REFERENCE.md §5: `+` in times must go out as %2B; the signature must encode it the same way.
        let signature = COSSigner.sign(
            COSSigningRequest(
                method: "GET",
                path: "/jobs",
                query: [
                    (name: "tag", value: "ExtractDigitalWatermark"),
                    (name: "queueId", value: "p1"),
                    (name: "states", value: "Success,Failed"),
                    (name: "startCreationTime", value: "2022-06-30T12:00:00+0800"),
                    (name: "size", value: "100"),
                ]
            ),
            credentials: credentials, start: 1, end: 2
        )
        #expect(signature.urlParamList == "queueid;size;startcreationtime;states;tag")
        #expect(
            signature.httpParameters
                == "queueid=p1&size=100&startcreationtime=2022-06-30T12%3A00%3A00%2B0800&states=Success%2CFailed&tag=ExtractDigitalWatermark"
        )
    }

    @Test func sign_RepeatedParameterKeepsRequestOrder() {
        let signature = COSSigner.sign(
            COSSigningRequest(method: "GET", path: "/", query: [(name: "b", value: "2"), (name: "a", value: "z"), (name: "a", value: "y")]),
            credentials: credentials, start: 1, end: 2
        )
        #expect(signature.urlParamList == "a;a;b")
        #expect(signature.httpParameters == "a=z&a=y&b=2")
    }

    @Test func sign_FromDateUsesWholeSecondsAndValidity() {
        let request = COSSigningRequest(
            method: "GET",
            path: "/jobs/j515a494af86111ecb8546d80f2baf56f",
            headers: [(name: "Host", value: "test-1234567890.ci.ap-chongqing.myqcloud.com")]
        )
        let signature = COSSigner.sign(
            request, credentials: credentials,
            now: Date(timeIntervalSince1970: 1_656_574_974.9), validFor: .seconds(3600)
        )
        #expect(signature.keyTime == "1656574974;1656578574")
        #expect(signature.signature == "98941391dd3f1e23d843ba411b0c183453485124")
    }

    @Test func sign_DefaultValidityIsTenMinutes() {
        let signature = COSSigner.sign(
            COSSigningRequest(method: "GET", path: "/"), credentials: credentials, now: Date(timeIntervalSince1970: 1000)
        )
        #expect(signature.keyTime == "1000;1600")
    }

    @Test func headersToSign_SelectsGoSDKSetAndNeverDate() {
        let all: [(name: String, value: String)] = [
            (name: "Date", value: "Thu, 16 May 2019 06:45:51 GMT"),
            (name: "Host", value: "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"),
            (name: "Content-Type", value: "application/xml"),
            (name: "Content-Length", value: "13"),
            (name: "Content-MD5", value: "mQ/fVh815F3k6TAUm8m0eg=="),
            (name: "User-Agent", value: "ci-callbackd"),
            (name: "Authorization", value: "q-sign-algorithm=sha1"),
            (name: "X-Cos-Acl", value: "private"),
            (name: "x-ci-security-token", value: "token"),
            (name: "x-cosmetic", value: "not a cos header"),
        ]
        let names = COSSigner.headersToSign(from: all).map(\.name)
        #expect(names == ["Host", "Content-Type", "Content-Length", "Content-MD5", "X-Cos-Acl", "x-ci-security-token"])
    }

    @Test func headersToSign_IncludingDateReproducesPublishedVector1() {
        let all: [(name: String, value: String)] = [
            (name: "Date", value: "Thu, 16 May 2019 06:45:51 GMT"),
            (name: "Host", value: "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"),
            (name: "Content-Type", value: "text/plain"),
            (name: "Content-Length", value: "13"),
            (name: "Content-MD5", value: "mQ/fVh815F3k6TAUm8m0eg=="),
            (name: "x-cos-acl", value: "private"),
            (name: "x-cos-grant-read", value: "uin=\"100000000011\""),
            (name: "Connection", value: "keep-alive"),
        ]
        let signature = COSSigner.sign(
            COSSigningRequest(method: "PUT", path: "/exampleobject(腾讯云)", headers: COSSigner.headersToSign(from: all, including: ["Date"])),
            credentials: credentials, start: 1_557_989_151, end: 1_557_996_351
        )
        #expect(signature.signature == "3b8851a11a569213c17ba8fa7dcf2abec6935172")
    }

    @Test func signature_DescriptionOmitsSignKey() {
        let signature = COSSigner.sign(COSSigningRequest(method: "GET", path: "/"), credentials: credentials, start: 1, end: 2)
        #expect(!signature.description.contains(signature.signKey))
        #expect(signature.description.contains(signature.signature))
    }
}

@Suite struct SigningCredentialsTests {
    @Test func credentials_DescriptionRedactsSecretKey() {
        #expect(credentials.description == "COSCredentials(secretID: AKID…9U5q, secretKey: <redacted>)")
        #expect(!String(describing: credentials).contains(credentials.secretKey))
        #expect(!"\(credentials)".contains(credentials.secretID))
    }

    @Test func credentials_DebugDescriptionRedactsKeyAndSessionToken() {
        let temporary = COSCredentials(secretID: credentials.secretID, secretKey: credentials.secretKey, sessionToken: "tok-SECRET-123")
        let debug = String(reflecting: temporary)
        #expect(!debug.contains(temporary.secretKey))
        #expect(!debug.contains("tok-SECRET-123"))
        #expect(debug.contains("sessionToken: <redacted>"))
        #expect(!String(describing: [temporary]).contains("tok-SECRET-123"))
    }

    @Test func credentials_ShortSecretIDIsFullyMasked() {
        let short = COSCredentials(secretID: "AKID1234", secretKey: "k")
        #expect(short.description == "COSCredentials(secretID: <redacted>, secretKey: <redacted>)")
    }

    @Test func credentials_PermanentKeyNeedsNoTokenHeader() {
        #expect(credentials.securityTokenHeaders().isEmpty)
        #expect(credentials.securityTokenHeaders(for: .ci).isEmpty)
    }

    @Test func credentials_TokenHeaderNameDependsOnService() {
        let temporary = COSCredentials(secretID: "id", secretKey: "key", sessionToken: "tok")
        #expect(temporary.securityTokenHeaders().map(\.name) == ["x-cos-security-token"])
        #expect(temporary.securityTokenHeaders(for: .ci).map(\.name) == ["x-ci-security-token"])
        #expect(temporary.securityTokenHeaders(for: .ci).map(\.value) == ["tok"])
    }

    @Test func sign_SessionTokenHeaderIsSigned() {
        let temporary = COSCredentials(secretID: credentials.secretID, secretKey: credentials.secretKey, sessionToken: "sts-Tok+/=")
        let headers = [(name: "Host", value: "test-1234567890.ci.ap-chongqing.myqcloud.com")] + temporary.securityTokenHeaders()
        let signature = COSSigner.sign(
            COSSigningRequest(method: "GET", path: "/jobs/j1", headers: COSSigner.headersToSign(from: headers)),
            credentials: temporary, start: 1_656_574_974, end: 1_656_578_574
        )
        #expect(signature.headerList == "host;x-cos-security-token")
        #expect(signature.httpHeaders == "host=test-1234567890.ci.ap-chongqing.myqcloud.com&x-cos-security-token=sts-Tok%2B%2F%3D")
        // The token changes what is signed, so the signature differs from the same request without it.
        let withoutToken = COSSigner.sign(
            COSSigningRequest(method: "GET", path: "/jobs/j1", headers: [headers[0]]),
            credentials: credentials, start: 1_656_574_974, end: 1_656_578_574
        )
        #expect(signature.signature != withoutToken.signature)
        #expect(!signature.authorization.contains("sts-Tok"))
    }
}
