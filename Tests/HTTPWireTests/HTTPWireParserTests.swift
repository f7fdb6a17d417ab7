import HTTPWire
import Testing

/// Feeds `chunks` one after another and collects every action until each chunk is drained; heads are
/// left out unless `heads` (every request has one; the tests of heads ask for them).
private func actions(for chunks: [[UInt8]], limits: HTTPParserLimits = HTTPParserLimits(), heads: Bool = false) -> [HTTPRequestParser.Action] {
    var parser = HTTPRequestParser(limits: limits)
    var result: [HTTPRequestParser.Action] = []
    for chunk in chunks {
        var action = parser.feed(chunk)
        while true {
            if case .head = action, !heads {
            } else if action != .needMoreData {
                result.append(action)
            }
            if case .reject = action { return result }
            if action == .needMoreData { break }
            action = parser.next()
        }
    }
    return result
}

private func actions(_ text: String, limits: HTTPParserLimits = HTTPParserLimits(), heads: Bool = false) -> [HTTPRequestParser.Action] {
    actions(for: [Array(text.utf8)], limits: limits, heads: heads)
}

/// Feeds `text` and expects its head first; returns the action after it.
private func afterHead(_ parser: inout HTTPRequestParser, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> HTTPRequestParser.Action {
    let first = parser.feed(Array(text.utf8))
    guard case .head = first else {
        Issue.record("expected a head, got \(first)", sourceLocation: sourceLocation)
        return first
    }
    return parser.next()
}

private func requests(_ actions: [HTTPRequestParser.Action]) -> [HTTPRequest] {
    actions.compactMap { if case .request(let request) = $0 { request } else { nil } }
}

private func rejection(_ text: String, limits: HTTPParserLimits = HTTPParserLimits()) -> Int? {
    for action in actions(text, limits: limits) {
        if case .reject(let status, _) = action { return status.code }
    }
    return nil
}

private func single(_ text: String) -> HTTPRequest? {
    let all = requests(actions(text))
    return all.count == 1 ? all[0] : nil
}

// MARK: - Valid requests

@Test func parser_ParsesGetWithHeadersInOrder() throws {
    let request = try #require(single("GET /v1/jobs?state=Success HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nx-one:  2 \r\n\r\n"))
    #expect(request.method == .get)
    #expect(request.target == "/v1/jobs?state=Success")
    #expect(request.path == "/v1/jobs")
    #expect(request.query == "state=Success")
    #expect(request.version == .http1_1)
    #expect(request.headers.values(for: "X-ONE") == ["1", "2"])
    #expect(request.headers["host"] == "a")
    #expect(request.body.isEmpty)
    #expect(request.remoteAddress == "")
}

@Test func parser_ParsesContentLengthBody() throws {
    let request = try #require(single("POST /cb HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"))
    #expect(request.method == .post)
    #expect(request.body == Array("hello".utf8))
}

@Test func parser_WaitsForWholeBody() {
    var parser = HTTPRequestParser()
    #expect(afterHead(&parser, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab") == .needMoreData)
    #expect(parser.hasPartialRequest)
    guard case .request(let request) = parser.feed(Array("cd".utf8)) else {
        Issue.record("expected a request")
        return
    }
    #expect(request.body == Array("abcd".utf8))
    #expect(!parser.hasPartialRequest)
}

@Test(arguments: [
    "POST /cb?x=1 HTTP/1.1\r\nHost: example\r\nContent-Type: application/xml\r\nContent-Length: 11\r\n\r\n<a>body</a>",
    "POST /cb HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n<a>b\r\n7\r\nody</a>\r\n0\r\nX-Trailer: t\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
])
func parser_SplitAtEveryByteGivesSameRequest(text: String) throws {
    let bytes = Array(text.utf8)
    let whole = try #require(requests(actions(for: [bytes])).first)
    for split in 0...bytes.count {
        let parts = [Array(bytes[..<split]), Array(bytes[split...])]
        let result = actions(for: parts)
        #expect(result == [.request(whole)], "split at \(split)")
    }
    // Byte by byte: the worst case for incremental scanning.
    #expect(actions(for: bytes.map { [$0] }) == [.request(whole)])
}

@Test func parser_PipelinedRequestsComeOutInOrder() {
    let text = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        + "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        + "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
        + "GET /4 HTTP/1.1\r\nHost: a\r\n\r\n"
    let all = requests(actions(text))
    #expect(all.map(\.path) == ["/1", "/2", "/3", "/4"])
    #expect(all.map(\.body) == [[], Array("abc".utf8), Array("z".utf8), []])
}

@Test func parser_PipelinedPartialSecondRequestWaits() {
    var parser = HTTPRequestParser()
    guard case .request = afterHead(&parser, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HT") else {
        Issue.record("expected the first request")
        return
    }
    #expect(parser.next() == .needMoreData)
    #expect(parser.hasPartialRequest)
    guard case .request(let second) = afterHead(&parser, "TP/1.1\r\nHost: a\r\n\r\n") else {
        Issue.record("expected the second request")
        return
    }
    #expect(second.path == "/2")
}

@Test func parser_SkipsLeadingEmptyLines() {
    #expect(single("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")?.path == "/")
}

@Test func parser_AcceptsAsteriskFormForOptionsOnly() {
    #expect(single("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")?.target == "*")
    #expect(rejection("GET * HTTP/1.1\r\nHost: a\r\n\r\n") == 400)
}

@Test func parser_AcceptsHTTP10WithoutHost() {
    #expect(single("GET / HTTP/1.0\r\n\r\n")?.version == .http1_0)
}

@Test func parser_AllowsObsTextInValues() {
    #expect(single("GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\u{e9}\r\n\r\n")?.headers["X-Name"] == "caf\u{e9}")
}

// MARK: - Keep-alive

@Test func parser_KeepAliveFollowsVersionDefaultsAndConnectionTokens() {
    #expect(single("GET / HTTP/1.1\r\nHost: a\r\n\r\n")?.keepAlive == true)
    #expect(single("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n")?.keepAlive == false)
    #expect(single("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, close\r\n\r\n")?.keepAlive == false)
    #expect(single("GET / HTTP/1.0\r\n\r\n")?.keepAlive == false)
    #expect(single("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")?.keepAlive == true)
}

// MARK: - Request line

@Test(arguments: ["HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/3.0"])
func parser_RejectsUnsupportedVersionWith505(version: String) {
    #expect(rejection("GET / \(version)\r\nHost: a\r\n\r\n") == 505)
}

@Test(arguments: ["GET / http/1.1", "GET / HTTP/1.1x", "GET / HTTP/1", "GET /", "GET  / HTTP/1.1", "GET / HTTP/1.1 ", "G(T / HTTP/1.1", " GET / HTTP/1.1"])
func parser_RejectsMalformedRequestLine(line: String) {
    #expect(rejection("\(line)\r\nHost: a\r\n\r\n") == 400)
}

@Test(arguments: ["http://example.com/", "example.com:80", "v1/jobs", "/a\u{7F}b"])
func parser_RejectsTargetNotInOriginForm(target: String) {
    #expect(rejection("GET \(target) HTTP/1.1\r\nHost: a\r\n\r\n") == 400)
}

@Test func parser_RejectsTargetLongerThanHeaderLimitWith414() {
    let limits = HTTPParserLimits(maxHeaderBytes: 256)
    let target = "/" + String(repeating: "a", count: 300)
    #expect(rejection("GET \(target) HTTP/1.1\r\nHost: a\r\n\r\n", limits: limits) == 414)
    // Also without the line end: the parser must not buffer an unbounded request line.
    #expect(rejection("GET \(target)", limits: limits) == 414)
}

// MARK: - Line endings and field syntax

@Test func parser_RejectsBareLineFeed() {
    #expect(rejection("GET / HTTP/1.1\nHost: a\r\n\r\n") == 400)
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\n\r\n") == 400)
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\n\n") == 400)
}

@Test func parser_RejectsBareCarriageReturn() {
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n") == 400)
    #expect(rejection("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n") == 400)
}

@Test func parser_RejectsWhitespaceBeforeColon() {
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello") == 400)
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n") == 400)
}

@Test func parser_RejectsObsFold() {
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n") == 400)
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n\ttwo\r\n\r\n") == 400)
    // Whitespace between the request line and the first field, the same smuggling shape.
    #expect(rejection("GET / HTTP/1.1\r\n Host: a\r\n\r\n") == 400)
}

@Test(arguments: ["X Y: 1", "X\"Y: 1", ": 1", "NoColon", "X@: 1"])
func parser_RejectsInvalidFieldLine(line: String) {
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\n\(line)\r\n\r\n") == 400)
}

@Test func parser_RejectsControlCharactersInValues() {
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n") == 400)
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{7F}b\r\n\r\n") == 400)
}

// MARK: - Limits

@Test func parser_RejectsHeaderSectionOverLimitWith431() {
    let limits = HTTPParserLimits(maxHeaderBytes: 200)
    let big = String(repeating: "v", count: 200)
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nX: \(big)\r\n\r\n", limits: limits) == 431)
    // Incomplete but already over the limit: rejected without waiting for the end of the head.
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nX: \(big)", limits: limits) == 431)
    // Many small fields add up.
    let many = (0..<20).map { "X-\($0): 0123456789\r\n" }.joined()
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\n\(many)\r\n", limits: limits) == 431)
}

@Test func parser_AcceptsHeaderSectionExactlyAtLimit() {
    let head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    let limits = HTTPParserLimits(maxHeaderBytes: head.utf8.count)
    #expect(requests(actions(head, limits: limits)).count == 1)
    #expect(rejection(head, limits: HTTPParserLimits(maxHeaderBytes: head.utf8.count - 1)) == 431)
}

@Test func parser_RejectsTooManyHeadersWith431() {
    let limits = HTTPParserLimits(maxHeaderCount: 5)
    let fields = (0..<5).map { "X-\($0): v\r\n" }.joined()
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\n\(fields)\r\n", limits: limits) == 431)
    let fewer = (0..<4).map { "X-\($0): v\r\n" }.joined()
    #expect(requests(actions("GET / HTTP/1.1\r\nHost: a\r\n\(fewer)\r\n", limits: limits)).count == 1)
}

@Test func parser_RejectsBodyOverLimitFromContentLengthBeforeReadingIt() {
    let limits = HTTPParserLimits(maxBodyBytes: 10)
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", limits: limits) == 413)
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", limits: limits) == 413)
    #expect(requests(actions("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", limits: limits)).count == 1)
}

@Test func parser_RejectsChunkedBodyOverLimitAsSoonAsExceeded() {
    let limits = HTTPParserLimits(maxBodyBytes: 10)
    // The second chunk-size line alone pushes the total over the limit: no chunk data needed.
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n3\r\n", limits: limits) == 413)
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n", limits: limits) == 413)
}

// MARK: - Content-Length

@Test func parser_AcceptsIdenticalDuplicateContentLength() {
    #expect(single("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello")?.body == Array("hello".utf8))
    #expect(single("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")?.body == Array("hello".utf8))
}

@Test func parser_RejectsDuplicateContentLength() {
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!") == 400)
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!") == 400)
}

@Test(arguments: ["+5", "-1", "0x5", "5a", "", "5,", "5 5", "1e3"])
func parser_RejectsNonDigitContentLength(value: String) {
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \(value)\r\n\r\nhello") == 400)
}

// MARK: - Transfer-Encoding and smuggling

@Test func parser_RejectsContentLengthWithTransferEncoding() {
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400)
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n") == 400)
}

