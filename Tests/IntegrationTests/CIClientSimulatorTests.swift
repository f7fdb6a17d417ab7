import CIModel
import CISimulator
import COSSigning
import Foundation
import Logging
import Testing

@testable import CIClient

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

private let quietLogger: Logger = {
    var logger = Logger(label: "ci-client-test")
    logger.logLevel = .critical
    return logger
}()

private func isMediaJobID(_ id: String) -> Bool {
    id.count == 33 && id.hasPrefix("j") && id.dropFirst().allSatisfy { $0.isHexDigit && !$0.isUppercase }
}

private func waitUntilFinal(_ harness: CISimulatorTestHarness, _ ids: [String]) async throws {
    let deadline = ContinuousClock.now + .seconds(5)
    while ContinuousClock.now < deadline {
        let now = Date()
        if ids.allSatisfy({ harness.simulator.job($0).map { $0.state(at: now).isFinal } ?? false }) { return }
        try await Task.sleep(for: .milliseconds(10))
    }
}

@Test func clientSimulator_SubmitAnswersSubmittedJobsDetail() async throws {
    try await CISimulatorTestHarness.with { harness in
        let client = harness.client()
        let response = try await client.submitWatermarkExtraction(
            WatermarkExtractionRequest(object: "/input/demo & co.mp4", userData: "batch <7>", jobLevel: 1, callbackURL: "no"))
        #expect(response.httpStatus == 200)
        #expect(response.requestID?.isEmpty == false)
        let job = try #require(response.envelope.jobs.first)
        #expect(response.envelope.jobs.count == 1)
        #expect(isMediaJobID(job.jobID))
        #expect(job.state == .submitted)
        #expect(job.tag == "ExtractDigitalWatermark")
        #expect(job.input?.object == "input/demo & co.mp4")
        #expect(job.userData == "batch <7>")
        #expect(job.jobLevel == 1)
        #expect(job.startTime == nil && job.endTime == nil, "times are '-' until set")
        #expect(job.creationTime != nil)
        #expect(String(decoding: response.body, as: UTF8.self).hasPrefix("<Response><JobsDetail>"))
        #expect(harness.simulator.job(job.jobID)?.object == "input/demo & co.mp4")
    }
}

@Test func clientSimulator_DescribeReportsFinalStatesAndNonExistJobIds() async throws {
    try await CISimulatorTestHarness.with { harness in
        let client = harness.client()
        let good = try await client.submitWatermarkExtraction(WatermarkExtractionRequest(object: "input/demo.mp4")).envelope.jobs[0].jobID
        let bad = try await client.submitWatermarkExtraction(WatermarkExtractionRequest(object: "input/missing.mp4")).envelope.jobs[0].jobID
        try await waitUntilFinal(harness, [good, bad])

        let response = try await client.describeJobs([good, "j00000000000000000000000000000000", bad])
        #expect(response.envelope.nonExistJobIDs == ["j00000000000000000000000000000000"])
        let jobs = Dictionary(uniqueKeysWithValues: response.envelope.jobs.map { ($0.jobID, $0) })
        #expect(jobs.count == 2)
        #expect(jobs[good]?.state == .success)
        #expect(jobs[good]?.watermark?.message == "wm-demo.mp4")
        #expect(jobs[good]?.endTime != nil)
        #expect(jobs[bad]?.state == .failed)
        #expect(jobs[bad]?.code == "ResourceNotFound")
        #expect(jobs[bad]?.watermark?.message == nil)

        let batches = try await client.describeAllJobs(Array(repeating: good, count: 3) + [bad])
        #expect(batches.count == 1 && batches[0].envelope.jobs.count == 2)
    }
}

