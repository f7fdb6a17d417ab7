import HTTPWire

/// The service's endpoints, matched from a request's method and decoded path segments.
///
/// Pure, so the whole table is unit-tested without sockets.
public enum Route: Sendable, Hashable {
    /// `token` is the path segment of `/v1/callbacks/{token}`; a `?token=` query is read by the handler.
    case ingestCallback(token: String?)
    case listJobs
    case job(jobID: String)
    case watermark(jobID: String)
    case jobCallbacks(jobID: String)
    case callbackBody(jobID: String, callbackID: Int64)
    /// `POST /v1/watermark-extractions`: submit an ExtractDigitalWatermark job to CI.
    case submitWatermarkExtraction
    /// `GET /v1/events`: the feed of applied state changes.
    case events
    /// `POST` (create) and `GET` (list) `/v1/subscriptions`.
    case subscriptions
    /// `GET` and `DELETE /v1/subscriptions/{id}`.
    case subscription(id: String)
    case subscriptionDeliveries(id: String)
    case retryDelivery(id: String, deliveryID: String)
    case replay(id: String)
    case health
    case readiness
    case metrics
    case openAPI
    /// `/console/…`: the operator console; `path` is what follows `/console`.
    case console(path: [String])

    /// What a request resolves to.
    public enum Match: Sendable, Hashable {
        case route(Route)
        /// The path exists, but not for this method.
        case methodNotAllowed(allowed: [HTTPMethod])
        case notFound
    }

    private static let readMethods: [HTTPMethod] = [.get, .head]

    public static func match(method: HTTPMethod, segments: [String]) -> Match {
        guard let (route, allowed) = resolve(segments) else { return .notFound }
        return allowed.contains(method) ? .route(route) : .methodNotAllowed(allowed: allowed)
    }

    private static func resolve(_ segments: [String]) -> (Route, [HTTPMethod])? {
        switch segments.count {
        case 1 where segments[0] == "healthz": return (.health, readMethods)
        case 1 where segments[0] == "readyz": return (.readiness, readMethods)
        case 1 where segments[0] == "metrics": return (.metrics, readMethods)
        case 1 where segments[0] == "openapi.yaml": return (.openAPI, readMethods)
        case 0: return nil
        default: break
        }
        // The console routes its own pages (and answers their method errors as pages, not JSON).
        if segments[0] == "console" { return (.console(path: Array(segments.dropFirst())), [.get, .head, .post]) }
        guard segments.count > 1 else { return nil }
        guard segments[0] == "v1" else { return nil }
        let rest = segments.dropFirst(2)
        switch segments[1] {
        case "callbacks" where rest.count <= 1:
            return (.ingestCallback(token: rest.first), [.post])
        case "watermark-extractions" where rest.isEmpty:
            return (.submitWatermarkExtraction, [.post])
        case "events" where rest.isEmpty:
            return (.events, readMethods)
        case "subscriptions":
            let tail = Array(rest)
            switch tail.count {
            case 0: return (.subscriptions, readMethods + [.post])
            case 1: return (.subscription(id: tail[0]), readMethods + [.delete])
            case 2 where tail[1] == "deliveries": return (.subscriptionDeliveries(id: tail[0]), readMethods)
            case 2 where tail[1] == "replay": return (.replay(id: tail[0]), [.post])
            case 4 where tail[1] == "deliveries" && tail[3] == "retry": return (.retryDelivery(id: tail[0], deliveryID: tail[2]), [.post])
            default: return nil
            }
        case "jobs":
            guard let jobID = rest.first else { return (.listJobs, readMethods) }
            let tail = Array(rest.dropFirst())
            switch tail.count {
            case 0: return (.job(jobID: jobID), readMethods)
            case 1 where tail[0] == "watermark": return (.watermark(jobID: jobID), readMethods)
            case 1 where tail[0] == "callbacks": return (.jobCallbacks(jobID: jobID), readMethods)
            case 3 where tail[0] == "callbacks" && tail[2] == "body":
                guard let callbackID = Int64(tail[1]), callbackID > 0 else { return nil }
                return (.callbackBody(jobID: jobID, callbackID: callbackID), readMethods)
            default: return nil
            }
        default:
            return nil
        }
    }

    /// Who may call the route.
    public enum Access: Sendable, Hashable {
        /// Liveness, readiness, metrics and the API description: probes and scrapers carry no credentials.
        case open
        /// A callback token, when tokens are configured.
        case callbackToken
        /// A bearer API token, when tokens are configured.
        case apiToken
        /// The console's own session (a login with an API token), when API tokens are configured.
        case consoleSession
    }

    public var access: Access {
        switch self {
        case .health, .readiness, .metrics, .openAPI: .open
        case .ingestCallback: .callbackToken
        case .listJobs, .job, .watermark, .jobCallbacks, .callbackBody, .submitWatermarkExtraction, .events, .subscriptions, .subscription,
            .subscriptionDeliveries, .retryDelivery, .replay:
            .apiToken
        case .console: .consoleSession
        }
    }

    /// The path as it may be logged: whatever follows `/v1/callbacks/` may be a token, matched or not.
    public static func loggablePath(_ path: String) -> String {
        path.hasPrefix("/v1/callbacks/") ? "/v1/callbacks/<redacted>" : path
    }

    /// A low-cardinality name for logs and metrics: never contains a JobId.
    public var name: String {
        switch self {
        case .ingestCallback: "ingest_callback"
        case .metrics: "metrics"
        case .openAPI: "openapi"
        case .listJobs: "list_jobs"
        case .job: "get_job"
        case .watermark: "get_watermark"
        case .jobCallbacks: "list_job_callbacks"
        case .callbackBody: "get_callback_body"
        case .submitWatermarkExtraction: "submit_watermark_extraction"
        case .events: "list_events"
        case .subscriptions: "subscriptions"
        case .subscription: "subscription"
        case .subscriptionDeliveries: "list_deliveries"
        case .retryDelivery: "retry_delivery"
        case .replay: "replay_subscription"
        case .health: "healthz"
        case .readiness: "readyz"
        case .console: "console"
        }
    }
}
