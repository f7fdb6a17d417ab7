import CIModel
import Foundation
import HTTPWire
import JobStore

extension CallbackApplication {
    /// `GET /v1/jobs/{JobId}`: the job's normalised JobsDetail with CI's own field names, plus receipt
    /// metadata; XML (`<Response><JobsDetail>…`) when the client prefers it.
    func job(_ jobID: String, request: HTTPRequest) async throws -> HTTPResponse {
        let job = try await jobWaitingIfAsked(jobID, request: request)
        if Self.prefersXML(request.headers["Accept"]) {
            return try xmlResponse(for: job)
        }
        return .json { json in Self.writeJob(job, into: &json) }
    }

    /// `GET /v1/jobs/{JobId}/watermark`: the extracted watermark text of an ExtractDigitalWatermark job.
    func watermark(_ jobID: String, request: HTTPRequest) async throws -> HTTPResponse {
        // Another kind of job never gets a watermark, so it is refused before any wait, not after it.
        let job = try await jobWaitingIfAsked(jobID, request: request, check: { job in
            guard job.hasWatermark else { throw APIError.notWatermarkJob(job) }
        })
        return .json { json in
            json.member("JobId", job.jobID)
            json.member("State", job.state.rawValue)
            json.member("Type", job.watermarkType)
            json.member("Version", job.watermarkVersion)
            json.member("Message", job.watermarkMessage)
        }
    }

    /// `GET /v1/jobs?state=&tag=&queueId=&since=&until=&limit=&cursor=`: newest first, keyset-paginated.
    func listJobs(_ request: HTTPRequest) async throws -> HTTPResponse {
        let query = try Self.jobListQuery(request.queryItems)
        let page = try await store.jobs(query)
        return .json { json in
            json.key("Jobs")
            json.beginArray()
            for job in page.jobs {
                json.beginObject()
                Self.writeJob(job, into: &json)
                json.endObject()
            }
            json.endArray()
            json.member("NextCursor", page.nextCursor?.token)
        }
    }

    /// `GET /v1/jobs/{JobId}/callbacks?limit=&cursor=`: the job's history, oldest first, keyset-paginated.
    func jobCallbacks(_ jobID: String, request: HTTPRequest) async throws -> HTTPResponse {
        let query = try Self.callbackHistoryQuery(request.queryItems)
        guard let page = try await store.callbacks(forJob: jobID, page: query) else { throw APIError.noSuchJob(jobID) }
        let escapedJobID = Self.percentEncodedSegment(jobID)
        return .json { json in
            json.member("JobId", jobID)
            json.key("Callbacks")
            json.beginArray()
            for callback in page.callbacks {
                json.beginObject()
                json.member("CallbackId", Int(callback.callbackID))
                json.member("ReceivedTime", callback.receivedAt)
                if let body = callback.body {
                    json.member("LastReceivedTime", body.lastReceivedAt)
                    json.member("DeliveryCount", body.deliveryCount)
                    json.member("Source", body.source.rawValue)
                    json.member("Format", body.format?.rawValue)
                    json.member("ContentType", body.contentType)
                    json.member("EventName", body.eventName)
                }
                json.member("State", callback.state.rawValue)
                json.member("Applied", callback.applied)
                if let verification = callback.verification {
                    json.member("Verification", verification.rawValue)
                    json.member("VerificationNote", callback.verificationNote)
                }
                // Retention keeps the history longer than the bodies: a pruned body is said so, not left out.
                json.member("BodyPruned", callback.body == nil)
                if let body = callback.body {
                    json.member("BodySize", body.bodySize)
                    json.member("BodyUrl", "/v1/jobs/\(escapedJobID)/callbacks/\(callback.callbackID)/body")
                }
                json.endObject()
            }
            json.endArray()
            json.member("NextCursor", page.nextCursor?.token)
        }
    }

