import CIModel
import Foundation
import Logging
import TimeUnits

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Signed calls to Tencent Cloud Infinite's media-job API: submit an `ExtractDigitalWatermark` job,
/// describe jobs by id, list jobs.
///
/// Every request is signed with ``COSSigning/COSSigner`` (host, content-type, content-length and any
/// `x-ci-*` header such as `x-ci-security-token`), freshly for each attempt.
///
/// Retries: up to ``CIConfiguration/maxAttempts`` attempts with full-jitter exponential backoff, never
/// shorter than a `Retry-After` of at most ``CIConfiguration/maxRetryAfter``. The GETs retry on network
/// errors, timeouts, 5xx and 429. `POST /jobs` is not idempotent (a repeat creates a second job), so it
/// retries only on a connection that could not be established and on 429/503, where CI refused the
/// request; after a timeout or a broken connection the job may exist, and the error goes to the caller,
/// who can find the job with ``listJobs(_:)``. Each retry is logged at warning level, without secrets.
public final class CIClient: Sendable {
    /// The configuration the client was created with.
    public let configuration: CIConfiguration
    private let logger: Logger
    private let session: URLSession

    /// The most JobIds ``describeJobs(_:)`` sends in one request. CI documents comma-joined ids but no
    /// maximum; ten keeps the request far from any plausible limit while batching reconciliation.
    public static let maxJobIDsPerDescribe = 10

    /// Creates a client. Nothing is sent until a method is called.
    /// - Parameters:
    ///   - configuration: Endpoint, credentials and retry settings.
    ///   - logger: Receives one debug line per request and a warning per retry.
    ///   - session: The URL session; tests may pass an ephemeral one.
    public init(configuration: CIConfiguration, logger: Logger, session: URLSession = .shared) {
        self.configuration = configuration
        self.logger = logger
        self.session = session
    }

    // MARK: Operations

    /// Submits an `ExtractDigitalWatermark` job (`POST /jobs`).
    /// - Parameter request: The job; validated before anything is sent.
    /// - Returns: CI's answer, whose envelope holds one JobsDetail with `State=Submitted` and the new JobId.
    /// - Throws: ``WatermarkRequestError`` for an invalid request, ``CIClientError`` otherwise.
    public func submitWatermarkExtraction(_ request: WatermarkExtractionRequest) async throws -> CIResponse {
        try request.validate()
        let body = Array(request.xmlBody(defaultQueueID: configuration.queueID).utf8)
        let response = try await perform(
            operation: "submit", method: "POST", path: "/jobs", query: [], body: body, contentType: "application/xml", idempotent: false
        )
        guard !response.envelope.jobs.isEmpty else {
            throw CIClientError(code: .invalidResponse, httpStatus: response.httpStatus, requestID: response.requestID, detail: "submit answer has no JobsDetail")
        }
        return response
    }

    /// Describes jobs by id (`GET /jobs/<id>,<id>…`, DescribeMediaJob).
    ///
    /// Ids CI does not know come back in ``CIModel/CallbackEnvelope/nonExistJobIDs``; the call still succeeds.
    /// - Parameter jobIDs: 1 to ``maxJobIDsPerDescribe`` ids of letters, digits, `-` and `_`. For more, use
    ///   ``describeAllJobs(_:)``, which splits them with ``describeBatches(_:)``.
    /// - Throws: ``CIClientError``.
    public func describeJobs(_ jobIDs: [String]) async throws -> CIResponse {
        guard !jobIDs.isEmpty, jobIDs.count <= Self.maxJobIDsPerDescribe else {
            throw CIClientError.invalidRequest("describeJobs takes 1...\(Self.maxJobIDsPerDescribe) job ids, got \(jobIDs.count)")
        }
        if let bad = jobIDs.firstIndex(where: { !Self.isJobID($0) }) {
            throw CIClientError.invalidRequest("job id #\(bad) is empty or has characters other than letters, digits, '-' and '_'")
        }
        return try await perform(
            operation: "describe", method: "GET", path: "/jobs/" + jobIDs.joined(separator: ","), query: [], body: [], contentType: nil,
            idempotent: true
        )
    }

