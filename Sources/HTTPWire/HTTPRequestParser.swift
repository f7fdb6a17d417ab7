/// Size limits the request parser enforces.
public struct HTTPParserLimits: Sendable, Hashable {
    /// Maximum bytes of request line plus header section, CRLFs included (also the budget for the trailer
    /// section of a chunked body). Exceeding it in the request line is 414, in the headers 431. Default: 16 KiB.
    public var maxHeaderBytes: Int
    /// Maximum body bytes after de-chunking. Exceeding it is 413. Default: 1 MiB.
    public var maxBodyBytes: Int
    /// Maximum number of header fields (and, separately, trailer fields). Exceeding it is 431. Default: 100.
    public var maxHeaderCount: Int

    /// Creates limits; every argument has the documented default.
    public init(maxHeaderBytes: Int = 16 * 1024, maxBodyBytes: Int = 1 << 20, maxHeaderCount: Int = 100) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.maxHeaderCount = maxHeaderCount
    }
}

/// An incremental HTTP/1.1 request parser (RFC 9112): bytes in, actions out, no I/O.
///
/// Feed bytes as they arrive; each call returns the next ``Action``. Every request is reported twice: its
/// head as `.head` once the header section is complete and valid, before any body byte is consumed (so
/// the caller can refuse it without reading the body), then the whole request as `.request`. After
/// `.head`, `.request` or `.sendContinue` more may already be buffered (pipelining): call ``next()`` (or
/// `feed` with no bytes) until it returns `.needMoreData` before reading again. After `.reject` the
/// parser stays failed and returns the same rejection; the caller answers it with `Connection: close`
/// and closes. A caller that refuses a head stops feeding the parser and closes likewise.
///
/// Deliberate choices where RFC 9112 leaves room:
/// - Lines must end in CRLF. A bare LF or a bare CR anywhere in the head is refused (400): lenient line
///   endings are a known request-smuggling vector between a proxy and a server that disagree.
/// - Empty lines before the request line are skipped (RFC 9112 §2.2), counted against `maxHeaderBytes`.
/// - The request-target must be origin-form (starts with `/`) or `*` for OPTIONS; anything else is 400.
/// - `Transfer-Encoding` must end in `chunked`, which must appear once; otherwise framing is undeterminable
///   and the answer is 400 (`identity`, `xchunked`, `chunked, identity`). Other codings before `chunked`
///   (`gzip, chunked`) are understood framing but unsupported: 501. `Transfer-Encoding` together with
///   `Content-Length`, or in an HTTP/1.0 request, is 400.
/// - `Expect` other than `100-continue` is 417; `100-continue` from an HTTP/1.0 client is ignored (RFC 9110 §10.1.1).
/// - The body limit is checked against `Content-Length` before any body byte is read, and for chunked
///   bodies as soon as a chunk-size line would exceed it.
public struct HTTPRequestParser: Sendable {
    /// What the caller should do next.
    public enum Action: Sendable, Equatable {
        /// Read more bytes and feed them.
        case needMoreData
        /// The head of the next request is complete and valid; no byte of its body has been consumed. Call
        /// ``next()`` to go on reading it, or refuse the request and stop.
        case head(HTTPRequestHead)
        /// The client sent `Expect: 100-continue`, the head is valid and no body byte has arrived: write
        /// `HTTP/1.1 100 Continue\r\n\r\n` (once, in response order), then call ``next()`` or feed more bytes.
        case sendContinue
        /// A complete request; its bytes are consumed. Call ``next()`` for a pipelined successor.
        case request(HTTPRequest)
        /// The request is invalid: answer `status` with `Connection: close`, then close the connection.
        case reject(HTTPStatus, reason: String)
    }

    private enum Phase: Sendable {
        case requestLine
        case headerLines
        case fixedBody
        case chunkSize
        case chunkData
        case chunkDataEnd
        case trailers
        case failed
    }

    /// Longest chunk-size line (size plus ignored extensions) accepted.
    private static let maxChunkSizeLineBytes = 4096

    private let limits: HTTPParserLimits
    private var buffer: [UInt8] = []
    /// Start of the unconsumed bytes in `buffer`.
    private var readIndex = 0
    /// How far past `readIndex` the current line has been searched for LF, so a head trickling in byte by
    /// byte is scanned once, not quadratically.
    private var scannedBytes = 0
    private var phase = Phase.requestLine

