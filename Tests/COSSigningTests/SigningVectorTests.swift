import COSSigning
import Testing

// Four golden vectors of the COS/CI request signature (q-sign-algorithm=sha1). Where they come from:
// vectors 1 and 2 are printed in Tencent's public COS docs ("Uploading an object", "Downloading an object"),
// vector 3 in the Go SDK's unit test (tencentyun/cos-go-sdk-v5, auth_test.go TestNewAuthorization); vector 4
// (DescribeMediaJob) is printed nowhere and was computed by Python's hmac/hashlib and by the Go SDK's signing
// functions, which agree byte for byte. Every intermediate value and the final signature / Authorization is
// pinned by its own test, so a failure names the step that diverged.

private let docCredentials = COSCredentials(
    secretID: "AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q",
    secretKey: "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz"
)

private let vector1 = COSSigner.sign(
    COSSigningRequest(
        method: "PUT",
        path: "/exampleobject(腾讯云)",
        headers: [
            (name: "Date", value: "Thu, 16 May 2019 06:45:51 GMT"),
            (name: "Host", value: "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"),
            (name: "Content-Type", value: "text/plain"),
            (name: "Content-Length", value: "13"),
            (name: "Content-MD5", value: "mQ/fVh815F3k6TAUm8m0eg=="),
            (name: "x-cos-acl", value: "private"),
            (name: "x-cos-grant-read", value: "uin=\"100000000011\""),
        ]
    ),
    credentials: docCredentials,
    start: 1_557_989_151,
    end: 1_557_996_351
)

private let vector1HTTPHeaders =
    "content-length=13&content-md5=mQ%2FfVh815F3k6TAUm8m0eg%3D%3D&content-type=text%2Fplain"
    + "&date=Thu%2C%2016%20May%202019%2006%3A45%3A51%20GMT&host=examplebucket-1250000000.cos.ap-beijing.myqcloud.com"
    + "&x-cos-acl=private&x-cos-grant-read=uin%3D%22100000000011%22"

private let vector2 = COSSigner.sign(
    COSSigningRequest(
        method: "GET",
        path: "/exampleobject(腾讯云)",
        query: [
            (name: "response-content-type", value: "application/octet-stream"),
            (name: "response-cache-control", value: "max-age=600"),
        ],
        headers: [
            (name: "Date", value: "Thu, 16 May 2019 06:55:53 GMT"),
            (name: "Host", value: "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"),
        ]
    ),
    credentials: docCredentials,
    start: 1_557_989_753,
    end: 1_557_996_953
)

private let vector3 = COSSigner.sign(
    COSSigningRequest(
        method: "PUT",
        path: "/testfile2",
        headers: [
            (name: "Host", value: "testbucket-125000000.cos.ap-guangzhou.myqcloud.com"),
            (name: "x-cos-content-sha1", value: "db8ac1c259eb89d4a131b253bacfca5f319d54f2"),
            (name: "x-cos-stroage-class", value: "nearline"),
        ]
    ),
    credentials: COSCredentials(secretID: "QmFzZTY0IGlzIGEgZ2VuZXJp", secretKey: "AKIDZfbOA78asKUYBcXFrJD0a1ICvR98JM"),
    start: 1_480_932_292,
    end: 1_481_012_292
)

private let vector4 = COSSigner.sign(
    COSSigningRequest(
        method: "GET",
        path: "/jobs/j515a494af86111ecb8546d80f2baf56f",
        headers: [(name: "Host", value: "test-1234567890.ci.ap-chongqing.myqcloud.com")]
    ),
    credentials: docCredentials,
    start: 1_656_574_974,
    end: 1_656_578_574
)

