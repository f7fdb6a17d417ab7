import CIModel
import Foundation
import HTTPListener
import HTTPWire
import JobStore
import Logging
import Synchronization
import TimeUnits

/// The HTTP face of ci-callbackd: routes each request, logs one line for it, and turns every error
/// into a JSON error body. Its `respond(to:)` is what the listener calls.
public struct CallbackApplication: Sendable {
    public struct Configuration: Sendable {
        /// Seconds a client is told to wait (`Retry-After`) when the database is unavailable.
        public var retryAfterSeconds = 5
        /// The schema version `/readyz` requires: the newest migration shipped with this build.
        public var requiredSchemaVersion: Int
        /// Tokens and address rules; the default lets everyone in.
        public var accessPolicy = AccessPolicy()
        /// The longest `?wait=` a lookup may ask for.
        public var maxWait: Duration = .seconds(60)
        /// Most webhook subscriptions kept (`MAX_SUBSCRIPTIONS`): bounds the per-subscription metric series and
        /// each event's fan-out. Default 100.
        public var maxSubscriptions = 100
        /// Delivery settings; the application reads the failing threshold a subscription's GET reports.
        public var webhookDelivery = WebhookDeliveryConfiguration()
        /// How long a console login lasts (`CONSOLE_SESSION_LIFETIME`).
        public var consoleSessionLifetime: Duration = .seconds(12 * 3600)
        /// Failed console logins a client address may make per minute (`CONSOLE_LOGIN_ATTEMPTS`); more get 429.
        public var consoleLoginAttempts = 10
        /// Client addresses whose failed logins are remembered at once: bounds the limiter's memory.
        public var consoleLoginTrackedAddresses = 10_000
        /// What the console's overview says about the background workers (they run beside the application).
        public var workerStatus = WorkerStatus()

        public init(requiredSchemaVersion: Int, accessPolicy: AccessPolicy = AccessPolicy()) {
            self.requiredSchemaVersion = requiredSchemaVersion
            self.accessPolicy = accessPolicy
        }
    }

    public let store: JobStore
    public let configuration: Configuration
    public let logger: Logger
    public let metrics: ServiceMetrics
    /// The listener's live counters, for `/metrics`; nil when the application runs without one.
    public let listenerStatistics: ListenerStatistics?
    /// Wakes `?wait=` lookups; without it, `wait` answers at once with the current state.
    public let completionListener: JobCompletionListener?
    /// Submits jobs to CI; without it, `POST /v1/watermark-extractions` answers 503 `CINotConfigured`.
    public let submitter: WatermarkSubmitter?
    /// Counts and logs the listener's refusals.
    private let refusals: ListenerRefusalRecorder
    /// Failed console logins per client address, shared by every request of the process.
    let consoleLogins: ConsoleLoginLimiter

    public init(
        store: JobStore, configuration: Configuration, logger: Logger, metrics: ServiceMetrics = ServiceMetrics(),
        listenerStatistics: ListenerStatistics? = nil, completionListener: JobCompletionListener? = nil,
        submitter: WatermarkSubmitter? = nil
    ) {
        self.completionListener = completionListener
        self.submitter = submitter
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.listenerStatistics = listenerStatistics
        refusals = ListenerRefusalRecorder(metrics: metrics, logger: logger)
        consoleLogins = ConsoleLoginLimiter(
            limits: .init(attempts: configuration.consoleLoginAttempts, window: .seconds(60), addresses: configuration.consoleLoginTrackedAddresses))
    }

    /// What the listener needs from the application: callbacks are admitted or refused on their head
    /// alone, before their body is read; the listener's own refusals get this service's JSON error body
    /// and request id, and are counted and logged here.
    public var listenerHooks: HTTPServerHooks {
        HTTPServerHooks(
            admission: { head in admit(head) },
            errorResponse: { refusal in errorResponse(for: refusal) },
            refusalObserver: { [refusals] refusal, response in refusals.record(refusal, response: response) }
        )
    }

    /// Checks a callback's token and address once its head is complete: a sender without a valid token
    /// (or from outside `CALLBACK_ALLOW_CIDRS`) is refused before its body is read, so a body it declares
    /// costs no memory. Everything else proceeds to ``respond(to:)``, which authorizes again.
    func admit(_ head: HTTPRequestHead) -> HTTPAdmission {
        let policy = configuration.accessPolicy
        // The common case costs no route matching: nothing to check.
        guard !policy.callbackTokens.isEmpty || !policy.callbackAllowList.isEmpty else { return .proceed }
        guard case .route(let route) = Route.match(method: head.method, segments: head.pathSegments), route.access == .callbackToken
        else { return .proceed }
        do {
            try authorize(route, request: head)
            return .proceed
        } catch {
            return .refuse(errorResponse(for: error, requestID: RequestID.from(head.headers["X-Request-Id"]), logger: logger))
        }
    }

