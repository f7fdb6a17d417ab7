import HTTPWire

/// The service's endpoints, matched from a request's method and decoded path segments.
///
/// Pure, so the whole table is unit-tested without sockets.
public enum Route: Sendable, Hashable {
    case ingestCallback
    case listJobs
    case job(jobID: String)
    case watermark(jobID: String)
    case jobCallbacks(jobID: String)
    case callbackBody(jobID: String, callbackID: Int64)
    case health
    case readiness

    /// What a request resolves to.
    public enum Match: Sendable, Hashable {
        case route(Route)
        /// The path exists, but not for this method.
        case methodNotAllowed(allowed: [HTTPMethod])
        case notFound
    }

    private static let readMethods: [HTTPMethod] = [.get, .head]

    public static func match(method: HTTPMethod, segments: [String]) -> Match {
        let (route, allowed): (Route?, [HTTPMethod]) =
            switch segments {
            case ["v1", "callbacks"]: (.ingestCallback, [.post])
            case ["v1", "jobs"]: (.listJobs, readMethods)
            case let ["v1", "jobs", id]: (.job(jobID: id), readMethods)
            case let ["v1", "jobs", id, "watermark"]: (.watermark(jobID: id), readMethods)
            case let ["v1", "jobs", id, "callbacks"]: (.jobCallbacks(jobID: id), readMethods)
            case let ["v1", "jobs", id, "callbacks", callback, "body"]:
                if let callbackID = Int64(callback), callbackID > 0 {
                    (.callbackBody(jobID: id, callbackID: callbackID), readMethods)
                } else {
                    (nil, [])
                }
            case ["healthz"]: (.health, readMethods)
            case ["readyz"]: (.readiness, readMethods)
            default: (nil, [])
            }
        guard let route else { return .notFound }
        return allowed.contains(method) ? .route(route) : .methodNotAllowed(allowed: allowed)
    }

    /// A low-cardinality name for logs and metrics: never contains a JobId.
    public var name: String {
        switch self {
        case .ingestCallback: "ingest_callback"
        case .listJobs: "list_jobs"
        case .job: "get_job"
        case .watermark: "get_watermark"
        case .jobCallbacks: "list_job_callbacks"
        case .callbackBody: "get_callback_body"
        case .health: "healthz"
        case .readiness: "readyz"
        }
    }
}