@Test func clientSimulator_ListPagesOverTwentyFiveJobsInThreePages() async throws {
    try await CISimulatorTestHarness.with { harness in
        let client = harness.client()
        let startedAt = Date().addingTimeInterval(-60)
        var submitted: [String] = []
        for index in 0..<25 {
            let response = try await client.submitWatermarkExtraction(WatermarkExtractionRequest(object: "input/\(index).mp4"))
            submitted.append(response.envelope.jobs[0].jobID)
        }
        // startCreationTime carries a '+' offset: a client that sent it unencoded would get a 400 here.
        let query = CIJobListQuery(queueID: harness.configuration.defaultQueueID, startCreationTime: startedAt, size: 10)
        let pages = try await client.listAllJobs(query)
        #expect(pages.map(\.envelope.jobs.count) == [10, 10, 5])
        #expect(pages.dropLast().allSatisfy { $0.envelope.nextToken != nil })
        #expect(pages.last?.envelope.nextToken == nil)
        let listed = pages.flatMap { $0.envelope.jobs.map(\.jobID) }
        #expect(listed == Array(submitted.reversed()), "newest first, every job exactly once")

        let limited = try await client.listAllJobs(query, maxPages: 2)
        #expect(limited.count == 2 && limited.last?.envelope.nextToken != nil)

        try await waitUntilFinal(harness, submitted)
        let successes = try await client.listJobs(CIJobListQuery(states: ["Success", "Failed"], size: 100, orderByTime: "Asc"))
        #expect(successes.envelope.jobs.map(\.jobID) == submitted)
        let none = try await client.listJobs(CIJobListQuery(startCreationTime: Date().addingTimeInterval(3600)))
        #expect(none.envelope.jobs.isEmpty && none.envelope.nextToken == nil)
    }
}

@Test func clientSimulator_WrongSecretKeyIsSignatureDoesNotMatchAndNotRetried() async throws {
    try await CISimulatorTestHarness.with { harness in
        let client = harness.client(secretKey: "not-the-right-key")
        do {
            _ = try await client.submitWatermarkExtraction(WatermarkExtractionRequest(object: "input/demo.mp4"))
            Issue.record("a wrongly signed submit succeeded")
        } catch let error as CIClientError {
            #expect(error.code == .ciError)
            #expect(error.httpStatus == 403)
            #expect(error.ciCode == "SignatureDoesNotMatch")
            #expect(error.requestID != nil)
            #expect(!error.isRetryable)
            #expect(!error.description.contains("not-the-right-key"))
        }
        await #expect(throws: CIClientError.self) { try await client.describeJobs(["j1"]) }
        #expect(harness.simulator.statistics.requests == 2, "one request per call: 403 is final")
        #expect(harness.simulator.statistics.authenticationFailures == 2)
        #expect(harness.simulator.jobs.isEmpty)
    }
}

@Test func clientSimulator_UnsignedAndForeignRequestsAreDenied() async throws {
    try await CISimulatorTestHarness.with { harness in
        let (unsignedBody, unsigned) = try await URLSession.shared.data(from: harness.endpoint.appendingPathComponent("jobs/j1"))
        #expect((unsigned as? HTTPURLResponse)?.statusCode == 403)
        #expect(String(decoding: unsignedBody, as: UTF8.self).contains("<Code>AccessDenied</Code>"))

        let stranger = CIClient(
            configuration: CIConfiguration(
                credentials: COSCredentials(secretID: "AKIDstranger", secretKey: harness.configuration.secretKey),
                bucket: "examplebucket-1250000000", region: "ap-chongqing", endpoint: harness.endpoint),
            logger: quietLogger)
        await #expect(throws: CIClientError.self) { try await stranger.describeJobs(["j1"]) }
        #expect(harness.simulator.statistics.authenticationFailures == 2)
    }
}

@Test func clientSimulator_MalformedSubmitBodyIsInvalidArgument() async throws {
    try await CISimulatorTestHarness.with { harness in
        let client = harness.client()
        let prepared = try CIRequestBuilder.prepare(
            method: "POST", path: "/jobs", query: [], body: Array("<Request><Tag>ExtractDigitalWatermark</Tag></Request>".utf8),
            contentType: "application/xml", configuration: client.configuration, now: Date())
        var request = URLRequest(url: prepared.url)
        request.httpMethod = "POST"
        for header in prepared.headers { request.setValue(header.value, forHTTPHeaderField: header.name) }
        request.httpBody = Data(prepared.body)
        let (data, response) = try await URLSession.shared.data(for: request)
        #expect((response as? HTTPURLResponse)?.statusCode == 400)
        let error = CIClientError.fromResponse(status: 400, body: [UInt8](data), requestIDHeader: nil)
        #expect(error.ciCode == "InvalidArgument")
        #expect(error.ciMessage?.contains("Input.Object") == true)
    }
}

