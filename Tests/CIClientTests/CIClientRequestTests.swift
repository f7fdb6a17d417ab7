import CIModel
import COSSigning
import Foundation
import Testing

@testable import CIClient

private let credentials = COSCredentials(secretID: "AKIDclienttest0000", secretKey: "client-test-secret-key")

private func configuration(endpoint: String? = nil, sessionToken: String? = nil, queueID: String? = nil) -> CIConfiguration {
    CIConfiguration(
        credentials: COSCredentials(secretID: credentials.secretID, secretKey: credentials.secretKey, sessionToken: sessionToken),
        bucket: "examplebucket-1250000000",
        region: "ap-chongqing",
        endpoint: endpoint.flatMap(URL.init(string:)),
        queueID: queueID
    )
}

/// 2022-06-30T18:42:20+0800.
private let sampleDate = Date(timeIntervalSince1970: 1_656_585_740)

// MARK: Request XML

@Test func xmlBody_WritesEveryElementInCIOrder() {
    let request = WatermarkExtractionRequest(
        object: "input/demo.mp4", userData: "my data", jobLevel: 1, callbackURL: "https://cb.example.com/v1/callbacks",
        callbackFormat: .json, queueID: "pQueue1")
    #expect(
        request.xmlBody(defaultQueueID: "pDefault")
            == "<Request><Tag>ExtractDigitalWatermark</Tag><Input><Object>input/demo.mp4</Object></Input><Operation>"
            + "<ExtractDigitalWatermark><Type>Text</Type><Version>V1</Version></ExtractDigitalWatermark><UserData>my data</UserData>"
            + "<JobLevel>1</JobLevel></Operation><QueueId>pQueue1</QueueId><CallBack>https://cb.example.com/v1/callbacks</CallBack>"
            + "<CallBackFormat>JSON</CallBackFormat></Request>")
}

@Test func xmlBody_EscapesMarkupInEveryValue() {
    let request = WatermarkExtractionRequest(
        object: "a&b<c>.mp4", userData: "say \"hi\" & 'bye'", callbackURL: "https://cb.example.com/cb?a=1&b=2", callbackFormat: .xml)
    let xml = request.xmlBody(defaultQueueID: nil)
    #expect(xml.contains("<Object>a&amp;b&lt;c&gt;.mp4</Object>"))
    #expect(xml.contains("<UserData>say &quot;hi&quot; &amp; &apos;bye&apos;</UserData>"))
    #expect(xml.contains("<CallBack>https://cb.example.com/cb?a=1&amp;b=2</CallBack>"))
    #expect(xml.contains("<CallBackFormat>XML</CallBackFormat>"))
}

@Test func xmlBody_OmitsUnsetElementsAndUsesDefaultQueue() {
    let request = WatermarkExtractionRequest(object: "/input/demo.mp4")
    let xml = request.xmlBody(defaultQueueID: "pDefault")
    #expect(xml.contains("<Object>input/demo.mp4</Object>"), "one leading slash is dropped")
    #expect(!xml.contains("<UserData>") && !xml.contains("<JobLevel>") && !xml.contains("<CallBack>"))
    #expect(xml.contains("<QueueId>pDefault</QueueId>"))
    #expect(xml.hasSuffix("<CallBackFormat>JSON</CallBackFormat></Request>"), "JSON is the default format")
    #expect(!WatermarkExtractionRequest(object: "x").xmlBody(defaultQueueID: nil).contains("<QueueId>"))
}

// MARK: Validation

