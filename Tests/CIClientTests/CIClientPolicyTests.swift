import COSSigning
import Foundation
import Testing

@testable import CIClient

private let policy = CIRetryPolicy(maxAttempts: 4, baseBackoff: .milliseconds(200), maxBackoff: .seconds(5), maxRetryAfter: .seconds(30))

/// Deterministic randomness, so bounds tests explore many draws reproducibly.
private struct FixedSeedGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state
    }
}

// MARK: Backoff

@Test func backoff_CeilingDoublesFromBaseAndStopsAtMaximum() {
    #expect(policy.backoffCeiling(retry: 1) == .milliseconds(200))
    #expect(policy.backoffCeiling(retry: 2) == .milliseconds(400))
    #expect(policy.backoffCeiling(retry: 3) == .milliseconds(800))
    #expect(policy.backoffCeiling(retry: 5) == .milliseconds(3200))
    #expect(policy.backoffCeiling(retry: 6) == .seconds(5))
    #expect(policy.backoffCeiling(retry: 1000) == .seconds(5))
}

@Test func backoff_FullJitterStaysWithinZeroAndCeilingAndSpreads() {
    var generator = FixedSeedGenerator(state: 42)
    for retry in 1...8 {
        let ceiling = policy.backoffCeiling(retry: retry)
        let delays = (0..<200).map { _ in policy.delay(retry: retry, retryAfter: nil, using: &generator) }
        #expect(delays.allSatisfy { $0 >= .zero && $0 <= ceiling })
        #expect(delays.contains { $0 < ceiling / 2 } && delays.contains { $0 > ceiling / 2 }, "full jitter covers the whole range")
    }
}

@Test func backoff_NeverWaitsLessThanRetryAfter() {
    var generator = FixedSeedGenerator(state: 7)
    for _ in 0..<100 {
        #expect(policy.delay(retry: 1, retryAfter: .seconds(2), using: &generator) == .seconds(2))
        #expect(policy.delay(retry: 9, retryAfter: .milliseconds(1), using: &generator) >= .milliseconds(1))
    }
}

@Test func retryAfter_ParsesDeltaSecondsOnly() {
    #expect(CIRetryPolicy.parseRetryAfter("3") == .seconds(3))
    #expect(CIRetryPolicy.parseRetryAfter(" 0 ") == .zero)
    #expect(CIRetryPolicy.parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT") == nil)
    #expect(CIRetryPolicy.parseRetryAfter("-1") == nil)
    #expect(CIRetryPolicy.parseRetryAfter("1.5") == nil)
    #expect(CIRetryPolicy.parseRetryAfter(nil) == nil)
}

// MARK: Retry decisions

@Test func mayRetry_IdempotentCallsRetryEveryTransientFailure() {
    #expect(policy.mayRetry(CIClientError(code: .network), idempotent: true, connectionEstablished: true))
    #expect(policy.mayRetry(CIClientError(code: .timeout), idempotent: true, connectionEstablished: true))
    #expect(policy.mayRetry(CIClientError(code: .ciError, httpStatus: 500), idempotent: true, connectionEstablished: true))
    #expect(policy.mayRetry(CIClientError(code: .ciError, httpStatus: 429), idempotent: true, connectionEstablished: true))
    #expect(!policy.mayRetry(CIClientError(code: .ciError, httpStatus: 403), idempotent: true, connectionEstablished: true))
    #expect(!policy.mayRetry(CIClientError(code: .ciError, httpStatus: 404), idempotent: true, connectionEstablished: true))
    #expect(!policy.mayRetry(CIClientError(code: .invalidResponse, httpStatus: 200), idempotent: true, connectionEstablished: true))
}

@Test func mayRetry_SubmitRetriesOnlyWhereNoJobCanExist() {
    #expect(policy.mayRetry(CIClientError(code: .ciError, httpStatus: 503), idempotent: false, connectionEstablished: true))
    #expect(policy.mayRetry(CIClientError(code: .ciError, httpStatus: 429), idempotent: false, connectionEstablished: true))
    #expect(policy.mayRetry(CIClientError(code: .network), idempotent: false, connectionEstablished: false))
    #expect(!policy.mayRetry(CIClientError(code: .network), idempotent: false, connectionEstablished: true))
    #expect(!policy.mayRetry(CIClientError(code: .timeout), idempotent: false, connectionEstablished: true))
    #expect(!policy.mayRetry(CIClientError(code: .ciError, httpStatus: 500), idempotent: false, connectionEstablished: true))
    #expect(!policy.mayRetry(CIClientError(code: .ciError, httpStatus: 502), idempotent: false, connectionEstablished: true))
}