@Test(arguments: ["identity", "xchunked", "chunked, identity", "chunked, chunked", "chunked,", "chunked\r\nTransfer-Encoding: identity", "\"chunked\""])
func parser_RejectsTransferEncodingNotEndingInSingleChunked(value: String) {
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \(value)\r\n\r\n0\r\n\r\n") == 400)
}

@Test func parser_RejectsUnsupportedTransferCodingWith501() {
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n") == 501)
}

@Test func parser_RejectsTransferEncodingInHTTP10() {
    #expect(rejection("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400)
}

@Test func parser_AcceptsChunkedCaseInsensitively() {
    #expect(single("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n2\r\nhi\r\n0\r\n\r\n")?.body == Array("hi".utf8))
}

@Test func parser_DecodesChunkedBodyIgnoringExtensionsAndDroppingTrailers() throws {
    let text = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + "a;name=value\r\n0123456789\r\nA ; x=\"q\"\r\nabcdefghij\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n"
    let request = try #require(single(text))
    #expect(request.body == Array("0123456789abcdefghij".utf8))
    #expect(request.headers["X-Checksum"] == nil)
}

@Test(arguments: [
    "g\r\nxx\r\n0\r\n\r\n",  // not hex
    "\r\n0\r\n\r\n",  // empty size
    "2\r\nabc\r\n0\r\n\r\n",  // data longer than size: no CRLF after it
    "2\r\nabXY0\r\n\r\n",  // missing CRLF after data
    "2 \r\nab\r\n0\r\n\r\n",  // trailing whitespace without extension
    "10000000000000000\r\n",  // overflows 64 bits
    "2\nab\r\n0\r\n\r\n",  // bare LF after size
    "2;a\u{0}b\r\nab\r\n0\r\n\r\n",  // control character in an extension
    "-2\r\nab\r\n0\r\n\r\n",
    "0\r\nX Bad: 1\r\n\r\n",  // malformed trailer
])
func parser_RejectsMalformedChunks(chunks: String) {
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\(chunks)") == 400)
}