    /// Describes any number of jobs, one request per batch of ``describeBatches(_:)``, in order.
    /// - Throws: The first batch's ``CIClientError``; earlier batches' answers are then discarded.
    public func describeAllJobs(_ jobIDs: [String]) async throws -> [CIResponse] {
        var responses: [CIResponse] = []
        for batch in Self.describeBatches(jobIDs) {
            responses.append(try await describeJobs(batch))
        }
        return responses
    }

    /// Splits ids into batches for ``describeJobs(_:)``: duplicates removed (first occurrence kept),
    /// order kept, at most ``maxJobIDsPerDescribe`` per batch.
    public static func describeBatches(_ jobIDs: [String]) -> [[String]] {
        var seen = Set<String>()
        let unique = jobIDs.filter { seen.insert($0).inserted }
        return stride(from: 0, to: unique.count, by: maxJobIDsPerDescribe).map {
            Array(unique[$0..<min($0 + maxJobIDsPerDescribe, unique.count)])
        }
    }

    /// Lists jobs (`GET /jobs?tag=…`, DescribeMediaJobs): one page.
    /// - Parameter query: Filters and paging; validated first.
    /// - Returns: The page; its envelope's `nextToken` is non-nil when more pages follow.
    /// - Throws: ``CIClientError``.
    public func listJobs(_ query: CIJobListQuery) async throws -> CIResponse {
        try query.validate()
        return try await perform(
            operation: "list", method: "GET", path: "/jobs", query: query.parameters(defaultQueueID: configuration.queueID), body: [],
            contentType: nil, idempotent: true
        )
    }

    /// Lists jobs across pages, following `NextToken` from `query`'s position on.
    /// - Parameters:
    ///   - query: The first page's query.
    ///   - maxPages: The most pages fetched; when reached, the last page's `nextToken` tells where to go on.
    /// - Returns: The pages in order (at least one).
    /// - Throws: ``CIClientError``; ``CIClientError/Code/invalidResponse`` when CI repeats a `NextToken`
    ///   (following it would loop).
    public func listAllJobs(_ query: CIJobListQuery, maxPages: Int = 100) async throws -> [CIResponse] {
        guard maxPages >= 1 else { throw CIClientError.invalidRequest("maxPages must be at least 1") }
        var pages: [CIResponse] = []
        var next = query
        var seenTokens = Set<String>()
        if let token = query.nextToken { seenTokens.insert(token) }
        while pages.count < maxPages {
            let page = try await listJobs(next)
            pages.append(page)
            guard let token = page.envelope.nextToken else { break }
            guard seenTokens.insert(token).inserted else {
                throw CIClientError(code: .invalidResponse, requestID: page.requestID, detail: "NextToken repeated after \(pages.count) pages")
            }
            next.nextToken = token
        }
        return pages
    }

    // MARK: Transport

    /// One failed attempt, with what the retry decision needs to know.
    private struct AttemptFailure: Error {
        var error: CIClientError
        var connectionEstablished: Bool
    }

    private func perform(
        operation: String,
        method: String,
        path: String,
        query: [(name: String, value: String)],
        body: [UInt8],
        contentType: String?,
        idempotent: Bool
    ) async throws -> CIResponse {
        do {
            try configuration.validate()
        } catch {
            throw CIClientError(code: .invalidConfiguration, detail: error.description)
        }
        let policy = CIRetryPolicy(configuration: configuration)
        var generator = SystemRandomNumberGenerator()
        var attempt = 1
        while true {
            let prepared = try CIRequestBuilder.prepare(
                method: method, path: path, query: query, body: body, contentType: contentType, configuration: configuration, now: Date()
            )
            do {
                return try await send(prepared, operation: operation)
            } catch let failure as AttemptFailure {
                guard attempt < policy.maxAttempts,
                    policy.mayRetry(failure.error, idempotent: idempotent, connectionEstablished: failure.connectionEstablished)
                else { throw failure.error }
                let delay = policy.delay(retry: attempt, retryAfter: failure.error.retryAfter, using: &generator)
                logger.warning(
                    "ci request failed, retrying",
                    metadata: [
                        "ci.operation": "\(operation)",
                        "ci.attempt": "\(attempt)",
                        "ci.error": "\(failure.error.code)",
                        "ci.status": "\(failure.error.httpStatus.map(String.init) ?? "-")",
                        "ci.code": "\(failure.error.ciCode ?? "-")",
                        "ci.request_id": "\(failure.error.requestID ?? "-")",
                        "ci.retry_in_ms": "\(delay.inMilliseconds)",
                    ])
                try await Task.sleep(for: delay)
                attempt += 1
            }
        }
    }