@Test func mayRetry_GivesUpWhenRetryAfterExceedsTheCap() {
    let longWait = CIClientError(code: .ciError, httpStatus: 503, retryAfter: .seconds(31))
    #expect(longWait.isRetryable)
    #expect(!policy.mayRetry(longWait, idempotent: true, connectionEstablished: true))
    #expect(policy.mayRetry(CIClientError(code: .ciError, httpStatus: 503, retryAfter: .seconds(30)), idempotent: true, connectionEstablished: true))
}

// MARK: CI errors

@Test func ciError_ParsesErrorBodyAndPrefersRequestIDHeader() {
    let body = Array(
        "<?xml version='1.0' encoding='utf-8' ?>\n<Error>\n  <Code>AccessDenied</Code>\n  <Message>Access Denied.</Message>\n  <RequestId>NjQ1body</RequestId>\n</Error>"
            .utf8)
    let error = CIClientError.fromResponse(status: 403, body: body, requestIDHeader: "NjQ1header")
    #expect(error.code == .ciError)
    #expect(error.httpStatus == 403)
    #expect(error.ciCode == "AccessDenied")
    #expect(error.ciMessage == "Access Denied.")
    #expect(error.requestID == "NjQ1header")
    #expect(!error.isRetryable)
    #expect(CIClientError.fromResponse(status: 403, body: body, requestIDHeader: nil).requestID == "NjQ1body")
    #expect(error.description == "CIClientError.ciError: status 403: AccessDenied: \"Access Denied.\": request id NjQ1header")
}

@Test func ciError_ToleratesBodiesThatAreNotCIErrors() {
    let html = CIClientError.fromResponse(status: 502, body: Array("<html><body>Bad Gateway</body></html>".utf8), requestIDHeader: nil)
    #expect(html.ciCode == nil && html.httpStatus == 502 && html.isRetryable)
    let empty = CIClientError.fromResponse(status: 503, body: [], requestIDHeader: nil, retryAfter: .seconds(1))
    #expect(empty.ciCode == nil && empty.retryAfter == .seconds(1) && empty.isRetryable)
    let json = CIClientError.fromResponse(status: 429, body: Array("{\"Code\":\"x\"}".utf8), requestIDHeader: nil)
    #expect(json.ciCode == nil && json.isRetryable)
}

// MARK: Configuration

private let completeEnvironment = [
    "CI_SECRET_ID": "AKIDenvironment000",
    "CI_SECRET_KEY": "environment-secret-key",
    "CI_BUCKET": "examplebucket-1250000000",
    "CI_REGION": "ap-chongqing",
]

@Test func configuration_IsNilWithoutSecretID() throws {
    #expect(try CIConfiguration.fromEnvironment([:]) == nil)
    #expect(try CIConfiguration.fromEnvironment(["CI_SECRET_ID": "", "CI_BUCKET": "x"]) == nil, "empty counts as unset")
}

@Test(arguments: ["CI_SECRET_KEY", "CI_BUCKET", "CI_REGION"])
func configuration_NamesMissingRequiredVariable(variable: String) {
    var environment = completeEnvironment
    environment[variable] = nil
    #expect(throws: CIConfigurationError(variable: variable, reason: "is required when CI_SECRET_ID is set")) {
        try CIConfiguration.fromEnvironment(environment)
    }
}

@Test(arguments: [
    ("CI_BUCKET", "examplebucket"), ("CI_BUCKET", "Example-125"), ("CI_REGION", "ap chongqing"), ("CI_ENDPOINT", "ftp://x"),
    ("CI_ENDPOINT", "not a url"), ("CI_QUEUE_ID", "p-1"),
])
func configuration_NamesInvalidVariableWithoutEchoingIt(variable: String, value: String) {
    var environment = completeEnvironment
    environment[variable] = value
    do {
        _ = try CIConfiguration.fromEnvironment(environment)
        Issue.record("\(variable)=\(value) was accepted")
    } catch {
        #expect(error.variable == variable)
        #expect(!error.description.contains(value))
    }
}

@Test func configuration_ReadsOptionalVariablesAndDefaultsEndpoint() throws {
    let plain = try #require(try CIConfiguration.fromEnvironment(completeEnvironment))
    #expect(plain.endpoint.absoluteString == "https://examplebucket-1250000000.ci.ap-chongqing.myqcloud.com")
    #expect(plain.queueID == nil && plain.credentials.sessionToken == nil)

    var environment = completeEnvironment
    environment["CI_ENDPOINT"] = "http://127.0.0.1:9000"
    environment["CI_SESSION_TOKEN"] = "session-token-value"
    environment["CI_QUEUE_ID"] = "p2242ab62c7c94486915508540933a2c6"
    let full = try #require(try CIConfiguration.fromEnvironment(environment))
    #expect(full.endpoint.absoluteString == "http://127.0.0.1:9000")
    #expect(full.credentials.sessionToken == "session-token-value")
    #expect(full.queueID == "p2242ab62c7c94486915508540933a2c6")
    #expect(!"\(full)".contains("environment-secret-key") && !"\(full)".contains("session-token-value"))
}