@Test func clientSimulator_Injected503WithRetryAfterSucceedsOnThirdAttempt() async throws {
    try await CISimulatorTestHarness.with { harness in
        let client = harness.client()
        harness.simulator.failNextRequests(count: 2, status: 503, retryAfter: 1)
        let started = ContinuousClock.now
        let response = try await client.submitWatermarkExtraction(WatermarkExtractionRequest(object: "input/demo.mp4"))
        let elapsed = ContinuousClock.now - started
        #expect(response.envelope.jobs.first?.state == .submitted)
        #expect(harness.simulator.statistics.requests == 3)
        #expect(harness.simulator.statistics.injectedFaults == 2)
        #expect(harness.simulator.jobs.count == 1, "the refused attempts created nothing")
        #expect(elapsed >= .seconds(2), "Retry-After: 1 was waited out twice, though backoff is at most 50 ms")
    }
}

@Test func clientSimulator_SubmitIsNotRetriedOn500ButDescribeIs() async throws {
    try await CISimulatorTestHarness.with { harness in
        let client = harness.client()
        harness.simulator.failNextRequests(count: 1, status: 500)
        await #expect(throws: CIClientError.self) {
            try await client.submitWatermarkExtraction(WatermarkExtractionRequest(object: "input/demo.mp4"))
        }
        #expect(harness.simulator.statistics.requests == 1, "a 500 may follow a created job: no blind resubmission")

        harness.simulator.failNextRequests(count: 2, status: 500)
        let response = try await client.describeJobs(["j1"])
        #expect(response.envelope.nonExistJobIDs == ["j1"])
        #expect(harness.simulator.statistics.requests == 4)
    }
}

@Test func clientSimulator_GivesUpAtMaxAttemptsAndOnLongRetryAfter() async throws {
    try await CISimulatorTestHarness.with { harness in
        let client = harness.client { $0.maxAttempts = 3 }
        harness.simulator.failNextRequests(count: 5, status: 429)
        do {
            _ = try await client.describeJobs(["j1"])
            Issue.record("describe succeeded through five 429s")
        } catch let error as CIClientError {
            #expect(error.httpStatus == 429 && error.ciCode == "TooManyRequests" && error.isRetryable)
        }
        #expect(harness.simulator.statistics.requests == 3)

        harness.simulator.failNextRequests(count: 1, status: 503, retryAfter: 120)
        do {
            _ = try await client.describeJobs(["j1"])
            Issue.record("describe waited out a two-minute Retry-After")
        } catch let error as CIClientError {
            #expect(error.retryAfter == .seconds(120) && error.isRetryable)
        }
        #expect(harness.simulator.statistics.requests == 4)
    }
}

@Test func clientSimulator_UnreachableEndpointIsRetryableNetworkError() async throws {
    // Port 1 (tcpmux) is privileged and unused here: connecting is refused at once. A port freed by an
    // earlier listener could be taken again by a test running in parallel.
    let port = 1
    let client = CIClient(
        configuration: {
            var configuration = CIConfiguration(
                credentials: COSCredentials(secretID: "AKIDx", secretKey: "k"), bucket: "examplebucket-1250000000", region: "ap-chongqing",
                endpoint: URL(string: "http://127.0.0.1:\(port)"))
            configuration.maxAttempts = 2
            configuration.baseBackoff = .milliseconds(1)
            return configuration
        }(), logger: quietLogger)
    do {
        _ = try await client.describeJobs(["j1"])
        Issue.record("a closed port answered")
    } catch let error as CIClientError {
        #expect(error.code == .network && error.isRetryable)
    }
}

@Test func simulator_SameSeedGivesSameJobIDs() async throws {
    func run() async throws -> [String] {
        try await CISimulatorTestHarness.with({ $0.seed = 99 }) { harness in
            let client = harness.client()
            var ids: [String] = []
            for index in 0..<3 {
                ids.append(try await client.submitWatermarkExtraction(WatermarkExtractionRequest(object: "o\(index)")).envelope.jobs[0].jobID)
            }
            return ids
        }
    }
    let first = try await run()
    #expect(first == (try await run()))
    #expect(Set(first).count == 3)
}
