import CIClient
import CIModel
import COSSigning
import Foundation
import HTTPListener
import HTTPWire
import Logging
import Synchronization
import TimeUnits

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A fake Tencent Cloud Infinite for integration tests and demos, on this project's own HTTP listener.
///
/// It serves `POST /jobs` (submit an `ExtractDigitalWatermark` job), `GET /jobs/<id>[,<id>…]`
/// (DescribeMediaJob) and `GET /jobs?…` (DescribeMediaJobs with `NextToken` paging), each checked against
/// the COS signature of the configured key. Jobs go Submitted → Running → Success (or Failed for keys
/// containing `missing`) on a timeline fixed at submission, and their TaskFinish callbacks are posted to
/// the job's `CallBack` with CI's quirks and configurable faults: delay, duplicates, a late `Running`
/// callback, drops, and retries on non-2xx answers. Refusals are CI's `<Error>` documents with CI's codes
/// and statuses (`SignatureDoesNotMatch` for a wrong SecretKey), readable by Tencent's own SDKs.
public final class CISimulator: Sendable {
    /// A callback body due at some time, with the bodies that follow it.
    struct ScheduledDelivery: Sendable {
        var jobID: String
        var url: String
        var format: CallbackFormat
        var due: ContinuousClock.Instant
        /// The final callback, or `nil` when it is dropped.
        var finalBody: [UInt8]?
        var duplicate: Bool
        /// The late `Running` callback, when there is one.
        var lateRunningBody: [UInt8]?
    }

    private struct Fault {
        var remaining: Int
        var status: Int
        var retryAfter: Int?
    }

    /// Everything requests and deliveries change, behind one lock: the HTTP responder runs many requests
    /// at once on the cooperative pool, and the delivery tasks update the statistics.
    private struct State {
        var jobs: [String: SimulatedJob] = [:]
        var jobsInOrder: [String] = []
        var random: SeededRandom
        var statistics = SimulatorStatistics()
        var fault: Fault?
        var callbacksRendered = 0
        var deliveryStreamClaimed = false
    }

    let configuration: SimulatorConfiguration
    let logger: Logger
    private let state: Mutex<State>
    private let server: HTTPServer
    private let deliveries: AsyncStream<ScheduledDelivery>
    private let deliveryContinuation: AsyncStream<ScheduledDelivery>.Continuation
    let deliverySession: URLSession

    /// Creates a simulator; nothing listens until ``run()``.
    /// - Parameters:
    ///   - configuration: Behaviour and faults.
    ///   - logger: Receives request, job and delivery events.
    public init(configuration: SimulatorConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let seed = configuration.seed ?? UInt64.random(in: .min ... .max)
        if configuration.seed == nil {
            logger.info("ci simulator seeded", metadata: ["sim.seed": "\(seed)"])
        }
        state = Mutex(State(random: SeededRandom(seed: seed)))
        (deliveries, deliveryContinuation) = AsyncStream.makeStream(of: ScheduledDelivery.self)
        let sessionConfiguration = URLSessionConfiguration.ephemeral
        sessionConfiguration.timeoutIntervalForRequest = configuration.deliveryTimeout.inSeconds.rounded(.down) + 1
        deliverySession = URLSession(configuration: sessionConfiguration)

        var serverConfiguration = HTTPServerConfiguration()
        serverConfiguration.host = configuration.host
        serverConfiguration.port = configuration.port
        serverConfiguration.eventLoopCount = max(1, configuration.eventLoopCount)
        serverConfiguration.shutdownGracePeriod = .seconds(1)
        // The responder needs `self`, which does not exist yet; the box is filled right below.
        let responderBox = ResponderBox()
        server = HTTPServer(configuration: serverConfiguration, logger: logger) { request in
            await responderBox.simulator?.respond(to: request) ?? HTTPResponse(status: .serviceUnavailable)
        }
        responderBox.set(self)
    }