    // The request being assembled.
    private var headBytes = 0
    private var method = HTTPMethod.get
    private var target = ""
    private var version = HTTPVersion.http1_1
    private var headers = HTTPHeaders()
    private var trailerBytes = 0
    private var trailerCount = 0
    private var body: [UInt8] = []
    private var remainingBytes = 0
    private var expectsContinue = false
    private var failure = (status: HTTPStatus.badRequest, reason: "")

    /// Creates a parser.
    /// - Parameter limits: The size limits to enforce.
    public init(limits: HTTPParserLimits = HTTPParserLimits()) {
        self.limits = limits
    }

    /// Whether part of a request has been received but not yet returned: the listener's read-timeout clock runs.
    public var hasPartialRequest: Bool {
        phase != .requestLine || readIndex < buffer.count
    }

    /// Most buffer capacity kept between requests once everything received has been parsed.
    static let retainedBufferCapacity = 64 * 1024

    /// Bytes the parser's buffer holds room for (for tests of what it keeps).
    var bufferCapacity: Int { buffer.capacity }

    /// Whether the parser has rejected the stream.
    public var isFailed: Bool { phase == .failed }

    /// Body bytes of the request being read that the client has announced so far: its `Content-Length`
    /// from the moment its head is complete; for a chunked body, the chunks received plus the rest of the
    /// one being received. 0 between requests. What a caller budgeting body memory must reserve.
    public var announcedBodyBytes: Int {
        switch phase {
        case .fixedBody: remainingBytes
        case .chunkData: body.count + remainingBytes
        case .chunkSize, .chunkDataEnd, .trailers: body.count
        case .requestLine, .headerLines, .failed: 0
        }
    }

