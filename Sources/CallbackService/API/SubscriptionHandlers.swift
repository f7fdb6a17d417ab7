import CIModel
import Foundation
import HTTPWire
import JobStore

extension CallbackApplication {
    /// `POST /v1/subscriptions` and `GET /v1/subscriptions`.
    func subscriptions(_ request: HTTPRequest) async throws -> HTTPResponse {
        if request.method == .post { return try await createSubscription(request) }
        let subscriptions = try await store.subscriptions(limit: configuration.maxSubscriptions)
        return .json { json in
            json.key("Subscriptions")
            json.beginArray()
            for subscription in subscriptions {
                json.beginObject()
                writeSubscription(subscription, into: &json)
                json.endObject()
            }
            json.endArray()
        }
    }

    /// `GET` and `DELETE /v1/subscriptions/{id}`.
    func subscription(_ id: String, request: HTTPRequest) async throws -> HTTPResponse {
        if request.method == .delete {
            guard try await store.deleteSubscription(id) else { throw APIError.noSuchSubscription(id) }
            return HTTPResponse(status: .noContent, headers: [:], body: [])
        }
        guard let subscription = try await store.subscription(id) else { throw APIError.noSuchSubscription(id) }
        return .json { json in writeSubscription(subscription, into: &json) }
    }

    private func createSubscription(_ request: HTTPRequest) async throws -> HTTPResponse {
        let body = try Self.subscriptionBody(request.body)
        // A soft bound (two concurrent creations may both pass it): it keeps the per-subscription metric
        // series and the sequencer's fan-out bounded, not exact.
        let existing = try await store.subscriptions(limit: configuration.maxSubscriptions)
        guard existing.count < configuration.maxSubscriptions else {
            throw APIError(
                status: .conflict, code: "TooManySubscriptions",
                message: "there are \(existing.count) subscriptions, the most this service keeps (MAX_SUBSCRIPTIONS); delete one first")
        }
        let created = try await store.createSubscription(
            WebhookSubscription(
                subscriptionID: "sub_" + Self.randomHex(bytes: 12), url: body.url, tags: body.tags, states: body.states,
                description: body.description, secret: WebhookSigning.newSecret()))
        var response = HTTPResponse.json(status: .created) { json in
            writeSubscription(created, into: &json)
            json.member("Secret", created.secret)
        }
        response.headers.replaceOrAdd(name: "Location", value: "/v1/subscriptions/\(created.subscriptionID)")
        return response
    }

    private func writeSubscription(_ subscription: WebhookSubscription, into json: inout JSONWriter) {
        json.member("SubscriptionId", subscription.subscriptionID)
        json.member("Url", subscription.url)
        Self.optionalStrings("Tags", subscription.tags, into: &json)
        Self.optionalStrings("States", subscription.states, into: &json)
        json.member("Description", subscription.description)
        json.member("CreatedTime", subscription.createdAt)
        json.member("Disabled", subscription.disabledAt != nil)
        json.member("DisabledTime", subscription.disabledAt)
        json.member("DisabledReason", subscription.disabledReason)
        json.member("Failing", subscription.consecutiveFailures >= configuration.webhookDelivery.failingThreshold)
        json.member("ConsecutiveFailures", subscription.consecutiveFailures)
        json.member("FailingSince", subscription.failingSince)
        json.key("CircuitBreaker")
        json.beginObject()
        json.member("State", subscription.breakerState == .halfOpen ? "half-open" : subscription.breakerState.rawValue)
        json.member("Since", subscription.breakerSince)
        json.member("NextProbeTime", subscription.breakerNextProbeAt)
        json.endObject()
    }

    private static func optionalStrings(_ key: String, _ values: [String]?, into json: inout JSONWriter) {
        json.key(key)
        guard let values else {
            json.null()
            return
        }
        json.beginArray()
        for value in values { json.string(value) }
        json.endArray()
    }

