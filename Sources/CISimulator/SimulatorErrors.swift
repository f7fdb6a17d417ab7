import CIModel
import Foundation
import HTTPWire

/// A refusal as CI words it: the `<Error><Code>` and the HTTP status CI documents for that code.
///
/// The authentication codes follow COS's, which CI shares (COS "403 Error for COS Access"): an unknown
/// SecretId is `InvalidAccessKeyId`, a signature computed with another SecretKey `SignatureDoesNotMatch`,
/// an expired one or none at all `AccessDenied`; all three are 403.
struct CIErrorCode: Sendable, Hashable {
    /// `<Code>`.
    let code: String
    /// The status CI answers with.
    let status: HTTPStatus

    private init(_ code: String, _ status: HTTPStatus) {
        self.code = code
        self.status = status
    }

    /// A request parameter or the body is invalid.
    static let invalidArgument = CIErrorCode("InvalidArgument", .badRequest)
    /// No `Authorization`, an unreadable one, or a signature outside its time window.
    static let accessDenied = CIErrorCode("AccessDenied", .forbidden)
    /// The SecretId (`q-ak`) is not known.
    static let invalidAccessKeyID = CIErrorCode("InvalidAccessKeyId", .forbidden)
    /// The signature does not match the request: a wrong SecretKey, or a wrongly computed signature.
    static let signatureDoesNotMatch = CIErrorCode("SignatureDoesNotMatch", .forbidden)
    /// The path names no API.
    static let noSuchResource = CIErrorCode("NoSuchResource", .notFound)
    /// The API exists but not with this method.
    static let methodNotAllowed = CIErrorCode("MethodNotAllowed", .methodNotAllowed)
    /// Rate limited.
    static let tooManyRequests = CIErrorCode("TooManyRequests", .tooManyRequests)
    /// CI failed; the request may or may not have taken effect.
    static let internalError = CIErrorCode("InternalError", .internalServerError)
    /// CI refused the request for now.
    static let serviceUnavailable = CIErrorCode("ServiceUnavailable", .serviceUnavailable)

    /// The code for an injected fault's status: 429 and 500 have their own, any other status is
    /// reported as `ServiceUnavailable`.
    static func injected(status: Int) -> CIErrorCode {
        switch status {
        case 429: .tooManyRequests
        case 500: .internalError
        case 503: .serviceUnavailable
        default: CIErrorCode("ServiceUnavailable", HTTPStatus(code: status, reasonPhrase: reasonPhrase(status)))
        }
    }

    private static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 502: "Bad Gateway"
        case 504: "Gateway Timeout"
        default: "Error"
        }
    }
}

/// What the answer to one request names besides its data: CI's ids for it and the resource it addressed.
struct RequestContext: Sendable {
    /// `x-ci-request-id` and `<RequestId>`.
    var requestID: String
    /// `<TraceId>`, which CI writes next to the request id for its own support staff.
    var traceID: String
    /// `<Resource>`: the host and path the request addressed, as COS writes it
    /// (`examplebucket-1250000000.ci.ap-chongqing.myqcloud.com/jobs`).
    var resource: String

    /// The context of `request`; `defaultHost` stands in for a missing `Host` header.
    static func make(for request: HTTPRequest, defaultHost: String) -> RequestContext {
        // Request and trace ids need not be reproducible, so they do not consume the seeded generator.
        var generator = SystemRandomNumberGenerator()
        let requestID = "sim" + String(generator.next() as UInt64, radix: 16)
        let traceHex = (0..<4).map { _ in String(generator.next() as UInt64, radix: 16) }.joined()
        let host = request.headers["Host"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultHost
        return RequestContext(
            requestID: requestID, traceID: Data(traceHex.utf8).base64EncodedString(), resource: host + request.path)
    }
}

extension SimulatorDocuments {
    /// CI's error document: `<Error><Code/><Message/><Resource/><RequestId/><TraceId/></Error>` after an XML
    /// declaration. Tencent's SDKs read all of it: the Python SDK reports `Unknown` for every field when
    /// `Resource` is missing.
    static func error(code: CIErrorCode, message: String, context: RequestContext) -> [UInt8] {
        let node = CINode.element([
            CIField(name: "Code", value: .text(code.code)),
            CIField(name: "Message", value: .text(message)),
            CIField(name: "Resource", value: .text(context.resource)),
            CIField(name: "RequestId", value: .text(context.requestID)),
            CIField(name: "TraceId", value: .text(context.traceID)),
        ])
        return Array(("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + CINodeXML.encode(node, rootName: "Error")).utf8)
    }
}
