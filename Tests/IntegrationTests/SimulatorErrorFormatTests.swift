import CIClient
import CIModel
import CISimulator
import COSSigning
import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// One raw exchange with the simulator, signed by hand so a test controls exactly what is signed.
private struct RawAnswer {
    var status: Int
    var requestIDHeader: String?
    var body: [UInt8]

    /// The `<Error>` document's children in order, as (name, text) pairs.
    func errorFields() throws -> [(name: String, text: String)] {
        let root = try CINodeXML.decode(body, limits: CIDecodingLimits(maxDepth: 4, maxElements: 64))
        #expect(root.name == "Error")
        guard case .element(let fields) = root.value else { return [] }
        return fields.map { (name: $0.name, text: $0.value.text ?? "") }
    }
}

/// GETs `path` from the simulator, signing `host` with the value `signedHost` (default: the `Host` the
/// request really carries, `127.0.0.1:<port>`) for a window that starts `validFrom` seconds from now.
private func get(
    _ harness: CISimulatorTestHarness, _ path: String, secretID: String? = nil, secretKey: String? = nil, signedHost: String? = nil,
    validFrom: Int = 0
) async throws -> RawAnswer {
    let credentials = COSCredentials(
        secretID: secretID ?? harness.configuration.secretID, secretKey: secretKey ?? harness.configuration.secretKey)
    let start = Int(Date().timeIntervalSince1970) + validFrom
    let signature = COSSigner.sign(
        COSSigningRequest(method: "GET", path: path, query: [], headers: [(name: "host", value: signedHost ?? "127.0.0.1:\(harness.port)")]),
        credentials: credentials, start: start, end: start + 600)
    var request = URLRequest(url: harness.endpoint.appendingPathComponent(String(path.dropFirst())))
    request.setValue(signature.authorization, forHTTPHeaderField: "Authorization")
    let (data, response) = try await URLSession.shared.data(for: request)
    let http = try #require(response as? HTTPURLResponse)
    return RawAnswer(status: http.statusCode, requestIDHeader: http.value(forHTTPHeaderField: "x-ci-request-id"), body: [UInt8](data))
}

@Test func simulatorErrors_WrongSecretKey_AnswersCIsErrorDocumentWithSignatureDoesNotMatch() async throws {
    try await CISimulatorTestHarness.with { harness in
        let answer = try await get(harness, "/jobs/j1", secretKey: "not-the-right-key")
        #expect(answer.status == 403)
        let fields = try answer.errorFields()
        #expect(fields.map(\.name) == ["Code", "Message", "Resource", "RequestId", "TraceId"], "CI's order, every field present")
        let values = Dictionary(fields.map { ($0.name, $0.text) }, uniquingKeysWith: { first, _ in first })
        #expect(values["Code"] == "SignatureDoesNotMatch")
        #expect(values["Message"] == "The Signature you specified is invalid.")
        #expect(values["Resource"] == "127.0.0.1:\(harness.port)/jobs/j1")
        #expect(values["RequestId"] == answer.requestIDHeader && answer.requestIDHeader?.isEmpty == false)
        #expect(values["TraceId"]?.isEmpty == false)
        #expect(String(decoding: answer.body, as: UTF8.self).hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"))
        #expect(harness.simulator.statistics.authenticationFailures == 1)
    }
}

@Test func simulatorErrors_AuthenticationFailures_UseCIsCodePerCause() async throws {
    try await CISimulatorTestHarness.with { harness in
        let stranger = try await get(harness, "/jobs/j1", secretID: "AKIDstranger")
        #expect(stranger.status == 403)
        #expect(try stranger.errorFields().first?.text == "InvalidAccessKeyId")

        let (body, response) = try await URLSession.shared.data(from: harness.endpoint.appendingPathComponent("jobs/j1"))
        #expect((response as? HTTPURLResponse)?.statusCode == 403)
        #expect(try RawAnswer(status: 403, body: [UInt8](body)).errorFields().first?.text == "AccessDenied")

        let expired = try await get(harness, "/jobs/j1", validFrom: -3600)
        #expect(expired.status == 403)
        #expect(try expired.errorFields().prefix(2).map(\.text) == ["AccessDenied", "Request has expired"])
        #expect(harness.simulator.statistics.authenticationFailures == 3)
    }
}

@Test func simulatorErrors_CIClientReadsResourceAndTraceId() async throws {
    try await CISimulatorTestHarness.with { harness in
        let client = harness.client(secretKey: "not-the-right-key")
        do {
            _ = try await client.describeJobs(["j1"])
            Issue.record("a wrongly signed describe succeeded")
        } catch let error as CIClientError {
            #expect(error.httpStatus == 403 && error.ciCode == "SignatureDoesNotMatch")
            #expect(error.resource == "127.0.0.1:\(harness.port)/jobs/j1")
            #expect(error.traceID?.isEmpty == false && error.requestID?.isEmpty == false)
        }
    }
}

@Test func simulatorErrors_Injected500_IsInternalError() async throws {
    try await CISimulatorTestHarness.with { harness in
        harness.simulator.failNextRequests(count: 2, status: 500)
        let internalError = try await get(harness, "/jobs/j1")
        #expect(internalError.status == 500)
        #expect(try internalError.errorFields().first?.text == "InternalError")
        harness.simulator.failNextRequests(count: 1, status: 503)
        let unavailable = try await get(harness, "/jobs/j1")
        #expect(unavailable.status == 503)
        #expect(try unavailable.errorFields().first?.text == "ServiceUnavailable")
    }
}

@Test func simulatorAuth_HostSignedWithoutItsPort_IsAccepted() async throws {
    try await CISimulatorTestHarness.with { harness in
        // Tencent's Python SDK signs the URL's host name and sends `Host: 127.0.0.1:<port>`.
        let portless = try await get(harness, "/jobs/j1", signedHost: "127.0.0.1")
        #expect(portless.status == 200, "\(String(decoding: portless.body, as: UTF8.self))")
        let withPort = try await get(harness, "/jobs/j1")
        #expect(withPort.status == 200)
        let otherHost = try await get(harness, "/jobs/j1", signedHost: "127.0.0.2")
        #expect(otherHost.status == 403, "only the port may be left out of the signed host")
        #expect(try otherHost.errorFields().first?.text == "SignatureDoesNotMatch")
    }
}