@Test(arguments: [
    (WatermarkExtractionRequest(object: ""), "Object"),
    (WatermarkExtractionRequest(object: "/"), "Object"),
    (WatermarkExtractionRequest(object: "a\u{01}b"), "Object"),
    (WatermarkExtractionRequest(object: String(repeating: "k", count: 851)), "Object"),
    (WatermarkExtractionRequest(object: "ok.mp4", userData: "caf\u{E9}"), "UserData"),
    (WatermarkExtractionRequest(object: "ok.mp4", userData: "tab\there"), "UserData"),
    (WatermarkExtractionRequest(object: "ok.mp4", userData: String(repeating: "u", count: 1025)), "UserData"),
    (WatermarkExtractionRequest(object: "ok.mp4", jobLevel: 3), "JobLevel"),
    (WatermarkExtractionRequest(object: "ok.mp4", jobLevel: -1), "JobLevel"),
    (WatermarkExtractionRequest(object: "ok.mp4", callbackURL: "ftp://cb.example.com/x"), "CallBack"),
    (WatermarkExtractionRequest(object: "ok.mp4", callbackURL: "https://cb.example.com/a b"), "CallBack"),
    (WatermarkExtractionRequest(object: "ok.mp4", queueID: "p-1"), "QueueId"),
])
func validate_NamesTheOffendingField(request: WatermarkExtractionRequest, field: String) {
    #expect(throws: WatermarkRequestError.self) { try request.validate() }
    do {
        try request.validate()
    } catch {
        #expect(error.field == field)
        #expect(!error.description.contains("caf"), "the value itself is not echoed")
    }
}

@Test func validate_AcceptsTheLimitsThemselves() throws {
    try WatermarkExtractionRequest(
        object: "/" + String(repeating: "k", count: 850), userData: String(repeating: "~", count: 1024), jobLevel: 2, callbackURL: "no",
        queueID: "p2242ab62c7c94486915508540933a2c6"
    ).validate()
    try WatermarkExtractionRequest(object: "视频/演示.mp4", userData: " !~", jobLevel: 0, callbackURL: "http://127.0.0.1:8080/cb").validate()
}

// MARK: List query

@Test func listQuery_EncodesPlusAsPercent2BAndJoinsStatesWithComma() throws {
    var query = CIJobListQuery(queueID: "pQueue1", states: ["Success", "Failed"], size: 10, nextToken: "tok+en/1")
    query.startCreationTime = sampleDate
    query.endCreationTime = sampleDate.addingTimeInterval(3600)
    let parameters = query.parameters(defaultQueueID: nil)
    #expect(parameters.first { $0.name == "states" }?.value == "Success,Failed")
    #expect(parameters.first { $0.name == "startCreationTime" }?.value == "2022-06-30T18:42:20+0800")

    let prepared = try CIRequestBuilder.prepare(
        method: "GET", path: "/jobs", query: parameters, body: [], contentType: nil, configuration: configuration(), now: sampleDate)
    let urlQuery = try #require(prepared.url.query)
    #expect(urlQuery.contains("startCreationTime=2022-06-30T18%3A42%3A20%2B0800"))
    #expect(urlQuery.contains("endCreationTime=2022-06-30T19%3A42%3A20%2B0800"))
    #expect(urlQuery.contains("states=Success%2CFailed"))
    #expect(urlQuery.contains("nextToken=tok%2Ben%2F1"))
    #expect(!urlQuery.contains("+"), "a literal + would be read as a space")
    #expect(urlQuery.hasPrefix("tag=ExtractDigitalWatermark&queueId=pQueue1&"))
}

@Test func listQuery_FallsBackToConfiguredQueueAndLeavesOutUnsetParameters() {
    let names = CIJobListQuery().parameters(defaultQueueID: "pDefault").map(\.name)
    #expect(names == ["tag", "queueId", "size", "orderByTime"])
    #expect(CIJobListQuery().parameters(defaultQueueID: nil).map(\.name) == ["tag", "size", "orderByTime"])
}

@Test func listQuery_RejectsOutOfRangeValues() {
    #expect(throws: CIClientError.self) { try CIJobListQuery(size: 101).validate() }
    #expect(throws: CIClientError.self) { try CIJobListQuery(size: 0).validate() }
    #expect(throws: CIClientError.self) { try CIJobListQuery(orderByTime: "Newest").validate() }
    #expect(throws: CIClientError.self) { try CIJobListQuery(states: ["Success,Failed"]).validate() }
    #expect(throws: CIClientError.self) {
        try CIJobListQuery(startCreationTime: sampleDate, endCreationTime: sampleDate.addingTimeInterval(-1)).validate()
    }
    #expect(throws: Never.self) { try CIJobListQuery(size: 100).validate() }
}

