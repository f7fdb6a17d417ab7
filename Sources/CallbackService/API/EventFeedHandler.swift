import CIModel
import HTTPWire
import JobStore

extension CallbackApplication {
    /// `GET /v1/events?after=&limit=&wait=`: applied state changes in commit order (the sequencer's feed
    /// positions; see ``JobStore/sequenceEvents(limit:)``). `wait` holds an empty page open until the
    /// sequencer announces new events or the wait runs out.
    func eventFeed(_ request: HTTPRequest) async throws -> HTTPResponse {
        let query = try Self.eventFeedQuery(request.queryItems, maximumWait: configuration.maxWait)
        let store = self.store
        var page: EventFeedPage
        do {
            page = try await store.events(after: query.after, limit: query.limit)
            if page.events.isEmpty, let wait = query.wait, let completionListener {
                // Waits from where the first read stopped, so a reader without a cursor keeps its place.
                let start = page.nextCursor
                page = try await completionListener.waitForEvents(
                    timeout: wait, read: { try await store.events(after: start, limit: query.limit) }, isDone: { !$0.events.isEmpty })
            }
        } catch is JobCompletionListener.TooManyWaiters {
            throw APIError(
                status: .serviceUnavailable, code: "TooManyWaiters",
                message: "too many requests are waiting; retry, or ask without wait", headers: ["Retry-After": "1"])
        } catch let expired as EventFeedCursorExpired {
            throw APIError.cursorExpired(expired)
        }
        return .json { json in
            json.key("Events")
            json.beginArray()
            for event in page.events {
                json.beginObject()
                json.member("id", event.publicID)
                Self.writeEventPayload(event, into: &json)
                json.endObject()
            }
            json.endArray()
            json.member("NextCursor", page.nextCursor.token)
        }
    }

    /// `type`, `timestamp` and `data` of an event: the whole webhook body, and a feed entry besides its `id`.
    /// `data` is exactly the job's lookup body at that state (``writeJob(_:into:)``).
    static func writeEventPayload(_ event: JobStateEvent, into json: inout JSONWriter) {
        json.member("type", "job.state_changed")
        json.member("timestamp", event.timestamp)
        json.key("data")
        json.beginObject()
        writeJob(event.job, into: &json)
        json.endObject()
    }

    /// The parameters of `GET /v1/events`.
    struct EventFeedQuery: Sendable, Hashable {
        /// nil: from the oldest retained event.
        var after: EventFeedCursor?
        var limit = 100
        var wait: Duration?

        static let maximumLimit = 1000
    }

    static func eventFeedQuery(_ items: [(name: String, value: String)], maximumWait: Duration) throws -> EventFeedQuery {
        var query = EventFeedQuery()
        var seen: Set<String> = []
        for (name, value) in items {
            guard seen.insert(name).inserted else { throw APIError.invalidParameter(name, "given more than once") }
            switch name {
            case "after":
                guard let cursor = EventFeedCursor(token: value) else {
                    throw APIError.invalidParameter(name, "is not a cursor returned by this API")
                }
                query.after = cursor
            case "limit":
                query.limit = try pageLimit(name, value, maximum: EventFeedQuery.maximumLimit)
            case "wait":
                query.wait = try waitParameter([(name, value)], maximum: maximumWait)
            default:
                throw APIError.invalidParameter(name, "unknown; known parameters are after, limit, wait")
            }
        }
        return query
    }
}
