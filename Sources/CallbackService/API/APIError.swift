import HTTPWire
import JobStore

/// An error the API answers with a specific status and a JSON body
/// `{"Error":{"Code":…,"Message":…,"RequestId":…}}`, the shape CI itself uses for errors.
///
/// `message` is shown to the caller, so it names what is wrong and never carries secrets.
public struct APIError: Error, Sendable, Hashable, CustomStringConvertible {
    public var status: HTTPStatus
    /// A stable, machine-readable code such as `InvalidCallback` or `NoSuchJob`.
    public var code: String
    public var message: String
    /// Extra response headers (`Allow`, `Retry-After`, `WWW-Authenticate`).
    public var headers: HTTPHeaders

    public init(status: HTTPStatus, code: String, message: String, headers: HTTPHeaders = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    public var description: String { "APIError(\(status.code) \(code)): \(message)" }

    /// The body is not a callback we can accept: malformed, or a JobsDetail lacks JobId or State.
    public static func invalidCallback(_ reason: String) -> APIError {
        APIError(status: .badRequest, code: "InvalidCallback", message: reason)
    }

    public static func noSuchJob(_ jobID: String) -> APIError {
        APIError(status: .notFound, code: "NoSuchJob", message: "no job with JobId \(jobID) has been received")
    }

    /// 404 for `/watermark` on a job of another kind: it will never have watermark text, so it is
    /// answered at once, even when the request asked to wait.
    static func notWatermarkJob(_ job: StoredJob) -> APIError {
        let kind = job.tag.map { "its Tag is \($0)" } ?? "none of its callbacks named a Tag"
        return APIError(
            status: .notFound, code: "NotWatermarkJob",
            message: "job \(job.jobID) is not an ExtractDigitalWatermark job (\(kind)), so it has no watermark text")
    }

    public static func invalidParameter(_ name: String, _ problem: String) -> APIError {
        APIError(status: .badRequest, code: "InvalidParameter", message: "parameter '\(name)': \(problem)")
    }

    /// `GET /v1/events` with a cursor below retention's horizon: the events after it were deleted.
    static func cursorExpired(_ expired: EventFeedCursorExpired) -> APIError {
        APIError(
            status: .gone, code: "CursorExpired",
            message: "events after this cursor were deleted by retention (CALLBACK_RETENTION); events up to position \(expired.horizon.position) are gone."
                + " Ask again without after to start at the oldest retained event, and recover what was missed from GET /v1/jobs")
    }

    public static func notFound(path: String) -> APIError {
        APIError(status: .notFound, code: "NoSuchRoute", message: "no route for \(path)")
    }

    public static func methodNotAllowed(_ method: HTTPMethod, allowed: [HTTPMethod]) -> APIError {
        APIError(
            status: .methodNotAllowed,
            code: "MethodNotAllowed",
            message: "\(method.rawValue) is not allowed here; use \(allowed.map(\.rawValue).joined(separator: ", "))",
            headers: ["Allow": allowed.map(\.rawValue).joined(separator: ", ")]
        )
    }

    /// The database cannot be reached, or did not answer in time: the caller should retry (CI does, for
    /// callbacks it may). `nothingStored` is for a callback known not to have been committed.
    public static func databaseUnavailable(_ reason: StoreUnavailableError.Reason = .unreachable, nothingStored: Bool = false, retryAfterSeconds: Int)
        -> APIError
    {
        let what = reason == .overloaded ? "the database did not answer in time" : "the database is unavailable"
        return APIError(
            status: .serviceUnavailable,
            code: "DatabaseUnavailable",
            message: nothingStored ? "\(what); nothing was stored, retry later" : "\(what); retry later",
            headers: ["Retry-After": String(retryAfterSeconds)]
        )
    }

    /// The connection to the database broke after the callback's commit was sent, and the service could
    /// not find out whether it landed: say so, rather than "nothing was stored". A retry is safe.
    public static func outcomeUnknown(retryAfterSeconds: Int) -> APIError {
        APIError(
            status: .serviceUnavailable,
            code: "OutcomeUnknown",
            message:
                "the database connection broke after the callback was sent to be committed; it may or may not be stored. Retrying is safe: a stored callback answers Duplicate:true",
            headers: ["Retry-After": String(retryAfterSeconds)]
        )
    }

    public static let internalError = APIError(
        status: .internalServerError,
        code: "InternalError",
        message: "the request failed on the server; it has been logged with its request id"
    )
}