@Suite struct SigningVector1Tests {
    @Test func vector1_KeyTime() { #expect(vector1.keyTime == "1557989151;1557996351") }
    @Test func vector1_SignKey() { #expect(vector1.signKey == "eb2519b498b02ac213cb1f3d1a3d27a3b3c9bc5f") }
    @Test func vector1_UrlParamListIsEmpty() { #expect(vector1.urlParamList == "") }
    @Test func vector1_HttpParametersIsEmpty() { #expect(vector1.httpParameters == "") }
    @Test func vector1_HeaderList() {
        #expect(vector1.headerList == "content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read")
    }
    @Test func vector1_HttpHeaders() { #expect(vector1.httpHeaders == vector1HTTPHeaders) }
    @Test func vector1_HttpStringUsesDecodedChinesePath() {
        #expect(vector1.httpString == "put\n/exampleobject(腾讯云)\n\n\(vector1HTTPHeaders)\n")
    }
    @Test func vector1_SHA1OfHttpString() { #expect(vector1.sha1OfHTTPString == "8b2751e77f43a0995d6e9eb9477f4b685cca4172") }
    @Test func vector1_StringToSign() {
        #expect(vector1.stringToSign == "sha1\n1557989151;1557996351\n8b2751e77f43a0995d6e9eb9477f4b685cca4172\n")
    }
    @Test func vector1_Signature() { #expect(vector1.signature == "3b8851a11a569213c17ba8fa7dcf2abec6935172") }
    @Test func vector1_Authorization() {
        #expect(
            vector1.authorization
                == "q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q&q-sign-time=1557989151;1557996351"
                + "&q-key-time=1557989151;1557996351"
                + "&q-header-list=content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read"
                + "&q-url-param-list=&q-signature=3b8851a11a569213c17ba8fa7dcf2abec6935172"
        )
    }
}

@Suite struct SigningVector2Tests {
    @Test func vector2_KeyTime() { #expect(vector2.keyTime == "1557989753;1557996953") }
    @Test func vector2_SignKey() { #expect(vector2.signKey == "937914bf490e9e8c189836aad2052e4feeb35eaf") }
    @Test func vector2_UrlParamList() { #expect(vector2.urlParamList == "response-cache-control;response-content-type") }
    @Test func vector2_HttpParameters() {
        #expect(vector2.httpParameters == "response-cache-control=max-age%3D600&response-content-type=application%2Foctet-stream")
    }
    @Test func vector2_HeaderList() { #expect(vector2.headerList == "date;host") }
    @Test func vector2_HttpHeaders() {
        #expect(
            vector2.httpHeaders
                == "date=Thu%2C%2016%20May%202019%2006%3A55%3A53%20GMT&host=examplebucket-1250000000.cos.ap-beijing.myqcloud.com"
        )
    }
    @Test func vector2_HttpString() {
        #expect(
            vector2.httpString
                == "get\n/exampleobject(腾讯云)\n"
                + "response-cache-control=max-age%3D600&response-content-type=application%2Foctet-stream\n"
                + "date=Thu%2C%2016%20May%202019%2006%3A55%3A53%20GMT&host=examplebucket-1250000000.cos.ap-beijing.myqcloud.com\n"
        )
    }
    @Test func vector2_SHA1OfHttpString() { #expect(vector2.sha1OfHTTPString == "54ecfe22f59d3514fdc764b87a32d8133ea611e6") }
    @Test func vector2_StringToSign() {
        #expect(vector2.stringToSign == "sha1\n1557989753;1557996953\n54ecfe22f59d3514fdc764b87a32d8133ea611e6\n")
    }
    @Test func vector2_Signature() { #expect(vector2.signature == "01681b8c9d798a678e43b685a9f1bba0f6c0e012") }
    @Test func vector2_Authorization() {
        #expect(
            vector2.authorization
                == "q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q&q-sign-time=1557989753;1557996953"
                + "&q-key-time=1557989753;1557996953&q-header-list=date;host"
                + "&q-url-param-list=response-cache-control;response-content-type"
                + "&q-signature=01681b8c9d798a678e43b685a9f1bba0f6c0e012"
        )
    }
}

@Suite struct SigningVector3Tests {
    private static let httpHeaders =
        "host=testbucket-125000000.cos.ap-guangzhou.myqcloud.com&x-cos-content-sha1=db8ac1c259eb89d4a131b253bacfca5f319d54f2"
        + "&x-cos-stroage-class=nearline"

    @Test func vector3_KeyTime() { #expect(vector3.keyTime == "1480932292;1481012292") }
    @Test func vector3_SignKey() { #expect(vector3.signKey == "95d110a8ead64cac52083100db75b7e3f369e72f") }
    @Test func vector3_UrlParamListAndHttpParametersAreEmpty() {
        #expect(vector3.urlParamList == "")
        #expect(vector3.httpParameters == "")
    }
    @Test func vector3_HeaderList() { #expect(vector3.headerList == "host;x-cos-content-sha1;x-cos-stroage-class") }
    @Test func vector3_HttpHeaders() { #expect(vector3.httpHeaders == Self.httpHeaders) }
    @Test func vector3_HttpString() { #expect(vector3.httpString == "put\n/testfile2\n\n\(Self.httpHeaders)\n") }
    @Test func vector3_SHA1OfHttpString() { #expect(vector3.sha1OfHTTPString == "113b22e92b74237531fafbfc8bb9e67be55645c7") }
    @Test func vector3_StringToSign() {
        #expect(vector3.stringToSign == "sha1\n1480932292;1481012292\n113b22e92b74237531fafbfc8bb9e67be55645c7\n")
    }
    @Test func vector3_Signature() { #expect(vector3.signature == "ce4ac0ecbcdb30538b3fee0a97cc6389694ce53a") }
    @Test func vector3_Authorization() {
        #expect(
            vector3.authorization
                == "q-sign-algorithm=sha1&q-ak=QmFzZTY0IGlzIGEgZ2VuZXJp&q-sign-time=1480932292;1481012292"
                + "&q-key-time=1480932292;1481012292&q-header-list=host;x-cos-content-sha1;x-cos-stroage-class"
                + "&q-url-param-list=&q-signature=ce4ac0ecbcdb30538b3fee0a97cc6389694ce53a"
        )
    }
}

@Suite struct SigningVector4Tests {
    @Test func vector4_KeyTime() { #expect(vector4.keyTime == "1656574974;1656578574") }
    @Test func vector4_SignKey() { #expect(vector4.signKey == "b2fc9a45eb3ddfe948e378772b5e1641925390ea") }
    @Test func vector4_UrlParamListAndHttpParametersAreEmpty() {
        #expect(vector4.urlParamList == "")
        #expect(vector4.httpParameters == "")
    }
    @Test func vector4_HeaderList() { #expect(vector4.headerList == "host") }
    @Test func vector4_HttpHeaders() { #expect(vector4.httpHeaders == "host=test-1234567890.ci.ap-chongqing.myqcloud.com") }
    @Test func vector4_HttpString() {
        #expect(vector4.httpString == "get\n/jobs/j515a494af86111ecb8546d80f2baf56f\n\nhost=test-1234567890.ci.ap-chongqing.myqcloud.com\n")
    }
    @Test func vector4_SHA1OfHttpString() { #expect(vector4.sha1OfHTTPString == "9742c99cc44d1c9d2ebcc4c6e3697443cfa624a2") }
    @Test func vector4_StringToSign() {
        #expect(vector4.stringToSign == "sha1\n1656574974;1656578574\n9742c99cc44d1c9d2ebcc4c6e3697443cfa624a2\n")
    }
    @Test func vector4_Signature() { #expect(vector4.signature == "98941391dd3f1e23d843ba411b0c183453485124") }
    @Test func vector4_Authorization() {
        #expect(
            vector4.authorization
                == "q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q&q-sign-time=1656574974;1656578574"
                + "&q-key-time=1656574974;1656578574&q-header-list=host&q-url-param-list="
                + "&q-signature=98941391dd3f1e23d843ba411b0c183453485124"
        )
    }
}