    /// `GET /v1/subscriptions/{id}/deliveries?status=&cursor=&limit=`: newest first, with every attempt.
    func subscriptionDeliveries(_ id: String, request: HTTPRequest) async throws -> HTTPResponse {
        var status: WebhookDeliveryStatus?
        var cursor: Int64?
        var limit = 50
        var seen: Set<String> = []
        for (name, value) in request.queryItems {
            guard seen.insert(name).inserted else { throw APIError.invalidParameter(name, "given more than once") }
            switch name {
            case "status":
                guard let parsed = WebhookDeliveryStatus(rawValue: value) else {
                    throw APIError.invalidParameter(name, "'\(value)' is not one of pending, succeeded, failed")
                }
                status = parsed
            case "cursor":
                guard let text = Base64URL.decode(value), text.hasPrefix("d:"), let id = Int64(text.dropFirst(2)), id > 0 else {
                    throw APIError.invalidParameter(name, "is not a cursor returned by this API")
                }
                cursor = id
            case "limit":
                limit = try Self.pageLimit(name, value, maximum: 500)
            default:
                throw APIError.invalidParameter(name, "unknown; known parameters are status, cursor, limit")
            }
        }
        guard let page = try await store.deliveries(subscriptionID: id, status: status, before: cursor, limit: limit) else {
            throw APIError.noSuchSubscription(id)
        }
        return .json { json in
            json.key("Deliveries")
            json.beginArray()
            for delivery in page.deliveries {
                json.beginObject()
                json.member("DeliveryId", String(delivery.deliveryID))
                json.member("EventId", "evt_\(delivery.eventID)")
                json.member("JobId", delivery.jobID)
                json.member("Status", delivery.status.rawValue)
                json.member("AttemptCount", delivery.attemptCount)
                json.member("NextAttemptTime", delivery.nextAttemptAt)
                json.member("CreatedTime", delivery.createdAt)
                json.member("CompletedTime", delivery.completedAt)
                json.key("Attempts")
                json.beginArray()
                for attempt in delivery.attempts {
                    json.beginObject()
                    json.member("Attempt", attempt.attempt)
                    json.member("Time", attempt.startedAt)
                    json.member("FinishedTime", attempt.finishedAt)
                    json.member("StatusCode", attempt.statusCode)
                    json.member("Error", attempt.error ?? (attempt.finishedAt == nil ? "no outcome recorded: in flight, or the sender stopped" : nil))
                    json.endObject()
                }
                json.endArray()
                json.endObject()
            }
            json.endArray()
            json.member("NextCursor", page.nextCursor.map { Base64URL.encode("d:\($0)") })
        }
    }

    /// `POST /v1/subscriptions/{id}/deliveries/{deliveryId}/retry`: the delivery is due again at once, with
    /// a fresh retry schedule.
    func retryDelivery(_ id: String, deliveryID: String) async throws -> HTTPResponse {
        let noSuchDelivery = APIError(status: .notFound, code: "NoSuchDelivery", message: "subscription \(id) has no delivery \(deliveryID)")
        guard let number = Int64(deliveryID), number > 0 else { throw noSuchDelivery }
        switch try await store.retryDelivery(subscriptionID: id, deliveryID: number) {
        case .queued: break
        case .noSuchDelivery: throw noSuchDelivery
        case .superseded(let other):
            throw APIError(
                status: .conflict, code: "DeliverySuperseded",
                message: "delivery \(deliveryID) succeeded, and its event has been queued again since as delivery \(other) (a replay); retry \(other)")
        }
        return .json(status: .accepted) { json in
            json.member("DeliveryId", deliveryID)
            json.member("Status", WebhookDeliveryStatus.pending.rawValue)
        }
    }

