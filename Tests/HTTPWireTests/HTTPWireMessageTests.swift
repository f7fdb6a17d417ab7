import HTTPWire
import Testing

// MARK: - HTTPRequest derived views

@Test func request_PathSegmentsArePercentDecodedAndEmptyOnesDropped() {
    let request = HTTPRequest(method: .get, target: "/v1//jobs/ab%2Fc%20d/?x=1")
    #expect(request.path == "/v1//jobs/ab%2Fc%20d/")
    #expect(request.pathSegments == ["v1", "jobs", "ab/c d"])
}

@Test func request_InvalidPercentEscapeKeepsSegmentRaw() {
    let request = HTTPRequest(method: .get, target: "/jobs/50%/a%zz/%C3%A9/%FF")
    #expect(request.pathSegments == ["jobs", "50%", "a%zz", "\u{e9}", "%FF"])
}

@Test func request_QueryItemsAreFormDecoded() {
    let request = HTTPRequest(method: .get, target: "/jobs?state=Success+Now&&id=a%26b&flag&empty=&bad=%G1")
    let items = request.queryItems
    #expect(items.map(\.name) == ["state", "id", "flag", "empty", "bad"])
    #expect(items.map(\.value) == ["Success Now", "a&b", "", "", "%G1"])
    #expect(request.queryItem("id") == "a&b")
    #expect(request.queryItem("missing") == nil)
}

@Test func request_NoQueryMeansNilQueryAndNoItems() {
    let request = HTTPRequest(method: .get, target: "/jobs")
    #expect(request.query == nil)
    #expect(request.queryItems.isEmpty)
    #expect(HTTPRequest(method: .get, target: "/jobs?").query == "")
}

// MARK: - HTTPHeaders

@Test func headers_LookupIsCaseInsensitiveAndOrdered() {
    var headers: HTTPHeaders = ["Content-Type": "text/plain", "X-A": "1"]
    headers.add(name: "x-a", value: "2")
    #expect(headers["content-type"] == "text/plain")
    #expect(headers["X-A"] == "1")
    #expect(headers.values(for: "X-a") == ["1", "2"])
    #expect(headers.map(\.name) == ["Content-Type", "X-A", "x-a"])
    #expect(headers["Missing"] == nil)
}

@Test func headers_ReplaceOrAddKeepsOneField() {
    var headers: HTTPHeaders = ["X-A": "1", "B": "b", "x-a": "2"]
    headers.replaceOrAdd(name: "X-A", value: "3")
    #expect(headers.values(for: "x-a") == ["3"])
    #expect(headers.count == 2)
    headers.replaceOrAdd(name: "New", value: "n")
    #expect(headers["new"] == "n")
}

@Test func headers_RemoveDropsEveryMatchingField() {
    var headers: HTTPHeaders = ["X-A": "1", "B": "b", "x-a": "2"]
    headers.remove(name: "X-A")
    #expect(headers.map(\.name) == ["B"])
}

@Test func headers_DescriptionOmitsValues() {
    let headers: HTTPHeaders = ["Authorization": "secret-token"]
    #expect(!headers.description.contains("secret-token"))
}

// MARK: - Encoder

private let date = "Sun, 06 Nov 1994 08:49:37 GMT"

private func encoded(_ response: HTTPResponse, keepAlive: Bool = true, isHead: Bool = false) -> String {
    String(decoding: HTTPResponseEncoder.encode(response, keepAlive: keepAlive, isHead: isHead, date: date), as: UTF8.self)
}

@Test func encoder_GETResponseIsByteExact() {
    let response = HTTPResponse(status: .ok, headers: ["Content-Type": "application/json"], body: Array("{\"a\":1}".utf8))
    #expect(
        encoded(response)
            == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\nDate: \(date)\r\nConnection: keep-alive\r\n\r\n{\"a\":1}"
    )
}

@Test func encoder_HEADResponseHasGETFieldsAndNoBody() {
    let response = HTTPResponse(status: .ok, headers: ["Content-Type": "application/json"], body: Array("{\"a\":1}".utf8))
    #expect(
        encoded(response, keepAlive: false, isHead: true)
            == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\nDate: \(date)\r\nConnection: close\r\n\r\n"
    )
}

@Test func encoder_ReplacesFramingFieldsSetByResponder() {
    let response = HTTPResponse(
        status: .accepted,
        headers: ["Content-Length": "999", "transfer-encoding": "chunked", "Connection": "upgrade", "Date": "yesterday", "X-Id": "1"],
        body: Array("ok".utf8)
    )
    #expect(encoded(response) == "HTTP/1.1 202 Accepted\r\nX-Id: 1\r\nContent-Length: 2\r\nDate: \(date)\r\nConnection: keep-alive\r\n\r\nok")
}

@Test func encoder_NeutralisesResponseSplitting() {
    let response = HTTPResponse(
        status: HTTPStatus(code: 200, reasonPhrase: "OK\r\nX-Evil: 1"),
        headers: ["X-A": "v\r\nSet-Cookie: evil", "Bad Name": "x", "X-Tab": "a\tb"]
    )
    #expect(
        encoded(response)
            == "HTTP/1.1 200 OK  X-Evil: 1\r\nX-A: v  Set-Cookie: evil\r\nX-Tab: a\tb\r\nContent-Length: 0\r\nDate: \(date)\r\nConnection: keep-alive\r\n\r\n"
    )
}

@Test func encoder_NoContentHasNoLengthAndNoBody() {
    let response = HTTPResponse(status: .noContent, body: Array("ignored".utf8))
    #expect(encoded(response) == "HTTP/1.1 204 No Content\r\nDate: \(date)\r\nConnection: keep-alive\r\n\r\n")
}

@Test func encoder_AppendsToExistingBuffer() {
    var buffer = HTTPResponseEncoder.continueResponse
    HTTPResponseEncoder.encode(HTTPResponse(status: .notFound), keepAlive: false, isHead: false, date: date, into: &buffer)
    #expect(
        String(decoding: buffer, as: UTF8.self)
            == "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nDate: \(date)\r\nConnection: close\r\n\r\n"
    )
}