    /// Handles one request. Never throws: every failure becomes a response.
    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        let started = ContinuousClock.now
        let requestID = RequestID.from(request.headers["X-Request-Id"])
        // The request's own logger (its lines carry the request id) is made only on the paths that log
        // through it: on a lookup, the access line below is the only line, and making the logger cost
        // a metadata dictionary per request.
        let requestLogger = { [logger] in
            var logger = logger
            logger[metadataKey: "request.id"] = "\(requestID)"
            return logger
        }

        let match = Route.match(method: request.method, segments: request.pathSegments)
        var response: HTTPResponse
        do {
            switch match {
            case .route(let route):
                try authorize(route, request: request)
                response = try await handle(route, request: request, logger: requestLogger)
            case .methodNotAllowed(let allowed):
                throw APIError.methodNotAllowed(request.method, allowed: allowed)
            case .notFound:
                throw APIError.notFound(path: request.path)
            }
        } catch {
            response = errorResponse(for: error, requestID: requestID, logger: requestLogger())
        }
        response.headers.replaceOrAdd(name: "X-Request-Id", value: requestID)

        let routeName: String = if case .route(let route) = match { route.name } else { "unmatched" }
        let elapsed = started.duration(to: .now)
        metrics.recordRequest(route: routeName, method: request.method.rawValue, status: response.status.code, duration: elapsed)
        logger.info(
            "request",
            metadata: [
                "request.id": "\(requestID)",
                "http.method": "\(request.method.rawValue)",
                "http.path": "\(Route.loggablePath(request.path))",
                "http.route": "\(routeName)",
                "http.status": "\(response.status.code)",
                "http.duration_ms": "\(Self.milliseconds(elapsed))",
                "net.peer": "\(request.remoteAddress)",
            ]
        )
        return response
    }

    private func handle(_ route: Route, request: HTTPRequest, logger: () -> Logger) async throws -> HTTPResponse {
        switch route {
        case .ingestCallback:
            return try await ingestCallback(request, logger: logger())
        case .metrics:
            refusals.writeSummaries()
            let body = metrics.render(store: store.statistics, listener: listenerStatistics)
            return HTTPResponse(status: .ok, headers: ["Content-Type": "text/plain; version=0.0.4; charset=utf-8"], body: body)
        case .openAPI:
            return HTTPResponse(status: .ok, headers: ["Content-Type": "application/yaml; charset=utf-8"], body: Array(OpenAPIDocument.yaml.utf8))
        case .listJobs:
            return try await listJobs(request)
        case .job(let jobID):
            return try await job(jobID, request: request)
        case .watermark(let jobID):
            return try await watermark(jobID, request: request)
        case .jobCallbacks(let jobID):
            return try await jobCallbacks(jobID, request: request)
        case .callbackBody(let jobID, let callbackID):
            return try await callbackBody(jobID: jobID, callbackID: callbackID)
        case .submitWatermarkExtraction:
            return try await submitWatermarkExtraction(request, logger: logger())
        case .events:
            return try await eventFeed(request)
        case .subscriptions:
            return try await subscriptions(request)
        case .subscription(let id):
            return try await subscription(id, request: request)
        case .subscriptionDeliveries(let id):
            return try await subscriptionDeliveries(id, request: request)
        case .retryDelivery(let id, let deliveryID):
            return try await retryDelivery(id, deliveryID: deliveryID)
        case .replay(let id):
            return try await replay(id, request: request)
        case .health:
            return .json { json in json.member("Status", "ok") }
        case .readiness:
            return try await readiness()
        case .console(let path):
            return await console(path, request: request, logger: logger())
        }
    }

    // MARK: Access

    /// Refuses a request the access policy does not allow: 401 for a missing or wrong token (the same
    /// answer for both), 403 for a callback from an address outside the allow-list.
    private func authorize(_ route: Route, request: some HTTPRequestHeadFields) throws {
        let policy = configuration.accessPolicy
        switch route.access {
        case .open, .consoleSession:
            // The console checks its session itself: it answers with a login page, not a JSON 401.
            return
        case .callbackToken:
            let client = policy.clientAddress(peer: request.remoteAddress, forwardedFor: request.headers.values(for: "X-Forwarded-For"))
            guard policy.allowsCallback(from: client) else {
                throw APIError(status: .forbidden, code: "Forbidden", message: "callbacks are not accepted from this address")
            }
            var token: String? = nil
            if case .ingestCallback(let pathToken) = route { token = pathToken }
            if token == nil { token = request.queryItems.first { $0.name == "token" }?.value }
            guard policy.acceptsCallbackToken(token) else {
                throw APIError(status: .unauthorized, code: "Unauthorized", message: "a valid callback token is required in the path or the token parameter")
            }
        case .apiToken:
            guard policy.acceptsAPIAuthorization(request.headers["Authorization"]) else {
                throw APIError(
                    status: .unauthorized,
                    code: "Unauthorized",
                    message: "a valid bearer token is required",
                    headers: ["WWW-Authenticate": #"Bearer realm="ci-callbackd""#]
                )
            }
        }
    }

    // MARK: Errors

    /// The listener's refusal in this service's error shape, with a request id of its own.
    func errorResponse(for refusal: HTTPRefusal) -> HTTPResponse {
        let error = APIError(status: refusal.status ?? .serviceUnavailable, code: Self.errorCode(for: refusal.reason), message: refusal.message)
        return errorResponse(for: error, requestID: RequestID.generate(), logger: logger)
    }

    /// The `Code` of a listener refusal's error body.
    static func errorCode(for reason: HTTPRefusal.Reason) -> String {
        switch reason {
        case .malformed: "BadRequest"
        case .uriTooLong: "URITooLong"
        case .headersTooLarge: "HeaderFieldsTooLarge"
        case .bodyTooLarge: "PayloadTooLarge"
        case .expectationFailed: "ExpectationFailed"
        case .unsupportedTransferCoding: "NotImplemented"
        case .versionNotSupported: "HTTPVersionNotSupported"
        case .requestTimeout: "RequestTimeout"
        case .atCapacity, .atCapacityUnanswered, .peerLimit, .evicted: "TooManyConnections"
        case .shuttingDown: "ShuttingDown"
        case .admission: "Unauthorized"
        case .bodyBudget: "TooManyBodiesInFlight"
        }
    }

    private func errorResponse(for error: any Error, requestID: String, logger: Logger) -> HTTPResponse {
        let apiError: APIError
        switch error {
        case let error as APIError:
            apiError = error
        case let error as StoredRowError:
            // The database's schema is not the one this build migrates to: every read of that column fails
            // the same way until an operator repairs it, and the line names the column to look at.
            logger.error("stored row does not decode", metadata: ["error": "\(error)", "read": "\(error.read)", "column": "\(error.column)"])
            apiError = .internalError
        case let error as TooManyListings:
            logger.warning("listing refused", metadata: ["error": "\(error)"])
            apiError = APIError(
                status: .serviceUnavailable, code: "TooManyListings",
                message: "too many listings are in progress; retry shortly", headers: ["Retry-After": "1"])
        case let error as StoreUnavailableError:
            logger.warning("database unavailable", metadata: ["error": "\(error)"])
            apiError = .databaseUnavailable(error.reason, retryAfterSeconds: configuration.retryAfterSeconds)
        default:
            logger.error("request failed", metadata: ["error": "\(error)"])
            apiError = .internalError
        }
        var response = HTTPResponse.json(status: apiError.status) { json in
            json.key("Error")
            json.beginObject()
            json.member("Code", apiError.code)
            json.member("Message", apiError.message)
            json.member("RequestId", requestID)
            json.endObject()
        }
        for (name, value) in apiError.headers {
            response.headers.replaceOrAdd(name: name, value: value)
        }
        response.headers.replaceOrAdd(name: "X-Request-Id", value: requestID)
        return response
    }

    /// `1.234` for 1234 µs. Integer arithmetic: Foundation's `String(format:)` was a visible share of the
    /// per-request CPU.
    static func milliseconds(_ duration: Duration) -> String {
        let micros = max(0, duration.inMicroseconds)
        let fraction = String(micros % 1000)
        return String(micros / 1000) + "." + String(repeating: "0", count: 3 - fraction.utf8.count) + fraction
    }
}