    /// One exchange; throws ``AttemptFailure`` for anything but a decodable 2xx, `CancellationError` when cancelled.
    private func send(_ prepared: PreparedRequest, operation: String) async throws -> CIResponse {
        var request = URLRequest(url: prepared.url)
        request.httpMethod = prepared.method
        for header in prepared.headers { request.setValue(header.value, forHTTPHeaderField: header.name) }
        if !prepared.body.isEmpty || prepared.method == "POST" { request.httpBody = Data(prepared.body) }
        let timeout = configuration.requestTimeout
        // URLSession's timeout restarts with every byte received, so a trickling server could stretch an
        // attempt; CI answers in one small body, and racing a timer would need URLSessionTask.cancel (see
        // `exchange`), so the inactivity timeout is the bound.
        request.timeoutInterval = timeout.inSeconds
        let started = ContinuousClock.now
        let urlRequest = request

        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await session.exchange(urlRequest)
        } catch let failure as AttemptFailure {
            try Task.checkCancellation()
            throw failure
        } catch let error as URLError {
            try Task.checkCancellation()
            throw Self.classify(error, operation: operation)
        } catch {
            try Task.checkCancellation()
            throw AttemptFailure(error: CIClientError(code: .network, detail: "\(operation): \(type(of: error))"), connectionEstablished: true)
        }

        guard let http = response as? HTTPURLResponse else {
            throw AttemptFailure(error: CIClientError(code: .invalidResponse, detail: "\(operation): not an HTTP response"), connectionEstablished: true)
        }
        let body = [UInt8](data)
        let requestID = http.value(forHTTPHeaderField: "x-ci-request-id")
        logger.debug(
            "ci request",
            metadata: [
                "ci.operation": "\(operation)", "http.method": "\(prepared.method)", "http.path": "\(prepared.url.path)",
                "http.status": "\(http.statusCode)", "ci.request_id": "\(requestID ?? "-")",
                "duration_ms": "\((ContinuousClock.now - started).inMilliseconds)",
            ])
        guard (200..<300).contains(http.statusCode) else {
            let retryAfter = CIRetryPolicy.parseRetryAfter(http.value(forHTTPHeaderField: "Retry-After"))
            throw AttemptFailure(
                error: CIClientError.fromResponse(status: http.statusCode, body: body, requestIDHeader: requestID, retryAfter: retryAfter),
                connectionEstablished: true
            )
        }
        do {
            let envelope = try CallbackDecoder.decode(body)
            return CIResponse(body: body, envelope: envelope, requestID: requestID, httpStatus: http.statusCode)
        } catch {
            throw AttemptFailure(
                error: CIClientError(
                    code: .invalidResponse, httpStatus: http.statusCode, requestID: requestID,
                    detail: "\(operation): body is not a CI response (\(error.code))"
                ),
                connectionEstablished: true
            )
        }
    }

    /// Maps URLSession's errors; only failures before a connection existed are safe to repeat for a POST.
    private static func classify(_ error: URLError, operation: String) -> AttemptFailure {
        switch error.code {
        case .timedOut:
            return AttemptFailure(error: CIClientError(code: .timeout, detail: "\(operation): timed out"), connectionEstablished: true)
        case .cannotConnectToHost, .cannotFindHost, .dnsLookupFailed, .notConnectedToInternet, .secureConnectionFailed,
            .serverCertificateUntrusted, .serverCertificateHasBadDate, .serverCertificateNotYetValid, .serverCertificateHasUnknownRoot:
            return AttemptFailure(
                error: CIClientError(code: .network, detail: "\(operation): cannot connect (URLError \(error.code.rawValue))"),
                connectionEstablished: false
            )
        default:
            return AttemptFailure(
                error: CIClientError(code: .network, detail: "\(operation): connection failed (URLError \(error.code.rawValue))"),
                connectionEstablished: true
            )
        }
    }

    static func isJobID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64
            && id.utf8.allSatisfy { CIConfiguration.isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }
    }
}