    /// `GET /v1/jobs/{JobId}/callbacks/{CallbackId}/body`: the body exactly as received.
    ///
    /// Served as XML, JSON or octet-stream by its detected format, never with the sender's own
    /// Content-Type (which could be `text/html`), and with `nosniff`.
    func callbackBody(jobID: String, callbackID: Int64) async throws -> HTTPResponse {
        let body: StoredBody
        switch try await store.callbackBody(jobID: jobID, callbackID: callbackID) {
        case .stored(let stored):
            body = stored
        case .pruned:
            throw APIError(
                status: .gone,
                code: "BodyPruned",
                message: "the body of callback \(callbackID) was dropped by retention (CALLBACK_RETENTION); the job's history keeps what it reported"
            )
        case .unknown:
            throw APIError(
                status: .notFound,
                code: "NoSuchCallback",
                message: "job \(jobID) has no callback \(callbackID)"
            )
        }
        let contentType =
            switch body.format {
            case .xml: "application/xml; charset=utf-8"
            case .json: "application/json; charset=utf-8"
            case nil: "application/octet-stream"
            }
        var headers: HTTPHeaders = [
            "Content-Type": contentType,
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "attachment",
        ]
        if let original = body.contentType {
            headers.add(name: "X-Original-Content-Type", value: original)
        }
        if body.truncated {
            headers.add(name: "X-Body-Truncated", value: "true")
        }
        return HTTPResponse(status: .ok, headers: headers, body: body.bytes)
    }

    /// `GET /readyz`: ready when the database answers and its schema is at least this build's.
    func readiness() async throws -> HTTPResponse {
        let version: Int
        do {
            version = try await store.schemaVersion()
        } catch {
            throw APIError(status: .serviceUnavailable, code: "NotReady", message: "the database is unreachable")
        }
        guard version >= configuration.requiredSchemaVersion else {
            throw APIError(
                status: .serviceUnavailable,
                code: "NotReady",
                message: "the database schema is at version \(version); this build needs \(configuration.requiredSchemaVersion) (run `ci-callbackd migrate`)"
            )
        }
        // A standby that is down or behind is reported, not a reason to be unready: reads fall back to the primary.
        let standby = store.readStandby?.status
        return .json { json in
            json.member("Status", "ready")
            json.member("SchemaVersion", version)
            if let standby {
                json.key("ReadStandby")
                json.beginObject()
                json.member("State", standby.state.rawValue)
                if let lag = standby.lagSeconds { json.member("LagMilliseconds", Int((lag * 1000).rounded())) }
                json.endObject()
            }
        }
    }

    // MARK: Waiting

    /// The job, after waiting for a final state when the request says `?wait=30s`: the answer comes as
    /// soon as the job is final, or with its current state when the wait runs out. An unknown job is
    /// 404 at once (a job exists from its submit or first callback).
    ///
    /// `check` runs on the job as first read, before any wait: it throws for a job the route cannot answer.
    private func jobWaitingIfAsked(
        _ jobID: String, request: HTTPRequest, check: (StoredJob) throws -> Void = { _ in }
    ) async throws -> StoredJob {
        let wait = try Self.waitParameter(request.queryItems, maximum: configuration.maxWait)
        // A wait reads the primary throughout: the NOTIFY that wakes it comes from the primary's commit,
        // which the standby may not have replayed yet.
        guard let job = try await store.job(jobID, requirePrimary: wait != nil) else { throw APIError.noSuchJob(jobID) }
        try check(job)
        guard let wait, !job.state.isFinal, let completionListener else { return job }
        do {
            return try await completionListener.waitForFinal(
                jobID: jobID, timeout: wait,
                read: { try await store.job(jobID, requirePrimary: true) ?? job },
                isFinal: { $0.state.isFinal }
            )
        } catch is JobCompletionListener.TooManyWaiters {
            throw APIError(
                status: .serviceUnavailable, code: "TooManyWaiters",
                message: "too many requests are waiting for jobs; retry, or ask without wait",
                headers: ["Retry-After": "1"])
        }
    }