/// Correlates a request across our logs and the caller's: the caller's `X-Request-Id` when it is
/// reasonable, else a fresh random one.
enum RequestID {
    static func from(_ header: String?) -> String {
        if let header, (1...128).contains(header.utf8.count),
            header.utf8.allSatisfy({ byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
            })
        {
            return header
        }
        return generate()
    }

    /// 16 hex digits: a process-wide random seed plus a counter, mixed by SplitMix64's finaliser (a
    /// bijection, so no two ids of one process collide) to look random. Not a secret, so not worth a
    /// `getrandom(2)` per request, which the system generator costs.
    static func generate() -> String {
        var value = seed &+ counter.wrappingAdd(1, ordering: .relaxed).newValue &* 0x9E37_79B9_7F4A_7C15
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        value ^= value >> 31
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    private static let seed: UInt64 = {
        var generator = SystemRandomNumberGenerator()
        return generator.next()
    }()
    private static let counter = Atomic<UInt64>(0)
}

extension HTTPResponse {
    /// A JSON response whose body `build` writes into an object.
    static func json(status: HTTPStatus = .ok, _ build: (inout JSONWriter) -> Void) -> HTTPResponse {
        var json = JSONWriter()
        json.beginObject()
        build(&json)
        json.endObject()
        return HTTPResponse(status: status, headers: ["Content-Type": "application/json"], body: json.bytes)
    }
}