@Test func ciTime_FormatsWithoutColonInOffset() {
    #expect(CITime.format(sampleDate) == "2022-06-30T18:42:20+0800")
    #expect(CITime.format(sampleDate.addingTimeInterval(0.9)) == "2022-06-30T18:42:20+0800", "fractions are truncated")
    #expect(CITime.format(sampleDate, utcOffsetSeconds: 0) == "2022-06-30T10:42:20+0000")
    #expect(CITime.format(sampleDate, utcOffsetSeconds: -(5 * 3600 + 1800)) == "2022-06-30T05:12:20-0530")
}

// MARK: Signing

@Test func prepare_SignsHostWithPortContentHeadersAndSecurityToken() throws {
    let config = configuration(endpoint: "http://127.0.0.1:18080", sessionToken: "tmp-token")
    let body = Array("<Request/>".utf8)
    let prepared = try CIRequestBuilder.prepare(
        method: "POST", path: "/jobs", query: [], body: body, contentType: "application/xml", configuration: config, now: sampleDate)
    #expect(prepared.url.absoluteString == "http://127.0.0.1:18080/jobs")
    let signed = Dictionary(uniqueKeysWithValues: prepared.signedHeaders.map { ($0.name.lowercased(), $0.value) })
    #expect(signed == ["host": "127.0.0.1:18080", "content-type": "application/xml", "content-length": "10", "x-ci-security-token": "tmp-token"])
    let header = try #require(prepared.headers.first { $0.name == "Authorization" }?.value)
    let authorization = try COSAuthorization(parsing: header)
    #expect(authorization.headerList == ["content-length", "content-type", "host", "x-ci-security-token"])
    #expect(prepared.headers.contains { $0.name == "x-ci-security-token" && $0.value == "tmp-token" })

    // What a server sees: the same headers, Host and Content-Length written by the HTTP stack.
    let received = prepared.headers + [(name: "Host", value: "127.0.0.1:18080"), (name: "Content-Length", value: "10")]
    let verdict = COSSignatureVerifier.verify(
        authorization, method: "POST", path: "/jobs", query: [], headers: received, secretKey: credentials.secretKey,
        now: sampleDate.addingTimeInterval(5))
    #expect(throws: Never.self) { try verdict.get() }
    let forged = COSSignatureVerifier.verify(
        authorization, method: "POST", path: "/jobs", query: [], headers: received, secretKey: "other", now: sampleDate.addingTimeInterval(5))
    #expect(throws: COSAuthorizationError.signatureMismatch) { try forged.get() }
}

@Test func prepare_DefaultEndpointOmitsDefaultPortAndKeepsCommaJoinedIDs() throws {
    let prepared = try CIRequestBuilder.prepare(
        method: "GET", path: "/jobs/j1,j2", query: [], body: [], contentType: nil, configuration: configuration(), now: sampleDate)
    #expect(prepared.url.absoluteString == "https://examplebucket-1250000000.ci.ap-chongqing.myqcloud.com/jobs/j1,j2")
    #expect(prepared.signedHeaders.map(\.name) == ["Host"])
    #expect(prepared.signedHeaders.first?.value == "examplebucket-1250000000.ci.ap-chongqing.myqcloud.com")
    #expect(!prepared.headers.contains { $0.name == "x-ci-security-token" })
}

@Test func prepare_KeepsEndpointPathAsPrefix() throws {
    let prepared = try CIRequestBuilder.prepare(
        method: "GET", path: "/jobs/j1", query: [], body: [], contentType: nil, configuration: configuration(endpoint: "http://localhost:9/ci/"),
        now: sampleDate)
    #expect(prepared.url.absoluteString == "http://localhost:9/ci/jobs/j1")
}

@Test func describeBatches_DeduplicatesAndChunksInOrder() {
    let ids = (1...23).map { "j\($0)" } + ["j1", "j5"]
    let batches = CIClient.describeBatches(ids)
    #expect(batches.map(\.count) == [10, 10, 3])
    #expect(batches.flatMap { $0 } == (1...23).map { "j\($0)" })
    #expect(CIClient.describeBatches([]).isEmpty)
}