    /// Appends `bytes` and returns the next action.
    /// - Parameter bytes: Newly received bytes; may be empty to drain pipelined requests.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> Action {
        append(bytes)
        return next()
    }

    /// Appends `bytes` and returns the next action.
    /// - Parameter bytes: Newly received bytes; may be empty to drain pipelined requests.
    public mutating func feed(_ bytes: [UInt8]) -> Action {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// Returns the next action from already buffered bytes, without appending any.
    public mutating func next() -> Action {
        // Set by the head just reported: 100 Continue is due only while no body byte has arrived.
        if expectsContinue {
            expectsContinue = false
            if readIndex == buffer.count { return .sendContinue }
        }
        while true {
            switch phase {
            case .failed:
                return .reject(failure.status, reason: failure.reason)
            case .requestLine:
                switch takeLine(budget: limits.maxHeaderBytes - headBytes) {
                case .incomplete:
                    return .needMoreData
                case .tooLong:
                    return fail(.uriTooLong, "request line exceeds \(limits.maxHeaderBytes) bytes")
                case .bareLineFeed:
                    return fail(.badRequest, "line not terminated by CRLF")
                case .line(let range):
                    if range.isEmpty { continue }
                    if let rejection = parseRequestLine(range) { return rejection }
                    phase = .headerLines
                }
            case .headerLines:
                switch takeLine(budget: limits.maxHeaderBytes - headBytes) {
                case .incomplete:
                    return .needMoreData
                case .tooLong:
                    return fail(.requestHeaderFieldsTooLarge, "header section exceeds \(limits.maxHeaderBytes) bytes")
                case .bareLineFeed:
                    return fail(.badRequest, "line not terminated by CRLF")
                case .line(let range):
                    if range.isEmpty {
                        if let rejection = completeHead() { return rejection }
                        return .head(
                            HTTPRequestHead(
                                method: method, target: target, version: version, headers: headers,
                                body: phase == .chunkSize ? .chunked : .length(remainingBytes)))
                    }
                    if headers.count >= limits.maxHeaderCount {
                        return fail(.requestHeaderFieldsTooLarge, "more than \(limits.maxHeaderCount) header fields")
                    }
                    guard let field = parseField(range) else { continue }
                    headers.add(name: field.name, value: field.value)
                }
            case .fixedBody:
                guard buffer.count - readIndex >= remainingBytes else { return .needMoreData }
                body = Array(buffer[readIndex..<readIndex + remainingBytes])
                readIndex += remainingBytes
                return complete()
            case .chunkSize:
                switch takeLine(budget: Self.maxChunkSizeLineBytes) {
                case .incomplete:
                    return .needMoreData
                case .tooLong:
                    return fail(.badRequest, "chunk-size line too long")
                case .bareLineFeed:
                    return fail(.badRequest, "chunk-size line not terminated by CRLF")
                case .line(let range):
                    if let rejection = parseChunkSize(range) { return rejection }
                }
            case .chunkData:
                let available = min(buffer.count - readIndex, remainingBytes)
                guard available > 0 else { return .needMoreData }
                body.append(contentsOf: buffer[readIndex..<readIndex + available])
                readIndex += available
                remainingBytes -= available
                if remainingBytes == 0 { phase = .chunkDataEnd }
            case .chunkDataEnd:
                guard buffer.count - readIndex >= 2 else {
                    if readIndex < buffer.count, buffer[readIndex] != UInt8(ascii: "\r") {
                        return fail(.badRequest, "chunk data not followed by CRLF")
                    }
                    return .needMoreData
                }
                guard buffer[readIndex] == UInt8(ascii: "\r"), buffer[readIndex + 1] == UInt8(ascii: "\n") else {
                    return fail(.badRequest, "chunk data not followed by CRLF")
                }
                readIndex += 2
                phase = .chunkSize
            case .trailers:
                switch takeLine(budget: limits.maxHeaderBytes - trailerBytes) {
                case .incomplete:
                    return .needMoreData
                case .tooLong:
                    return fail(.requestHeaderFieldsTooLarge, "trailer section exceeds \(limits.maxHeaderBytes) bytes")
                case .bareLineFeed:
                    return fail(.badRequest, "line not terminated by CRLF")
                case .line(let range):
                    if range.isEmpty { return complete() }
                    trailerCount += 1
                    if trailerCount > limits.maxHeaderCount {
                        return fail(.requestHeaderFieldsTooLarge, "more than \(limits.maxHeaderCount) trailer fields")
                    }
                    // Trailers are validated like fields (so a malformed one still fails), then dropped:
                    // nothing downstream may trust fields that arrive after the body.
                    _ = parseField(range)
                }
            }
        }
    }

    // MARK: - Lines

    private enum LineResult {
        case line(Range<Int>)
        case incomplete
        case tooLong
        case bareLineFeed
    }

    /// Takes the next CRLF-terminated line (range excludes the CRLF) and consumes it, charging its length
    /// to the head or trailer budget of the current phase.
    private mutating func takeLine(budget: Int) -> LineResult {
        let searchStart = readIndex + scannedBytes
        guard let lineFeed = buffer[searchStart...].firstIndex(of: UInt8(ascii: "\n")) else {
            scannedBytes = buffer.count - readIndex
            return scannedBytes > budget ? .tooLong : .incomplete
        }
        let lineLength = lineFeed + 1 - readIndex
        if lineLength > budget { return .tooLong }
        guard lineFeed > readIndex, buffer[lineFeed - 1] == UInt8(ascii: "\r") else { return .bareLineFeed }
        let range = readIndex..<(lineFeed - 1)
        readIndex = lineFeed + 1
        scannedBytes = 0
        switch phase {
        case .requestLine, .headerLines: headBytes += lineLength
        case .trailers: trailerBytes += lineLength
        default: break
        }
        return .line(range)
    }

    // MARK: - Head

    private mutating func parseRequestLine(_ range: Range<Int>) -> Action? {
        guard let firstSpace = buffer[range].firstIndex(of: UInt8(ascii: " ")) else {
            return fail(.badRequest, "malformed request line")
        }
        let methodRange = range.lowerBound..<firstSpace
        guard !methodRange.isEmpty, buffer[methodRange].allSatisfy(\.isTokenCharacter) else {
            return fail(.badRequest, "malformed method")
        }
        let afterMethod = firstSpace + 1
        guard let secondSpace = buffer[afterMethod..<range.upperBound].firstIndex(of: UInt8(ascii: " ")) else {
            return fail(.badRequest, "malformed request line")
        }
        let targetRange = afterMethod..<secondSpace
        let versionRange = (secondSpace + 1)..<range.upperBound
        guard !targetRange.isEmpty, buffer[targetRange].allSatisfy({ (0x21...0x7E).contains($0) }) else {
            return fail(.badRequest, "malformed request-target")
        }
        method = HTTPMethod(rawValue: String(decoding: buffer[methodRange], as: UTF8.self))
        target = String(decoding: buffer[targetRange], as: UTF8.self)

        let versionBytes = buffer[versionRange]
        let prefix = Array("HTTP/".utf8)
        guard versionBytes.count == 8, versionBytes.starts(with: prefix),
            versionBytes[versionRange.lowerBound + 5].isDigit,
            versionBytes[versionRange.lowerBound + 6] == UInt8(ascii: "."),
            versionBytes[versionRange.lowerBound + 7].isDigit
        else {
            return fail(.badRequest, "malformed HTTP version")
        }
        switch (versionBytes[versionRange.lowerBound + 5], versionBytes[versionRange.lowerBound + 7]) {
        case (UInt8(ascii: "1"), UInt8(ascii: "1")): version = .http1_1
        case (UInt8(ascii: "1"), UInt8(ascii: "0")): version = .http1_0
        default: return fail(.httpVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are supported")
        }

        let isOriginForm = buffer[targetRange.lowerBound] == UInt8(ascii: "/")
        let isAsteriskForm = targetRange.count == 1 && buffer[targetRange.lowerBound] == UInt8(ascii: "*") && method == .options
        guard isOriginForm || isAsteriskForm else {
            return fail(.badRequest, "request-target must start with /")
        }
        return nil
    }

    /// Parses one field line; on failure records the rejection (the phase becomes `.failed`) and returns nil.
    private mutating func parseField(_ range: Range<Int>) -> (name: String, value: String)? {
        let first = buffer[range.lowerBound]
        if first.isHTTPWhitespace {
            fail(.badRequest, "obsolete line folding or whitespace before a field")
            return nil
        }
        guard let colon = buffer[range].firstIndex(of: UInt8(ascii: ":")) else {
            fail(.badRequest, "header line without colon")
            return nil
        }
        let nameRange = range.lowerBound..<colon
        guard !nameRange.isEmpty else {
            fail(.badRequest, "empty header name")
            return nil
        }
        if buffer[colon - 1].isHTTPWhitespace {
            fail(.badRequest, "whitespace between header name and colon")
            return nil
        }
        guard buffer[nameRange].allSatisfy(\.isTokenCharacter) else {
            fail(.badRequest, "invalid header name")
            return nil
        }
        var valueStart = colon + 1
        var valueEnd = range.upperBound
        while valueStart < valueEnd, buffer[valueStart].isHTTPWhitespace { valueStart += 1 }
        while valueEnd > valueStart, buffer[valueEnd - 1].isHTTPWhitespace { valueEnd -= 1 }
        let valueRange = valueStart..<valueEnd
        guard buffer[valueRange].allSatisfy(\.isFieldValueCharacter) else {
            fail(.badRequest, "invalid character in header value")
            return nil
        }
        return (
            name: String(decoding: buffer[nameRange], as: UTF8.self),
            value: String(decoding: buffer[valueRange], as: UTF8.self)
        )
    }

    /// Validates the complete head and chooses the body framing (RFC 9112 §6.3).
    private mutating func completeHead() -> Action? {
        let hosts = headers.values(for: "Host")
        if version == .http1_1, hosts.isEmpty { return fail(.badRequest, "missing Host header") }
        if hosts.count > 1 { return fail(.badRequest, "more than one Host header") }

        let transferEncodings = headers.values(for: "Transfer-Encoding")
        let contentLengths = headers.values(for: "Content-Length")

        if let expectation = headers["Expect"] {
            guard expectation.trimmingHTTPWhitespace().equalsASCIICaseInsensitive("100-continue"),
                headers.values(for: "Expect").count == 1
            else {
                return fail(.expectationFailed, "unsupported expectation")
            }
            expectsContinue = version == .http1_1
        }

        if !transferEncodings.isEmpty {
            if !contentLengths.isEmpty { return fail(.badRequest, "both Content-Length and Transfer-Encoding") }
            if version == .http1_0 { return fail(.badRequest, "Transfer-Encoding in an HTTP/1.0 request") }
            let codings = transferEncodings.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }
                .map { String($0.trimmingHTTPWhitespace()) }
            guard codings.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy(\.isTokenCharacter) }) else {
                return fail(.badRequest, "malformed Transfer-Encoding")
            }
            let chunkedCount = codings.count { $0.equalsASCIICaseInsensitive("chunked") }
            guard chunkedCount == 1, codings.last?.equalsASCIICaseInsensitive("chunked") == true else {
                return fail(.badRequest, "Transfer-Encoding must end in a single chunked")
            }
            guard codings.count == 1 else {
                return fail(.notImplemented, "unsupported transfer coding")
            }
            body = []
            phase = .chunkSize
            return nil
        }

        if !contentLengths.isEmpty {
            var length: Int?
            for element in contentLengths.flatMap({ $0.split(separator: ",", omittingEmptySubsequences: false) }) {
                let digits = element.trimmingHTTPWhitespace()
                guard !digits.isEmpty, digits.utf8.allSatisfy(\.isDigit) else {
                    return fail(.badRequest, "malformed Content-Length")
                }
                // Saturate instead of overflowing: a length that does not fit is certainly over the limit.
                var value = 0
                for digit in digits.utf8 {
                    let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
                    let (sum, overflow2) = times10.addingReportingOverflow(Int(digit - UInt8(ascii: "0")))
                    if overflow1 || overflow2 {
                        value = .max
                        break
                    }
                    value = sum
                }
                if let length, length != value { return fail(.badRequest, "conflicting Content-Length values") }
                length = value
            }
            let bodyLength = length ?? 0
            if bodyLength > limits.maxBodyBytes {
                return fail(.payloadTooLarge, "body exceeds \(limits.maxBodyBytes) bytes")
            }
            if bodyLength > 0 {
                remainingBytes = bodyLength
                phase = .fixedBody
                return nil
            }
        }
        expectsContinue = false
        body = []
        phase = .fixedBody
        remainingBytes = 0
        return nil
    }

    private mutating func parseChunkSize(_ range: Range<Int>) -> Action? {
        var index = range.lowerBound
        var size = 0
        while index < range.upperBound, let digit = PercentDecoding.hexValue(buffer[index]) {
            let (times16, overflow1) = size.multipliedReportingOverflow(by: 16)
            let (sum, overflow2) = times16.addingReportingOverflow(Int(digit))
            if overflow1 || overflow2 { return fail(.badRequest, "chunk size overflows") }
            size = sum
            index += 1
        }
        guard index > range.lowerBound else { return fail(.badRequest, "malformed chunk size") }
        // Chunk extensions (BWS ";" ...) are ignored but must not smuggle control characters.
        var rest = index
        while rest < range.upperBound, buffer[rest].isHTTPWhitespace { rest += 1 }
        if rest < range.upperBound {
            guard buffer[rest] == UInt8(ascii: ";"), buffer[rest..<range.upperBound].allSatisfy(\.isFieldValueCharacter) else {
                return fail(.badRequest, "malformed chunk extension")
            }
        } else if rest != index {
            return fail(.badRequest, "malformed chunk size")
        }
        guard size <= limits.maxBodyBytes - body.count else {
            return fail(.payloadTooLarge, "body exceeds \(limits.maxBodyBytes) bytes")
        }
        if size == 0 {
            trailerBytes = 0
            trailerCount = 0
            phase = .trailers
        } else {
            remainingBytes = size
            phase = .chunkData
        }
        return nil
    }

    // MARK: - Completion and failure

    private mutating func complete() -> Action {
        let request = HTTPRequest(method: method, target: target, version: version, headers: headers, body: body)
        // A large request's buffer is not kept for the next one: a kept-alive connection would otherwise hold
        // its largest request's size (up to twice the body limit, with growth) for as long as it stays open.
        if readIndex == buffer.count, buffer.capacity > Self.retainedBufferCapacity {
            buffer = []
            readIndex = 0
        }
        phase = .requestLine
        headBytes = 0
        headers = HTTPHeaders()
        body = []
        target = ""
        remainingBytes = 0
        expectsContinue = false
        return .request(request)
    }

    @discardableResult
    private mutating func fail(_ status: HTTPStatus, _ reason: String) -> Action {
        phase = .failed
        failure = (status, reason)
        expectsContinue = false
        body = []
        buffer = []
        readIndex = 0
        scannedBytes = 0
        return .reject(status, reason: reason)
    }

    /// Appends input, first dropping consumed bytes when that is cheap relative to what is kept.
    private mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard phase != .failed else { return }
        if readIndex == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            readIndex = 0
        } else if readIndex >= 4096, readIndex >= buffer.count / 2 {
            buffer.removeSubrange(0..<readIndex)
            readIndex = 0
        }
        buffer.append(contentsOf: bytes)
    }
}

extension HTTPRequestParser.Action: CustomStringConvertible {
    /// Redacted: a request's body and header values stay out of logs.
    public var description: String {
        switch self {
        case .needMoreData: "needMoreData"
        case .head(let head): "head(\(head.method) \(head.path))"
        case .sendContinue: "sendContinue"
        case .request(let request): "request(\(request.method) \(request.path))"
        case .reject(let status, let reason): "reject(\(status.code), \(reason))"
        }
    }
}

extension UInt8 {
    /// `tchar` of RFC 9110 §5.6.2.
    var isTokenCharacter: Bool {
        switch self {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }

    /// `field-vchar / SP / HTAB`, with obs-text allowed; every other control character (CR, LF, NUL, DEL) is refused.
    var isFieldValueCharacter: Bool {
        self == 0x09 || (0x20...0x7E).contains(self) || self >= 0x80
    }

    var isHTTPWhitespace: Bool { self == UInt8(ascii: " ") || self == UInt8(ascii: "\t") }

    var isDigit: Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) }
}
