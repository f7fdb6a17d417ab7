import Testing

@testable import CIClient

// CI's documented error document (COS "Error Codes"): Code, Message, Resource, RequestId, TraceId.
private let documentedBody = """
    <?xml version='1.0' encoding='utf-8' ?>
    <Error>
      <Code>SignatureDoesNotMatch</Code>
      <Message>The Signature you specified is invalid.</Message>
      <Resource>examplebucket-1250000000.ci.ap-chongqing.myqcloud.com/jobs</Resource>
      <RequestId>NWFkYjNiMWFfMjViMjU4NjRfMWFlOF9iZTVlMg==</RequestId>
      <TraceId>OGVmYzZiMmQzYjA2OWNhODk0NTRkMTBiOWVmMDAxODc0OWRkZjk0ZDM1NmI1M2E2MTRlY2MzZDhmNmI5MWI1OTY4OGQ5OWY4YWFhNjAzOTkyNDJhZmQyOTk1YWVmOWFlMDk1NWQ3ODI1YzNjMTYyNWYyYWE3NzBmM2Y3ZWIwZGQ=</TraceId>
    </Error>
    """

@Test func ciErrorBody_DocumentedFormat_ReadsResourceAndTraceId() {
    let error = CIClientError.fromResponse(status: 403, body: Array(documentedBody.utf8), requestIDHeader: nil)
    #expect(error.code == .ciError && error.httpStatus == 403 && !error.isRetryable)
    #expect(error.ciCode == "SignatureDoesNotMatch")
    #expect(error.ciMessage == "The Signature you specified is invalid.")
    #expect(error.resource == "examplebucket-1250000000.ci.ap-chongqing.myqcloud.com/jobs")
    #expect(error.requestID == "NWFkYjNiMWFfMjViMjU4NjRfMWFlOF9iZTVlMg==")
    #expect(error.traceID?.hasPrefix("OGVmYzZiMmQz") == true)
    #expect(error.description.contains("trace id OGVmYzZiMmQz"), "support asks for both ids: \(error.description)")
}

@Test func ciErrorBody_WithoutResourceOrTraceId_LeavesThemNil() {
    let body = "<Error><Code>InvalidArgument</Code><Message>bad size</Message><RequestId>NjQ1</RequestId></Error>"
    let error = CIClientError.fromResponse(status: 400, body: Array(body.utf8), requestIDHeader: nil)
    #expect(error.ciCode == "InvalidArgument" && error.ciMessage == "bad size" && error.requestID == "NjQ1")
    #expect(error.resource == nil && error.traceID == nil)
    #expect(!error.description.contains("trace id"))
}

@Test func ciErrorBody_EmptyTraceIdAndResource_AreNil() {
    let body = "<Error><Code>InternalError</Code><Message>x</Message><Resource> </Resource><RequestId>r</RequestId><TraceId/></Error>"
    let error = CIClientError.fromResponse(status: 500, body: Array(body.utf8), requestIDHeader: "h")
    #expect(error.resource == nil && error.traceID == nil && error.requestID == "h" && error.isRetryable)
}
