import CIModel

/// Why a CI call failed.
///
/// Compare ``code`` with the static constants (`error.code == .ciError`). `description` is safe to log:
/// it never holds credentials, the `Authorization` header or request bodies; CI's own message is
/// included because CI writes it for the caller (`"The specified key does not exist."`).
public struct CIClientError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case network, timeout, ciError, invalidResponse, invalidConfiguration, invalidRequest
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The connection failed or broke (DNS, refused, reset, TLS).
        public static let network = Code(.network)
        /// No complete answer within ``CIConfiguration/requestTimeout``.
        public static let timeout = Code(.timeout)
        /// CI answered with a non-2xx status; see ``CIClientError/httpStatus`` and ``CIClientError/ciCode``.
        public static let ciError = Code(.ciError)
        /// A 2xx answer whose body is not a CI response document.
        public static let invalidResponse = Code(.invalidResponse)
        /// The ``CIConfiguration`` cannot form a request (see ``CIConfiguration/validate()``).
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The arguments cannot form a request (an empty or malformed JobId, a page size over 100).
        public static let invalidRequest = Code(.invalidRequest)

        public var description: String { base.rawValue }
    }

    /// The kind of failure.
    public var code: Code
    /// The HTTP status, when CI answered.
    public var httpStatus: Int?
    /// CI's `<Error><Code>` (`AccessDenied`, `InvalidArgument`, …), when the body had one.
    public var ciCode: String?
    /// CI's `<Error><Message>`.
    public var ciMessage: String?
    /// `x-ci-request-id`, or the error body's `<RequestId>`: what Tencent support asks for.
    public var requestID: String?
    /// CI's `<Error><TraceId>`, which Tencent support asks for along with the request id.
    public var traceID: String?
    /// CI's `<Error><Resource>`: the host and path CI understood the request to address
    /// (`examplebucket-1250000000.ci.ap-chongqing.myqcloud.com/jobs`), which shows a wrong bucket or region.
    public var resource: String?
    /// The server's `Retry-After`, when it sent one.
    public var retryAfter: Duration?
    /// What went wrong in this client's words (the failing operation, the underlying error's kind).
    public var detail: String
    /// Whether trying again later may succeed: network errors, timeouts, 5xx and 429.
    public var isRetryable: Bool

    /// Creates an error; ``isRetryable`` follows from `code` and `httpStatus`.
    public init(
        code: Code,
        httpStatus: Int? = nil,
        ciCode: String? = nil,
        ciMessage: String? = nil,
        requestID: String? = nil,
        traceID: String? = nil,
        resource: String? = nil,
        retryAfter: Duration? = nil,
        detail: String = ""
    ) {
        self.code = code
        self.httpStatus = httpStatus
        self.ciCode = ciCode
        self.ciMessage = ciMessage
        self.requestID = requestID
        self.traceID = traceID
        self.resource = resource
        self.retryAfter = retryAfter
        self.detail = detail
        switch code {
        case .network, .timeout: isRetryable = true
        case .ciError: isRetryable = httpStatus.map { $0 >= 500 || $0 == 429 } ?? false
        default: isRetryable = false
        }
    }

    static func invalidRequest(_ detail: String) -> CIClientError {
        CIClientError(code: .invalidRequest, detail: detail)
    }

    /// Builds a ``Code/ciError`` from a non-2xx answer, reading CI's `<Error>` body when there is one:
    /// `<Code>`, `<Message>`, `<Resource>`, `<RequestId>` and `<TraceId>`, each optional.
    ///
    /// Bodies that are not XML (a proxy's HTML page) leave the CI fields `nil`; the status still tells.
    /// - Parameters:
    ///   - status: The HTTP status.
    ///   - body: The response body.
    ///   - requestIDHeader: `x-ci-request-id`, which wins over the body's `<RequestId>`.
    ///   - retryAfter: The parsed `Retry-After`.
    public static func fromResponse(status: Int, body: [UInt8], requestIDHeader: String?, retryAfter: Duration? = nil) -> CIClientError {
        var ciCode: String?
        var ciMessage: String?
        var bodyRequestID: String?
        var traceID: String?
        var resource: String?
        if CallbackDecoder.detectFormat(body) == .xml, let root = try? CINodeXML.decode(body, limits: CIDecodingLimits(maxDepth: 8, maxElements: 256)),
            root.name == "Error"
        {
            ciCode = nonEmpty(root.value["Code"]?.text)
            ciMessage = nonEmpty(root.value["Message"]?.text)
            bodyRequestID = nonEmpty(root.value["RequestId"]?.text)
            traceID = nonEmpty(root.value["TraceId"]?.text)
            resource = nonEmpty(root.value["Resource"]?.text)
        }
        return CIClientError(
            code: .ciError,
            httpStatus: status,
            ciCode: ciCode,
            ciMessage: ciMessage,
            requestID: nonEmpty(requestIDHeader) ?? bodyRequestID,
            traceID: traceID,
            resource: resource,
            retryAfter: retryAfter
        )
    }

    public var description: String {
        var parts = ["CIClientError.\(code)"]
        if let httpStatus { parts.append("status \(httpStatus)") }
        if let ciCode { parts.append(ciCode) }
        if let ciMessage { parts.append("\"\(ciMessage.prefix(200))\"") }
        if let requestID { parts.append("request id \(requestID)") }
        if let traceID { parts.append("trace id \(traceID)") }
        if !detail.isEmpty { parts.append(detail) }
        return parts.joined(separator: ": ")
    }

    private static func nonEmpty(_ text: String?) -> String? {
        guard let text else { return nil }
        let trimmed = text.trimmingASCIISpaces()
        return trimmed.isEmpty ? nil : trimmed
    }
}

/// One successful CI answer: its bytes verbatim (the service can store them like a callback) and their decoding.
public struct CIResponse: Sendable {
    /// The response body exactly as received.
    public var body: [UInt8]
    /// ``body`` decoded: the JobsDetail list, `NextToken`, `NonExistJobIds`.
    public var envelope: CallbackEnvelope
    /// `x-ci-request-id`.
    public var requestID: String?
    /// The HTTP status (2xx).
    public var httpStatus: Int

    /// Creates a response.
    public init(body: [UInt8], envelope: CallbackEnvelope, requestID: String?, httpStatus: Int) {
        self.body = body
        self.envelope = envelope
        self.requestID = requestID
        self.httpStatus = httpStatus
    }
}

extension String {
    func trimmingASCIISpaces() -> String {
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        guard let first = utf8.firstIndex(where: { !isSpace($0) }), let last = utf8.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}
