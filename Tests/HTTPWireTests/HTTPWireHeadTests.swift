import HTTPWire
import Testing

/// The parser reports a request's head before it consumes any body byte, so the listener can refuse it
/// (authentication, a memory budget) without reading what the client declared.

@Test func parserHead_ReportedBeforeAnyBodyByteIsConsumed() {
    var parser = HTTPRequestParser()
    let text = "POST /v1/callbacks/wrong HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n"
    guard case .head(let head) = parser.feed(Array(text.utf8)) else {
        Issue.record("expected a head")
        return
    }
    #expect(head.method == .post)
    #expect(head.target == "/v1/callbacks/wrong")
    #expect(head.pathSegments == ["v1", "callbacks", "wrong"])
    #expect(head.headers["Content-Length"] == "1048576")
    #expect(head.body == .length(1_048_576))
    #expect(parser.announcedBodyBytes == 1_048_576)
    #expect(parser.next() == .needMoreData)
}

@Test func parserHead_PrecedesTheRequestAndMatchesIt() {
    var parser = HTTPRequestParser()
    guard case .head(let head) = parser.feed(Array("POST /cb?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc".utf8)),
        case .request(let request) = parser.next()
    else {
        Issue.record("expected a head, then the request")
        return
    }
    #expect(HTTPRequest(head: head, body: Array("abc".utf8)) == request)
    #expect(head.queryItem("x") == "1")
    #expect(parser.announcedBodyBytes == 0)
}

@Test func parserHead_RequestWithoutBodyAnnouncesZero() {
    var parser = HTTPRequestParser()
    guard case .head(let head) = parser.feed(Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)) else {
        Issue.record("expected a head")
        return
    }
    #expect(head.body == .length(0))
    #expect(parser.announcedBodyBytes == 0)
}

@Test func parserHead_ChunkedBodyAnnouncesAsChunksArrive() {
    var parser = HTTPRequestParser()
    guard case .head(let head) = parser.feed(Array("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)) else {
        Issue.record("expected a head")
        return
    }
    #expect(head.body == .chunked)
    #expect(parser.announcedBodyBytes == 0)
    #expect(parser.next() == .needMoreData)
    // A chunk-size line announces its whole chunk before its data arrives.
    #expect(parser.feed(Array("a\r\n0123".utf8)) == .needMoreData)
    #expect(parser.announcedBodyBytes == 10)
    #expect(parser.feed(Array("456789\r\n5\r\n".utf8)) == .needMoreData)
    #expect(parser.announcedBodyBytes == 15)
    guard case .request(let request) = parser.feed(Array("abcde\r\n0\r\n\r\n".utf8)) else {
        Issue.record("expected the request")
        return
    }
    #expect(request.body.count == 15)
    #expect(parser.announcedBodyBytes == 0)
}

@Test func parserHead_ComesBeforeContinueSoARefusalNeedsNoContinue() {
    var parser = HTTPRequestParser()
    let first = parser.feed(Array("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n".utf8))
    guard case .head = first else {
        Issue.record("expected a head, got \(first)")
        return
    }
    #expect(parser.next() == .sendContinue)
    #expect(parser.next() == .needMoreData)
}

@Test func parserHead_NotReportedForAnInvalidHead() {
    var parser = HTTPRequestParser(limits: HTTPParserLimits(maxBodyBytes: 10))
    #expect(parser.feed(Array("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n".utf8)) == .reject(.payloadTooLarge, reason: "body exceeds 10 bytes"))
    #expect(parser.announcedBodyBytes == 0)
}

@Test func parserHead_EachPipelinedRequestHasItsOwn() {
    var parser = HTTPRequestParser()
    var heads: [String] = []
    var requests: [String] = []
    var action = parser.feed(Array("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nz".utf8))
    while action != .needMoreData {
        switch action {
        case .head(let head): heads.append(head.path)
        case .request(let request): requests.append(request.path)
        default: Issue.record("unexpected \(action)")
        }
        action = parser.next()
    }
    #expect(heads == ["/1", "/2"])
    #expect(requests == ["/1", "/2"])
}