    /// `wait`: a duration such as `30s`, `500ms`, `2m` or plain seconds; a longer wait than `maximum` is
    /// shortened to `maximum` (the client asked for "as long as you can", and gets an answer either way).
    /// The only query parameter the job routes take.
    static func waitParameter(_ items: [(name: String, value: String)], maximum: Duration) throws -> Duration? {
        var wait: Duration?
        for (name, value) in items {
            guard name == "wait" else { throw APIError.invalidParameter(name, "unknown; the only parameter here is wait") }
            guard wait == nil else { throw APIError.invalidParameter(name, "given more than once") }
            guard let parsed = parseDuration(value) else {
                throw APIError.invalidParameter(name, "must be a duration such as 30s (waits longer than \(maximum.components.seconds)s are shortened to it)")
            }
            wait = min(parsed, maximum)
        }
        return wait
    }

    /// `250ms`, `30s`, `2m`, or a plain number of seconds; nil for anything else or a negative value.
    static func parseDuration(_ text: String) -> Duration? {
        let units: [(suffix: String, milliseconds: Double)] = [("ms", 1), ("s", 1000), ("m", 60_000)]
        var number = Substring(text)
        var scale = 1000.0
        for unit in units where text.hasSuffix(unit.suffix) {
            number = text.dropLast(unit.suffix.count)
            scale = unit.milliseconds
            break
        }
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), let value = Double(number),
            value.isFinite, value >= 0, value * scale < 86_400_000
        else { return nil }
        return .milliseconds(Int64((value * scale).rounded()))
    }

    // MARK: Rendering

    /// The body of `GET /v1/jobs/{JobId}` (inside its object); also an event's `data`, so the two cannot differ.
    static func writeJob(_ job: StoredJob, into json: inout JSONWriter) {
        json.key("JobsDetail")
        json.raw(job.detailJSON.utf8)
        json.key("Receipt")
        json.beginObject()
        json.member("FirstReceivedTime", job.firstReceivedAt)
        json.member("LastReceivedTime", job.lastReceivedAt)
        json.member("StateChangedTime", job.stateChangedAt)
        json.member("CallbackCount", job.callbackCount)
        json.member("StateSource", job.stateSource.rawValue)
        json.endObject()
    }

    private func xmlResponse(for job: StoredJob) throws -> HTTPResponse {
        let detail: CINode
        do {
            detail = try CINodeJSON.decode(Array(job.detailJSON.utf8))
        } catch {
            throw StoredDocumentError(jobID: job.jobID, reason: error.reason)
        }
        let receipt = CINode.element([
            CIField(name: "FirstReceivedTime", value: .text(job.firstReceivedAt)),
            CIField(name: "LastReceivedTime", value: .text(job.lastReceivedAt)),
            CIField(name: "StateChangedTime", value: .text(job.stateChangedAt)),
            CIField(name: "CallbackCount", value: .text(String(job.callbackCount))),
            CIField(name: "StateSource", value: .text(job.stateSource.rawValue)),
        ])
        let document = CINode.element([
            CIField(name: "JobsDetail", value: detail),
            CIField(name: "Receipt", value: receipt),
        ])
        let xml = #"<?xml version="1.0" encoding="UTF-8"?>"# + CINodeXML.encode(document, rootName: "Response")
        return HTTPResponse(status: .ok, headers: ["Content-Type": "application/xml; charset=utf-8"], body: Array(xml.utf8))
    }

    // MARK: Parameters

    /// XML only when the client asks for it and ranks it above JSON; JSON is the default.
    static func prefersXML(_ accept: String?) -> Bool {
        guard let accept else { return false }
        var best: (xml: Double, json: Double) = (0, 0)
        for part in accept.split(separator: ",") {
            let fields = part.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard let type = fields.first else { continue }
            let quality = fields.dropFirst().first { $0.hasPrefix("q=") }.flatMap { Double($0.dropFirst(2)) } ?? 1
            switch type {
            case "application/xml", "text/xml": best.xml = max(best.xml, quality)
            case "application/json", "*/*", "application/*": best.json = max(best.json, quality)
            default: break
            }
        }
        return best.xml > best.json
    }

    static func jobListQuery(_ items: [(name: String, value: String)]) throws -> JobListQuery {
        var query = JobListQuery()
        var seen = Set<String>()
        for (name, value) in items {
            guard seen.insert(name).inserted else {
                throw APIError.invalidParameter(name, "given more than once")
            }
            switch name {
            case "state":
                let state = JobState(rawValue: value)
                guard Self.listableStates.contains(state) else {
                    let names = Self.listableStates.map(\.rawValue).joined(separator: ", ")
                    throw APIError.invalidParameter(name, "'\(value)' is not one of \(names)")
                }
                query.state = state
            case "tag":
                guard !value.isEmpty else { throw APIError.invalidParameter(name, "must not be empty") }
                query.tag = value
            case "queueId":
                guard !value.isEmpty else { throw APIError.invalidParameter(name, "must not be empty") }
                query.queueID = value
            case "since", "until":
                // RFC 3339 allows offsets up to ±23:59; the time only becomes an instant here, so PostgreSQL's
                // narrower range for stored times does not apply.
                guard let time = CITimestamp(ciText: value, maxOffsetHours: 23) else {
                    // A raw `+` in a query string means a space, so a `+08:00` offset arrives as ` 08:00`.
                    let hint = value.contains(" ") ? " (a raw + in a query string means a space: send a + offset as %2B, e.g. %2B08:00)" : ""
                    throw APIError.invalidParameter(name, "'\(value)' is not an RFC 3339 time such as 2026-01-31T08:00:00Z\(hint)")
                }
                if name == "since" { query.since = time.date } else { query.until = time.date }
            case "limit":
                query.limit = try Self.pageLimit(name, value, maximum: JobListQuery.maximumLimit)
            case "cursor":
                guard let cursor = JobListCursor(token: value) else {
                    throw APIError.invalidParameter(name, "is not a cursor returned by this API")
                }
                query.cursor = cursor
            default:
                throw APIError.invalidParameter(name, "unknown; known parameters are state, tag, queueId, since, until, limit, cursor")
            }
        }
        return query
    }

    static func callbackHistoryQuery(_ items: [(name: String, value: String)]) throws -> CallbackHistoryQuery {
        var query = CallbackHistoryQuery()
        var seen = Set<String>()
        for (name, value) in items {
            guard seen.insert(name).inserted else {
                throw APIError.invalidParameter(name, "given more than once")
            }
            switch name {
            case "limit":
                query.limit = try Self.pageLimit(name, value, maximum: CallbackHistoryQuery.maximumLimit)
            case "cursor":
                guard let cursor = CallbackHistoryCursor(token: value) else {
                    throw APIError.invalidParameter(name, "is not a cursor returned by this API")
                }
                query.cursor = cursor
            default:
                throw APIError.invalidParameter(name, "unknown; known parameters are limit, cursor")
            }
        }
        return query
    }

    /// A page size: a whole number from 1 to `maximum`.
    static func pageLimit(_ name: String, _ value: String, maximum: Int) throws -> Int {
        guard let limit = Int(value), (1...maximum).contains(limit) else {
            throw APIError.invalidParameter(name, "must be a whole number from 1 to \(maximum)")
        }
        return limit
    }

    /// The states CI documents; a filter on anything else is a typo.
    static let listableStates: [JobState] = [.submitted, .running, .success, .failed, .pause, .cancel]

    /// A JobId made safe for use as one URL path segment.
    static func percentEncodedSegment(_ text: String) -> String {
        let allowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

/// A job's stored JobsDetail could not be read back: the row is damaged, which is a server fault (500).
struct StoredDocumentError: Error, CustomStringConvertible {
    var jobID: String
    var reason: String

    var description: String { "stored JobsDetail of \(jobID) is not valid JSON: \(reason)" }
}