    /// `POST /v1/subscriptions/{id}/replay` with `{"Since":…,"Until":…}`: every event whose state changed in
    /// the window and that the subscription's filters match is sent again (each job's in order).
    func replay(_ id: String, request: HTTPRequest) async throws -> HTTPResponse {
        let object = try Self.jsonObject(request.body, example: #"{"Since":"2026-01-31T08:00:00Z","Until":"2026-01-31T09:00:00Z"}"#)
        for key in object.keys where key != "Since" && key != "Until" {
            throw APIError.invalidParameter(key, "unknown; known fields are Since, Until")
        }
        guard let since = try Self.time(object, "Since") else { throw APIError.invalidParameter("Since", "is required") }
        let until = try Self.time(object, "Until") ?? Date()
        guard since < until else { throw APIError.invalidParameter("Until", "must be later than Since") }
        guard let queued = try await store.replay(subscriptionID: id, since: since, until: until) else {
            throw APIError.noSuchSubscription(id)
        }
        return .json(status: .accepted) { json in
            json.member("SubscriptionId", id)
            json.member("Queued", queued)
        }
    }

    // MARK: Request bodies

    /// What `POST /v1/subscriptions` asked for.
    struct SubscriptionBody: Sendable, Hashable {
        var url: String
        var tags: [String]?
        var states: [String]?
        var description: String?
    }

    static let maxURLBytes = 2048
    static let maxDescriptionCharacters = 256
    /// openapi.yaml's SubscriptionRequest.Url pattern.
    static let urlPattern = "^https?://[A-Za-z0-9][A-Za-z0-9.-]{0,62}(:[1-9][0-9]{0,4})?(/[A-Za-z0-9._~-]*){0,8}$"
    static let maxFilterValues = 50

    static func subscriptionBody(_ bytes: [UInt8]) throws -> SubscriptionBody {
        let object = try jsonObject(bytes, example: #"{"Url":"https://consumer.example.com/hooks","Tags":["ExtractDigitalWatermark"],"States":["Success","Failed"]}"#)
        for key in object.keys where !["Url", "Tags", "States", "Description"].contains(key) {
            throw APIError.invalidParameter(key, "unknown; known fields are Url, Tags, States, Description")
        }
        // The checks are exactly the schema's in openapi.yaml (SubscriptionRequest), so a request the
        // document calls invalid is refused, and one it calls valid is refused only when it is no URL.
        guard let url = object["Url"] as? String else { throw APIError.invalidParameter("Url", "is required and must be a string") }
        guard url.utf8.count <= maxURLBytes, url.range(of: urlPattern, options: .regularExpression) != nil,
            let components = URLComponents(string: url), let host = components.host, !host.isEmpty
        else {
            throw APIError.invalidParameter(
                "Url", "must be an http or https URL with a host and a path of letters, digits and ._~-, at most \(maxURLBytes) bytes")
        }
        let tags = try stringList(object, "Tags") { tag in
            guard tag.range(of: "^[!-~]{1,128}$", options: .regularExpression) != nil else {
                return "holds a tag that is not 1 to 128 printable ASCII characters"
            }
            return nil
        }
        let states = try stringList(object, "States") { state in
            guard listableStates.contains(JobState(rawValue: state)) else {
                return "'\(state)' is not one of \(listableStates.map(\.rawValue).joined(separator: ", "))"
            }
            return nil
        }
        var description: String?
        if let value = object["Description"], !(value is NSNull) {
            guard let text = value as? String, text.unicodeScalars.count <= maxDescriptionCharacters else {
                throw APIError.invalidParameter("Description", "must be a string of at most \(maxDescriptionCharacters) characters")
            }
            description = text
        }
        return SubscriptionBody(url: url, tags: tags, states: states, description: description)
    }

    /// A JSON array of strings, each checked by `problem` (a message when wrong); nil when absent or null.
    private static func stringList(_ object: [String: Any], _ key: String, problem: (String) -> String?) throws -> [String]? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let values = value as? [Any], let strings = values as? [String], !strings.isEmpty, strings.count <= maxFilterValues else {
            throw APIError.invalidParameter(key, "must be an array of 1 to \(maxFilterValues) strings, or left out to match everything")
        }
        for string in strings {
            if let message = problem(string) { throw APIError.invalidParameter(key, message) }
        }
        return Array(Set(strings)).sorted()
    }

    private static func time(_ object: [String: Any], _ key: String) throws -> Date? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        guard let text = value as? String, let time = CITimestamp(ciText: text, maxOffsetHours: 23) else {
            throw APIError.invalidParameter(key, "must be an RFC 3339 time such as 2026-01-31T08:00:00Z")
        }
        return time.date
    }

    private static func jsonObject(_ bytes: [UInt8], example: String) throws -> [String: Any] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw APIError(status: .badRequest, code: "InvalidRequestBody", message: "the body must be a JSON object such as \(example)")
        }
        return object
    }

    static func randomHex(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined()
    }
}

extension APIError {
    static func noSuchSubscription(_ id: String) -> APIError {
        APIError(status: .notFound, code: "NoSuchSubscription", message: "there is no subscription \(id)")
    }
}
