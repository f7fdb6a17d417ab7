import HTTPWire
import Testing

// `%00` decodes to U+0000, which no JobId, tag or token can hold and PostgreSQL text refuses: such a segment
// or query value is kept raw, like any other escape that does not decode to a usable name.

@Test func request_NULEscapeKeepsSegmentAndQueryValueRaw() {
    let request = HTTPRequest(method: .get, target: "/v1/jobs/%00abc/a%2500?tag=%00&queueId=a%00b&state=%2500")
    #expect(request.pathSegments == ["v1", "jobs", "%00abc", "a%00"])
    #expect(request.queryItems.map(\.value) == ["%00", "a%00b", "%00"])
}