// MARK: - Host

@Test func parser_RejectsMissingHostInHTTP11() {
    #expect(rejection("GET / HTTP/1.1\r\n\r\n") == 400)
}

@Test func parser_RejectsDuplicateHost() {
    #expect(rejection("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") == 400)
}

// MARK: - Expect

@Test func parser_SendsContinueOnceBeforeBody() {
    var parser = HTTPRequestParser()
    #expect(afterHead(&parser, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n") == .sendContinue)
    #expect(parser.next() == .needMoreData)
    guard case .request(let request) = parser.feed(Array("abc".utf8)) else {
        Issue.record("expected a request")
        return
    }
    #expect(request.body == Array("abc".utf8))
    #expect(parser.next() == .needMoreData)
}

@Test func parser_SkipsContinueWhenBodyAlreadyArrived() {
    let result = actions("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
    #expect(result.count == 1)
    #expect(requests(result).count == 1)
}

@Test func parser_SkipsContinueWithoutBody() {
    let result = actions("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")
    #expect(requests(result).count == 1 && result.count == 1)
}

@Test func parser_RejectsOversizedBodyInsteadOfContinuing() {
    let limits = HTTPParserLimits(maxBodyBytes: 2)
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", limits: limits) == 413)
}

@Test func parser_RejectsUnknownExpectationWith417() {
    #expect(rejection("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 3\r\n\r\nabc") == 417)
}

@Test func parser_IgnoresContinueFromHTTP10() {
    let result = actions("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    #expect(result.isEmpty)
}

// MARK: - Failure state

@Test func parser_StaysFailedAfterReject() {
    var parser = HTTPRequestParser()
    let first = parser.feed(Array("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n".utf8))
    #expect(first == .reject(.badRequest, reason: "invalid header name"))
    #expect(parser.isFailed)
    #expect(parser.feed(Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)) == first)
}

// MARK: - Randomised robustness

/// SplitMix64: a tiny seeded generator so a failure reproduces.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Everything the parser says about `chunks`, interim responses left out (they depend on timing by design).
private func outcome(of chunks: [[UInt8]], limits: HTTPParserLimits) -> [HTTPRequestParser.Action] {
    actions(for: chunks, limits: limits).filter { $0 != .sendContinue }
}

@Test func parser_RandomMutationsAreSplitInvariantAndBounded() {
    let seeds = [
        "POST /cb HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /cb HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        "GET /a?b=c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ].map { Array($0.utf8) }
    let alphabet = Array("\r\n :;0123456789abcdefABCDEF,\t-/HTTP".utf8) + [0, 0x7F, 0xFF]
    let limits = HTTPParserLimits(maxHeaderBytes: 256, maxBodyBytes: 64, maxHeaderCount: 8)
    var random = SplitMix64(state: 0x5EED)
    for _ in 0..<3000 {
        var bytes = seeds.randomElement(using: &random)!
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            let position = Int.random(in: 0..<bytes.count, using: &random)
            let byte = alphabet.randomElement(using: &random)!
            switch Int.random(in: 0..<3, using: &random) {
            case 0: bytes[position] = byte
            case 1: bytes.insert(byte, at: position)
            default: if bytes.count > 1 { bytes.remove(at: position) }
            }
        }
        var chunks: [[UInt8]] = []
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + Int.random(in: 1...16, using: &random))
            chunks.append(Array(bytes[start..<end]))
            start = end
        }
        let whole = outcome(of: [bytes], limits: limits)
        #expect(outcome(of: chunks, limits: limits) == whole, "input: \(bytes)")
        for case .request(let request) in whole {
            #expect(request.body.count <= limits.maxBodyBytes)
            #expect(request.target.hasPrefix("/") || request.target == "*")
        }
    }
}