    /// Serves the API and delivers callbacks until cancelled; then stops both (pending callbacks are abandoned).
    ///
    /// - Throws: The listener's bind error; ``CISimulatorError`` when called twice.
    public func run() async throws {
        let claimed = state.withLock { state in
            defer { state.deliveryStreamClaimed = true }
            return !state.deliveryStreamClaimed
        }
        guard claimed else { throw CISimulatorError(reason: "run() was already called") }
        defer {
            deliveryContinuation.finish()
            deliverySession.invalidateAndCancel()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.server.run() }
            group.addTask { await self.runDeliveries(self.deliveries) }
            // Whichever ends first (the server on graceful shutdown or error) ends the other.
            try await group.next()
            group.cancelAll()
        }
    }

    /// The bound port once listening.
    /// - Throws: The bind error, or `CancellationError`.
    public func waitUntilListening() async throws -> Int {
        try await server.waitUntilListening()
    }

    /// A snapshot of the counters.
    public var statistics: SimulatorStatistics {
        state.withLock { $0.statistics }
    }

    /// The job with `id`, or `nil`.
    public func job(_ id: String) -> SimulatedJob? {
        state.withLock { $0.jobs[id] }
    }

    /// Every job, in creation order.
    public var jobs: [SimulatedJob] {
        state.withLock { state in state.jobsInOrder.compactMap { state.jobs[$0] } }
    }

    /// Answers the next `count` API requests with `status` (and `Retry-After: retryAfter` seconds when
    /// given) before working normally again. Replaces a previous injection that is still pending.
    /// - Parameters:
    ///   - count: Requests to fail.
    ///   - status: The status to answer, typically 503 or 429.
    ///   - retryAfter: Seconds for `Retry-After`, or `nil` to send none.
    public func failNextRequests(count: Int, status: Int = 503, retryAfter: Int? = nil) {
        state.withLock { $0.fault = count > 0 ? Fault(remaining: count, status: status, retryAfter: retryAfter) : nil }
    }

    func updateStatistics(_ change: (inout SimulatorStatistics) -> Void) {
        state.withLock { change(&$0.statistics) }
    }

    // MARK: - API

    func respond(to request: HTTPRequest) async -> HTTPResponse {
        let context = RequestContext.make(for: request, defaultHost: "\(configuration.bucket).ci.\(configuration.region).myqcloud.com")
        let fault: Fault? = state.withLock { state in
            state.statistics.requests += 1
            guard var fault = state.fault else { return nil }
            fault.remaining -= 1
            state.fault = fault.remaining > 0 ? fault : nil
            state.statistics.injectedFaults += 1
            return fault
        }
        let response: HTTPResponse
        if let fault {
            var headers: HTTPHeaders = [:]
            if let retryAfter = fault.retryAfter { headers.add(name: "Retry-After", value: String(retryAfter)) }
            response = Self.error(.injected(status: fault.status), message: "injected fault", context: context, headers: headers)
        } else {
            response = route(request, context: context)
        }
        logger.debug(
            "ci simulator request",
            metadata: [
                "http.method": "\(request.method)", "http.path": "\(request.path)", "http.status": "\(response.status.code)",
                "ci.request_id": "\(context.requestID)",
            ])
        return response
    }

    private func route(_ request: HTTPRequest, context: RequestContext) -> HTTPResponse {
        guard let path = SimulatorPath.decode(request.path) else {
            return Self.error(.invalidArgument, message: "the path has an invalid percent escape", context: context)
        }
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        guard segments.first == "jobs", segments.count <= 2 else {
            return Self.error(.noSuchResource, message: "no such resource", context: context)
        }
        if let denied = authenticate(request, decodedPath: path, context: context) { return denied }
        switch (request.method, segments.count) {
        case (.post, 1): return submit(request, context: context)
        case (.get, 1): return list(request, context: context)
        case (.get, 2): return describe(ids: String(segments[1]), context: context)
        default:
            return Self.error(.methodNotAllowed, message: "method not allowed here", context: context)
        }
    }

    /// Checks the `Authorization` header as CI does; `nil` when the request may proceed.
    private func authenticate(_ request: HTTPRequest, decodedPath: String, context: RequestContext) -> HTTPResponse? {
        func deny(_ code: CIErrorCode, _ message: String, _ reason: String) -> HTTPResponse {
            state.withLock { $0.statistics.authenticationFailures += 1 }
            logger.info("ci simulator denied request", metadata: ["sim.reason": "\(reason)", "ci.request_id": "\(context.requestID)"])
            return Self.error(code, message: message, context: context)
        }
        guard let header = request.headers["Authorization"] else {
            return deny(.accessDenied, "Access Denied.", "missing")
        }
        let authorization: COSAuthorization
        do {
            authorization = try COSAuthorization(parsing: header)
        } catch {
            return deny(.accessDenied, "The Authorization header is malformed.", "\(error)")
        }
        guard authorization.secretID == configuration.secretID else {
            return deny(.invalidAccessKeyID, "The Access Key Id you provided does not exist in our records.", "unknown secret id")
        }
        func verify(_ headers: [(name: String, value: String)]) -> Result<Void, COSAuthorizationError> {
            COSSignatureVerifier.verify(
                authorization, method: request.method.rawValue, path: decodedPath, query: request.queryItems, headers: headers,
                secretKey: configuration.secretKey, now: Date())
        }
        let headers = Array(request.headers)
        var verdict = verify(headers)
        // Tencent's Python SDK signs `host` as the URL's host name without the port it sends in `Host`. CI
        // listens on the default port, where the two agree; a simulator on another port accepts both forms.
        if case .failure(let error) = verdict, error == .signatureMismatch,
            let portless = request.headers["Host"].flatMap(SimulatorHost.withoutPort)
        {
            verdict = verify(headers.map { $0.name.lowercased() == "host" ? (name: $0.name, value: portless) : $0 })
        }
        switch verdict {
        case .success: return nil
        case .failure(let error) where error == .expired: return deny(.accessDenied, "Request has expired", "\(error)")
        case .failure(let error) where error == .malformed || error == .unsupportedAlgorithm:
            return deny(.accessDenied, "The Authorization header is malformed.", "\(error)")
        case .failure(let error): return deny(.signatureDoesNotMatch, "The Signature you specified is invalid.", "\(error)")
        }
    }

    // MARK: POST /jobs

    private func submit(_ request: HTTPRequest, context: RequestContext) -> HTTPResponse {
        let parsed: SubmitRequest
        switch SubmitRequest.parse(request.body, configuration: configuration) {
        case .success(let value): parsed = value
        case .failure(let problem):
            return Self.error(.invalidArgument, message: problem.message, context: context)
        }
        let now = Date()
        let startTime = now.addingTimeInterval(configuration.runningAfter.inSeconds)
        let endTime = startTime.addingTimeInterval(configuration.jobDuration.inSeconds)
        let due = ContinuousClock.now + configuration.runningAfter + configuration.jobDuration + configuration.callbackDelay
        let fails = parsed.object.contains("missing")

        let (job, delivery): (SimulatedJob, ScheduledDelivery?) = state.withLock { state in
            let jobID = "j" + state.random.hex(bytes: 16)
            let drop = state.random.chance(configuration.dropProbability)
            let duplicate = state.random.chance(configuration.duplicateProbability)
            let late = state.random.chance(configuration.outOfOrderProbability)
            state.statistics.jobsSubmitted += 1
            let job = SimulatedJob(
                jobID: jobID,
                sequence: state.jobsInOrder.count + 1,
                tag: "ExtractDigitalWatermark",
                object: parsed.object,
                userData: parsed.userData,
                jobLevel: parsed.jobLevel,
                queueID: parsed.queueID,
                callbackURL: parsed.callbackURL,
                callbackFormat: parsed.callbackFormat,
                creationTime: now,
                startTime: startTime,
                endTime: endTime,
                finalState: fails ? .failed : .success,
                finalCode: fails ? "ResourceNotFound" : "Success",
                finalMessage: fails ? "input object \(parsed.object) not found" : "done",
                watermarkMessage: fails ? nil : configuration.watermarkText(parsed.object),
                dropsFinalCallback: drop,
                duplicatesCallbacks: duplicate,
                sendsLateRunningCallback: late,
                bucketID: configuration.bucket,
                region: configuration.region
            )
            state.jobs[jobID] = job
            state.jobsInOrder.append(jobID)
            guard let url = parsed.callbackURL else { return (job, nil) }
            // The body shapes alternate per rendered callback, so both JSON shapes occur in any run.
            func render(_ jobState: JobState) -> [UInt8] {
                defer { state.callbacksRendered += 1 }
                return SimulatorDocuments.callback(
                    jobsDetail: job.jobsDetail(in: jobState, utcOffsetSeconds: configuration.utcOffsetSeconds),
                    format: parsed.callbackFormat,
                    jobsDetailAsArray: state.callbacksRendered % 2 == 1
                )
            }
            let finalBody = drop ? nil : render(job.finalState)
            let lateBody = late ? render(.running) : nil
            if drop { state.statistics.dropped += 1 }
            if duplicate && !drop { state.statistics.duplicates += 1 }
            if late { state.statistics.outOfOrder += 1 }
            let delivery = ScheduledDelivery(
                jobID: jobID, url: url, format: parsed.callbackFormat, due: due, finalBody: finalBody, duplicate: duplicate,
                lateRunningBody: lateBody
            )
            return (job, delivery)
        }
        if let delivery { deliveryContinuation.yield(delivery) }
        logger.info(
            "ci simulator job submitted",
            metadata: [
                "job.id": "\(job.jobID)", "job.final_state": "\(job.finalState)", "sim.drop": "\(job.dropsFinalCallback)",
                "sim.duplicate": "\(job.duplicatesCallbacks)", "sim.out_of_order": "\(job.sendsLateRunningCallback)",
            ])
        let body = SimulatorDocuments.response(jobs: [job.jobsDetail(in: .submitted, utcOffsetSeconds: configuration.utcOffsetSeconds)])
        return Self.xml(status: .ok, body: body, requestID: context.requestID)
    }

    // MARK: GET /jobs/<ids>

    private func describe(ids text: String, context: RequestContext) -> HTTPResponse {
        let ids = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard !ids.contains(where: \.isEmpty) else {
            return Self.error(.invalidArgument, message: "a job id is empty", context: context)
        }
        guard ids.count <= configuration.maxJobIDsPerDescribe else {
            return Self.error(.invalidArgument, message: "at most \(configuration.maxJobIDsPerDescribe) job ids", context: context)
        }
        let now = Date()
        let found = state.withLock { state in ids.map { state.jobs[$0] } }
        var details: [CINode] = []
        var missing: [CIField] = []
        for (id, job) in zip(ids, found) {
            if let job {
                details.append(job.jobsDetail(in: job.state(at: now), utcOffsetSeconds: configuration.utcOffsetSeconds))
            } else {
                missing.append(CIField(name: "NonExistJobIds", value: .text(id)))
            }
        }
        return Self.xml(status: .ok, body: SimulatorDocuments.response(jobs: details, trailing: missing), requestID: context.requestID)
    }

    // MARK: GET /jobs?…

    private func list(_ request: HTTPRequest, context: RequestContext) -> HTTPResponse {
        let query: ListQuery
        switch ListQuery.parse(request.queryItems, configuration: configuration) {
        case .success(let value): query = value
        case .failure(let problem):
            return Self.error(.invalidArgument, message: problem.message, context: context)
        }
        let now = Date()
        let all = jobs
        var matching = all.filter { job in
            guard job.tag == query.tag else { return false }
            if let queueID = query.queueID, job.queueID != queueID { return false }
            if let states = query.states, !states.contains(job.state(at: now)) { return false }
            let second = job.creationTime.timeIntervalSince1970.rounded(.down)
            if let start = query.start, second < start.timeIntervalSince1970 { return false }
            if let end = query.end, second > end.timeIntervalSince1970 { return false }
            return true
        }
        if query.descending { matching.reverse() }
        if let after = query.afterSequence {
            matching = matching.filter { query.descending ? $0.sequence < after : $0.sequence > after }
        }
        let page = matching.prefix(query.size)
        let more = matching.count > page.count
        let token = more ? page.last.map { ListQuery.token(for: $0.sequence) } ?? "" : ""
        let details = page.map { $0.jobsDetail(in: $0.state(at: now), utcOffsetSeconds: configuration.utcOffsetSeconds) }
        let body = SimulatorDocuments.response(jobs: Array(details), trailing: [CIField(name: "NextToken", value: .text(token))])
        return Self.xml(status: .ok, body: body, requestID: context.requestID)
    }

    // MARK: Helpers

    static func xml(status: HTTPStatus, body: [UInt8], requestID: String, headers extra: HTTPHeaders = [:]) -> HTTPResponse {
        var headers: HTTPHeaders = ["Content-Type": "application/xml", "x-ci-request-id": requestID]
        for header in extra { headers.add(name: header.name, value: header.value) }
        return HTTPResponse(status: status, headers: headers, body: body)
    }

    static func error(_ code: CIErrorCode, message: String, context: RequestContext, headers: HTTPHeaders = [:]) -> HTTPResponse {
        xml(
            status: code.status, body: SimulatorDocuments.error(code: code, message: message, context: context), requestID: context.requestID,
            headers: headers)
    }
}

/// Lets the listener's responder reach the simulator that owns the listener, without a retain cycle
/// (simulator → server → responder → simulator). Set once in `CISimulator.init`, before the server can run.
private final class ResponderBox: Sendable {
    private struct WeakReference: Sendable {
        weak var simulator: CISimulator?
    }

    private let reference = Mutex(WeakReference())
    var simulator: CISimulator? { reference.withLock { $0.simulator } }
    func set(_ simulator: CISimulator) { reference.withLock { $0.simulator = simulator } }
}

/// A misuse of ``CISimulator``.
public struct CISimulatorError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong.
    public var reason: String

    public var description: String { "CISimulatorError: \(reason)" }
}
