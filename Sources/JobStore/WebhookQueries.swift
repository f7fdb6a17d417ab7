import CIModel
import Foundation
import PostgresLibPQ
import TimeUnits

/// A push subscription as stored.
public struct WebhookSubscription: Sendable, Hashable {
    public var subscriptionID: String
    public var url: String
    /// Only events of jobs with one of these tags; nil matches every tag.
    public var tags: [String]?
    /// Only events into one of these states; nil matches every state.
    public var states: [String]?
    public var description: String?
    /// `whsec_…`: signs every delivery; shown only when the subscription is created.
    public var secret: String
    /// RFC 3339 UTC.
    public var createdAt: String
    /// Set when the endpoint answered 410 Gone: no more deliveries are queued or sent.
    public var disabledAt: String?
    public var disabledReason: String?
    /// Failed attempts since the last success.
    public var consecutiveFailures: Int
    /// The first failed attempt since the last success.
    public var failingSince: String?
    /// The circuit breaker: whether the endpoint takes deliveries now.
    public var breakerState: WebhookBreakerRecord.State
    /// When the breaker last opened or closed (RFC 3339 UTC); nil if it never opened.
    public var breakerSince: String?
    /// When an open breaker lets its next probe go (RFC 3339 UTC); nil when closed.
    public var breakerNextProbeAt: String?

    public init(
        subscriptionID: String, url: String, tags: [String]?, states: [String]?, description: String?, secret: String, createdAt: String = "",
        disabledAt: String? = nil, disabledReason: String? = nil, consecutiveFailures: Int = 0, failingSince: String? = nil,
        breakerState: WebhookBreakerRecord.State = .closed, breakerSince: String? = nil, breakerNextProbeAt: String? = nil
    ) {
        self.subscriptionID = subscriptionID
        self.url = url
        self.tags = tags
        self.states = states
        self.description = description
        self.secret = secret
        self.createdAt = createdAt
        self.disabledAt = disabledAt
        self.disabledReason = disabledReason
        self.consecutiveFailures = consecutiveFailures
        self.failingSince = failingSince
        self.breakerState = breakerState
        self.breakerSince = breakerSince
        self.breakerNextProbeAt = breakerNextProbeAt
    }
}

/// A subscription's circuit breaker as stored (`webhook_subscriptions.breaker_*`), shared by the replicas;
/// the worker's `WebhookCircuitBreaker` decides its transitions.
public struct WebhookBreakerRecord: Sendable, Hashable {
    public enum State: String, Sendable, Hashable, CaseIterable {
        case closed
        case open
        /// Open, with its probe in flight.
        case halfOpen = "half_open"
    }

    public var state: State
    /// Consecutive attempts that failed for the endpoint's sake.
    public var failures: Int
    /// Openings since the breaker last closed (the cool-down doubles with each).
    public var openings: Int
    /// When it last opened or closed.
    public var since: Date?
    /// When the lease may take the next probe; nil while closed.
    public var nextProbeAt: Date?

    public init(state: State = .closed, failures: Int = 0, openings: Int = 0, since: Date? = nil, nextProbeAt: Date? = nil) {
        self.state = state
        self.failures = failures
        self.openings = openings
        self.since = since
        self.nextProbeAt = nextProbeAt
    }

    /// Closed with no failure counted: a success changes nothing.
    public var isUntouched: Bool { state == .closed && failures == 0 }
}

/// Where a delivery stands.
public enum WebhookDeliveryStatus: String, Sendable, Hashable, CaseIterable {
    case pending
    case succeeded
    case failed
}

/// One attempt of a delivery.
public struct WebhookAttempt: Sendable, Hashable {
    public var attempt: Int
    public var startedAt: String
    /// nil while in flight, or when the replica sending it died (its lease ran out).
    public var finishedAt: String?
    public var statusCode: Int?
    public var error: String?
}

/// A delivery of one event to one subscription, with its attempts.
public struct WebhookDelivery: Sendable, Hashable {
    public var deliveryID: Int64
    public var subscriptionID: String
    public var eventID: Int64
    public var jobID: String
    public var status: WebhookDeliveryStatus
    public var attemptCount: Int
    public var nextAttemptAt: String?
    public var createdAt: String
    public var completedAt: String?
    public var attempts: [WebhookAttempt]
}

/// A page of a subscription's deliveries, newest first.
public struct WebhookDeliveryPage: Sendable, Hashable {
    public var deliveries: [WebhookDelivery]
    /// The last delivery id of this page when more may follow.
    public var nextCursor: Int64?
}

/// A delivery leased for one attempt: everything the worker needs to send it.
public struct LeasedDelivery: Sendable, Hashable {
    public var deliveryID: Int64
    /// The attempt's number over the delivery's life (1-based): identifies the attempt row.
    public var attempt: Int
    /// The attempt's number within its schedule (a manual retry or replay starts a new schedule at 1).
    public var scheduleAttempt: Int
    public var subscriptionID: String
    public var url: String
    public var secret: String
    public var event: JobStateEvent
    /// The lease took it as the probe of the subscription's open circuit breaker.
    public var probe: Bool = false
    /// The subscription's breaker was closed with no failures when leased: a success needs no breaker update.
    public var breakerUntouched: Bool = true
    /// Taken by a walk of the subscription's cursor (``JobStore/walkDeliveries(limit:subscriptions:lease:token:)``): the
    /// delivery has no row yet, and recording its attempt writes it.
    public var walked: Bool = false
}

/// How a finished attempt leaves its delivery.
public enum DeliveryCompletion: Sendable, Hashable {
    case succeeded
    case retry(afterMilliseconds: Int64)
    case failed
    /// Failed with 410 Gone: the subscription is disabled too.
    case gone
    /// Failed while the subscription's circuit breaker is open: the delivery waits for the breaker, due
    /// again at once, and this attempt uses up none of its retry schedule.
    case heldBack
    /// Not sent: a walked delivery whose job's older delivery in the same walk did not succeed, or any
    /// after a 410 in its walk. It is written pending, with no attempt, and goes out after that one.
    case waiting
}

/// What ``JobStore/retryDelivery(subscriptionID:deliveryID:)`` did.
public enum DeliveryRetry: Sendable, Hashable {
    /// The delivery is pending, due now, with a fresh retry schedule.
    case queued
    /// The subscription has no such delivery (or does not exist).
    case noSuchDelivery
    /// A walk's success whose event has another delivery to the subscription since (a replay queued it
    /// while the walk was being sent): that one is the event's to retry; this one stays as it was.
    case superseded(by: Int64)
}

/// One finished attempt, as the worker hands it to ``JobStore/completeDeliveries(_:advancing:)``.
public struct FinishedAttempt: Sendable, Hashable {
    public var delivery: LeasedDelivery
    public var completion: DeliveryCompletion
    public var statusCode: Int?
    /// The response's `Retry-After` in seconds, if any: the floor of a circuit breaker's cool-down.
    public var retryAfterSeconds: Int64?
    public var error: String?
    /// When the request was sent and when its answer (or failure) came: the attempt row's times.
    public var startedAt: Date
    public var finishedAt: Date

    public init(
        delivery: LeasedDelivery, completion: DeliveryCompletion, statusCode: Int?, retryAfterSeconds: Int64? = nil, error: String?, startedAt: Date,
        finishedAt: Date
    ) {
        self.delivery = delivery
        self.completion = completion
        self.statusCode = statusCode
        self.retryAfterSeconds = retryAfterSeconds
        self.error = error
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }
}

/// The delivery backlog of one subscription.
public struct WebhookBacklog: Sendable, Hashable {
    public var subscriptionID: String
    public var pending: Int
    /// Seconds since the oldest pending delivery's event was created; 0 when none is pending.
    public var oldestPendingSeconds: Double
    public var failing: Bool
    public var disabled: Bool
    public var breaker: WebhookBreakerRecord.State

    public init(
        subscriptionID: String, pending: Int, oldestPendingSeconds: Double, failing: Bool, disabled: Bool, breaker: WebhookBreakerRecord.State = .closed
    ) {
        self.subscriptionID = subscriptionID
        self.pending = pending
        self.oldestPendingSeconds = oldestPendingSeconds
        self.failing = failing
        self.disabled = disabled
        self.breaker = breaker
    }
}

extension JobStore {
    /// Most unwalked events the backlog gauges count for a subscription with filters.
    public static let backlogCountLimit = 100_000

    static let subscriptionColumns = """
        subscription_id, url, tags, states, description, secret, \(rfc3339("created_at")) AS created_at,
        \(rfc3339("disabled_at")) AS disabled_at, disabled_reason, consecutive_failures, \(rfc3339("failing_since")) AS failing_since,
        breaker_state, \(rfc3339("breaker_since")) AS breaker_since, \(rfc3339("breaker_next_probe_at")) AS breaker_next_probe_at
        """

    static func subscription(_ row: StrictRow) throws(StoredRowError) -> WebhookSubscription {
        WebhookSubscription(
            subscriptionID: try row.string("subscription_id"), url: try row.string("url"), tags: try row.optionalTextArray("tags"),
            states: try row.optionalTextArray("states"), description: try row.optionalString("description"), secret: try row.string("secret"),
            createdAt: try row.string("created_at"), disabledAt: try row.optionalString("disabled_at"),
            disabledReason: try row.optionalString("disabled_reason"), consecutiveFailures: try row.int("consecutive_failures"),
            failingSince: try row.optionalString("failing_since"), breakerState: try row.value("breaker_state", as: WebhookBreakerRecord.State.self),
            breakerSince: try row.optionalString("breaker_since"), breakerNextProbeAt: try row.optionalString("breaker_next_probe_at"))
    }

    /// Stores a new subscription; its id and secret are the caller's (random).
    public func createSubscription(_ subscription: WebhookSubscription) async throws -> WebhookSubscription {
        try await withConnection { connection in
            let tags: PostgresValue = subscription.tags.map { .textArray($0) } ?? .null
            let states: PostgresValue = subscription.states.map { .textArray($0) } ?? .null
            // Its cursor starts at the newest positioned event: it is sent the events positioned from now on.
            return try connection.query(
                """
                WITH created AS (
                    INSERT INTO webhook_subscriptions (subscription_id, url, tags, states, description, secret, created_at)
                    VALUES (\(subscription.subscriptionID), \(subscription.url), \(tags)::text[], \(states)::text[], \(subscription.description),
                            \(subscription.secret), now())
                    RETURNING \(unsafeRaw: Self.subscriptionColumns)
                ), cursor AS (
                    INSERT INTO webhook_cursors (subscription_id, position)
                    SELECT subscription_id, greatest(coalesce((SELECT max(feed_position) FROM ci_event_feed), 0),
                                                     (SELECT pruned_through FROM ci_event_feed_horizon))
                    FROM created
                )
                SELECT * FROM created
                """
            ).strict("new subscription", Self.subscription)[0]
        }
    }

    /// Every subscription, oldest first, at most `limit`.
    public func subscriptions(limit: Int) async throws -> [WebhookSubscription] {
        try await withConnection { connection in
            try connection.query(
                "SELECT \(unsafeRaw: Self.subscriptionColumns) FROM webhook_subscriptions ORDER BY created_at, subscription_id LIMIT \(limit)"
            ).strict("subscriptions", Self.subscription)
        }
    }

    public func subscription(_ id: String) async throws -> WebhookSubscription? {
        try await withConnection { connection in
            try connection.query("SELECT \(unsafeRaw: Self.subscriptionColumns) FROM webhook_subscriptions WHERE subscription_id = \(id)")
                .strict("subscription", Self.subscription).first
        }
    }

    /// Deletes a subscription and its deliveries; false when there was none.
    ///
    /// Deliveries have no foreign key on their subscription (migrations 0019, 0020): they are deleted here,
    /// rows and walk rows, by later statements of the same transaction. The first waits for any statement
    /// adding deliveries to the subscription (each holds `FOR KEY SHARE` on its row, or the lock of its
    /// cursor), so the later ones, with snapshots of their own, see what they added.
    public func deleteSubscription(_ id: String) async throws -> Bool {
        try await withConnection { connection in
            try connection.transaction { connection in
                guard !(try connection.query("DELETE FROM webhook_subscriptions WHERE subscription_id = \(id) RETURNING 1")).isEmpty else {
                    return false
                }
                try connection.query("DELETE FROM webhook_deliveries WHERE subscription_id = \(id)")
                try connection.query("DELETE FROM webhook_walk_successes WHERE subscription_id = \(id)")
                return true
            }
        }
    }

    /// A subscription's deliveries, newest first, with their attempts; nil when the subscription does not exist.
    public func deliveries(
        subscriptionID: String, status: WebhookDeliveryStatus?, before cursor: Int64?, limit: Int
    ) async throws -> WebhookDeliveryPage? {
        try await withConnection { connection -> WebhookDeliveryPage? in
            guard !(try connection.query("SELECT 1 FROM webhook_subscriptions WHERE subscription_id = \(subscriptionID)")).isEmpty else {
                return nil
            }
            // Rows, the walks' successes (migration 0020), and the walk in flight (migration 0018): its
            // deliveries have no row until recorded.
            let rows = try connection.query(
                """
                (SELECT d.delivery_id, d.subscription_id, d.event_id, d.job_id, d.status, d.attempt_count,
                       CASE WHEN d.status = 'pending' THEN \(unsafeRaw: Self.rfc3339("d.next_attempt_at")) END AS next_attempt_at,
                       \(unsafeRaw: Self.rfc3339("d.created_at")) AS created_at, \(unsafeRaw: Self.rfc3339("d.completed_at")) AS completed_at,
                       coalesce((SELECT json_agg(json_build_object(
                                    'attempt', a.attempt, 'started_at', \(unsafeRaw: Self.rfc3339("a.started_at")),
                                    'finished_at', \(unsafeRaw: Self.rfc3339("a.finished_at")), 'status_code', a.status_code, 'error', a.error)
                                  ORDER BY a.attempt)
                                 FROM (SELECT attempt, started_at, finished_at, status_code, error
                                       FROM webhook_attempts WHERE delivery_id = d.delivery_id
                                       UNION ALL
                                       -- The leased attempt has no row until its outcome is recorded (migration 0013).
                                       SELECT d.attempt_count, d.leased_at, NULL, NULL, NULL
                                       WHERE d.leased_until IS NOT NULL AND d.leased_at IS NOT NULL
                                         AND NOT EXISTS (SELECT 1 FROM webhook_attempts w
                                                         WHERE w.delivery_id = d.delivery_id AND w.attempt = d.attempt_count)
                                       UNION ALL
                                       \(unsafeRaw: WebhookSQL.implicitAttempt(of: "d"))) a), '[]')::text AS attempts
                FROM webhook_deliveries d
                WHERE d.subscription_id = \(subscriptionID)
                  AND (\(status?.rawValue)::text IS NULL OR d.status = \(status?.rawValue))
                  AND d.delivery_id < \(cursor ?? Int64.max)
                ORDER BY d.delivery_id DESC
                LIMIT \(limit + 1))
                UNION ALL
                (SELECT u.delivery_id, c.subscription_id, u.event_id, e.job_id, 'pending', 1, NULL,
                        \(unsafeRaw: Self.rfc3339("c.leased_at")), NULL,
                        json_build_array(json_build_object(
                            'attempt', 1, 'started_at', \(unsafeRaw: Self.rfc3339("c.leased_at")), 'finished_at', NULL, 'status_code', NULL,
                            'error', NULL))::text
                FROM webhook_cursors c
                CROSS JOIN LATERAL unnest(c.walk_deliveries, c.walk_events) AS u(delivery_id, event_id)
                JOIN ci_job_state_events e ON e.event_id = u.event_id
                WHERE c.subscription_id = \(subscriptionID) AND c.leased_until IS NOT NULL
                  AND (\(status?.rawValue)::text IS NULL OR \(status?.rawValue) = 'pending')
                  AND u.delivery_id < \(cursor ?? Int64.max)
                  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w WHERE w.delivery_id = u.delivery_id))
                UNION ALL
                (SELECT u.delivery_id, r.subscription_id, u.event_id, u.job_id, 'succeeded', 1, NULL,
                        \(unsafeRaw: Self.rfc3339("u.started_at")), \(unsafeRaw: Self.rfc3339("u.finished_at")),
                        json_build_array(json_build_object(
                            'attempt', 1, 'started_at', \(unsafeRaw: Self.rfc3339("u.started_at")),
                            'finished_at', \(unsafeRaw: Self.rfc3339("u.finished_at")), 'status_code', u.status_code, 'error', NULL))::text
                 FROM (SELECT * FROM webhook_walk_successes w
                       WHERE w.subscription_id = \(subscriptionID)
                         AND (\(status?.rawValue)::text IS NULL OR \(status?.rawValue) = 'succeeded')
                         -- The walks wholly below the cursor, and the one it falls in: their id ranges do not overlap.
                         AND w.last_delivery_id <= coalesce((SELECT min(x.last_delivery_id) FROM webhook_walk_successes x
                                                             WHERE x.subscription_id = \(subscriptionID)
                                                               AND x.last_delivery_id >= \(cursor ?? Int64.max)),
                                                            \(cursor ?? Int64.max))
                       ORDER BY w.last_delivery_id DESC
                       -- Each has at least one delivery below the cursor, but the one it falls in.
                       LIMIT \(limit + 2)) r
                 CROSS JOIN LATERAL \(unsafeRaw: WebhookWalkSuccessSQL.elements(of: "r"))
                 WHERE u.delivery_id < \(cursor ?? Int64.max))
                ORDER BY delivery_id DESC
                LIMIT \(limit + 1)
                """
            )
            var deliveries = try rows.strict("deliveries") { row throws(StoredRowError) -> WebhookDelivery in
                WebhookDelivery(
                    deliveryID: try row.int64("delivery_id"), subscriptionID: try row.string("subscription_id"), eventID: try row.int64("event_id"),
                    jobID: try row.string("job_id"),
                    status: WebhookDeliveryStatus(rawValue: try row.string("status")) ?? .pending,
                    attemptCount: try row.int("attempt_count"), nextAttemptAt: try row.optionalString("next_attempt_at"),
                    createdAt: try row.string("created_at"), completedAt: try row.optionalString("completed_at"),
                    attempts: Self.attempts(fromJSON: try row.string("attempts")))
            }
            var next: Int64?
            if deliveries.count > limit {
                deliveries.removeLast()
                next = deliveries.last?.deliveryID
            }
            return WebhookDeliveryPage(deliveries: deliveries, nextCursor: next)
        }
    }

    static func attempts(fromJSON text: String) -> [WebhookAttempt] {
        guard let array = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] else { return [] }
        return array.map { item in
            WebhookAttempt(
                attempt: item["attempt"] as? Int ?? 0, startedAt: item["started_at"] as? String ?? "", finishedAt: item["finished_at"] as? String,
                statusCode: item["status_code"] as? Int, error: item["error"] as? String)
        }
    }

    /// Sends a delivery again from the start of the schedule. A pending delivery is made due now.
    public func retryDelivery(subscriptionID: String, deliveryID: Int64) async throws -> DeliveryRetry {
        try await withConnection { connection in
            try connection.transaction { connection in
                // A walk's success becomes a row first (migration 0020), unless its event has a row already.
                let move = StrictRow(try connection.query(WebhookWalkSuccessSQL.moveOut(subscriptionID: subscriptionID, deliveryID: deliveryID))[0], read: "move out")
                if let other = try move.optionalInt("superseded_by") { return .superseded(by: Int64(other)) }
                let queued = !(try connection.query(
                    """
                    WITH target AS (
                        SELECT delivery_id FROM webhook_deliveries WHERE subscription_id = \(subscriptionID) AND delivery_id = \(deliveryID)
                    ), implicit AS (
                        \(unsafeRaw: WebhookSQL.writeImplicitAttempts(joining: "target t USING (delivery_id)"))
                    )
                    UPDATE webhook_deliveries w
                    SET status = 'pending', next_attempt_at = now(), completed_at = NULL, schedule_start = w.attempt_count
                    FROM target t
                    WHERE w.delivery_id = t.delivery_id
                    RETURNING 1
                    """
                )).isEmpty
                return queued ? .queued : .noSuchDelivery
            }
        }
    }

    /// Queues every sequenced event of the window `[since, until)` (by when the state changed) that the
    /// subscription's filters match, again; nil when the subscription does not exist. Returns the events
    /// now queued (new deliveries, finished ones sent again, and ones still pending).
    public func replay(subscriptionID: String, since: Date, until: Date) async throws -> Int? {
        let sinceMicros = Self.epochMicros(since)
        let untilMicros = Self.epochMicros(until)
        return try await withConnection { connection -> Int? in
            // Retention must not delete an event between this statement's snapshot and its commit.
            let rows = try connection.transaction { connection in
                try connection.query(SQLQuery(unsafeSQL: RetentionSQL.eventsLockShared))
                let binds: [PostgresValue] = [.text(subscriptionID), .text(String(sinceMicros)), .text(String(untilMicros))]
                // Walks' successes become rows first (migration 0020), which the statement below starts over.
                try connection.query(SQLQuery(unsafeSQL: WebhookWalkSuccessSQL.moveOutReplayed, binds: binds))
                return try connection.query(SQLQuery(unsafeSQL: WebhookSQL.replay, binds: binds))
            }
            let row = StrictRow(rows[0], read: "replay")
            guard try row.int("found") == 1 else { return nil }
            return try row.int("queued")
        }
    }

    /// Leases up to `limit` due deliveries for one attempt each, for `lease`: oldest due first, skipping
    /// rows another replica has locked (`FOR UPDATE SKIP LOCKED`) or leased, and any delivery with an older
    /// pending delivery of the same job to the same subscription (each job's events go out in order, one at
    /// a time). The attempt is counted and recorded as started in the same statement.
    public func leaseDeliveries(limit: Int, lease: Duration) async throws -> [LeasedDelivery] {
        let leaseMilliseconds = lease.inMilliseconds
        return try await withConnection { connection in
            try connection.query(
                SQLQuery(unsafeSQL: WebhookSQL.lease, binds: [.text(String(max(limit, 1))), .text(String(leaseMilliseconds))])
            ).strict("leased deliveries") { row throws(StoredRowError) -> LeasedDelivery in
                LeasedDelivery(
                    deliveryID: try row.int64("delivery_id"), attempt: try row.int("attempt_count"),
                    scheduleAttempt: try row.int("attempt_count") - (try row.int("schedule_start")),
                    subscriptionID: try row.string("subscription_id"), url: try row.string("url"), secret: try row.string("secret"),
                    event: try Self.stateEvent(row), probe: try row.bool("probe"), breakerUntouched: try row.bool("breaker_untouched"))
            }
        }
    }

    /// Records finished attempts and moves their deliveries on, in one statement: each attempt's row is
    /// written once, here, with its outcome. Returns, in the order given, whether each was still its
    /// delivery's current attempt; false when its lease ran out and another replica took the delivery, or
    /// when the delivery was deleted meanwhile.
    ///
    /// A success after failures means the endpoint is back: every pending delivery of the subscription that
    /// waits for a later retry is due at once, so a consumer that was down catches up as fast as it takes
    /// them instead of at the retry schedule's pace (up to hours apart by then). Within one batch, outcomes
    /// apply to the subscription in the order given, as if recorded one by one.
    ///
    /// Walked deliveries (``LeasedDelivery/walked``) are written here, the successes of each walk as one
    /// walk row (migration 0020) and the others as rows, finished or pending, and `advancing` moves their
    /// cursors in the same statement: the walk is recorded whole or not at all. A walk that another replica
    /// reclaimed meanwhile (its lease ran out) is not written again.
    @discardableResult
    public func completeDeliveries(_ attempts: [FinishedAttempt], advancing cursors: [CursorAdvance] = []) async throws -> [Bool] {
        guard !attempts.isEmpty || !cursors.isEmpty else { return [] }
        if let recording = WebhookWalkSuccessSQL.recording(attempts, advancing: cursors) {
            return try await withConnection { connection in
                let recorded = try StrictRow(try connection.query(recording)[0], read: "walk record").int("recorded") == 1
                return [Bool](repeating: recorded, count: attempts.count)
            }
        }
        let query = WebhookSQL.completion(of: attempts, advancing: cursors)
        return try await withConnection { connection in
            try Self.completed(try connection.query(query), count: attempts.count)
        }
    }

    /// ``completeDeliveries(_:advancing:)`` for a batch that moves circuit breakers: in one transaction, locks the
    /// breakers of `subscriptions` (every replica records under these row locks, so the transitions apply
    /// one after another), hands them and the database's time to `transition`, which applies the attempts
    /// and may hold back deliveries (``DeliveryCompletion/heldBack``), then records the attempts it returns
    /// and stores the breakers it returns.
    @discardableResult
    public func completeDeliveries(
        _ attempts: [FinishedAttempt], advancing cursors: [CursorAdvance] = [], movingBreakersOf subscriptions: Set<String>,
        _ transition: @escaping @Sendable (_ breakers: [String: WebhookBreakerRecord], _ now: Date) -> (
            attempts: [FinishedAttempt], breakers: [String: WebhookBreakerRecord]
        )
    ) async throws -> [Bool] {
        guard !attempts.isEmpty || !cursors.isEmpty else { return [] }
        return try await withConnection { connection in
            try connection.transaction { connection in
                let rows = try connection.query(
                    """
                    SELECT subscription_id, breaker_state, breaker_failures, breaker_openings,
                           (extract(epoch FROM breaker_since) * 1000000)::int8 AS since_us,
                           (extract(epoch FROM breaker_next_probe_at) * 1000000)::int8 AS next_probe_us,
                           (extract(epoch FROM now()) * 1000000)::int8 AS now_us
                    FROM webhook_subscriptions
                    WHERE subscription_id = ANY (\(PostgresValue.textArray(subscriptions.sorted()))::text[])
                    ORDER BY subscription_id
                    FOR NO KEY UPDATE
                    """)
                var stored: [String: WebhookBreakerRecord] = [:]
                var now = Date()
                for row in rows {
                    let row = StrictRow(row, read: "circuit breaker")
                    stored[try row.string("subscription_id")] = WebhookBreakerRecord(
                        state: try row.value("breaker_state", as: WebhookBreakerRecord.State.self), failures: try row.int("breaker_failures"),
                        openings: try row.int("breaker_openings"), since: try row.optionalInt("since_us").map { Date(microsecondsSince1970: Int64($0)) },
                        nextProbeAt: try row.optionalInt("next_probe_us").map { Date(microsecondsSince1970: Int64($0)) })
                    now = Date(microsecondsSince1970: try row.int64("now_us"))
                }
                let (recorded, breakers) = transition(stored, now)
                let result = try Self.completed(try connection.query(WebhookSQL.completion(of: recorded, advancing: cursors)), count: recorded.count)
                if !breakers.isEmpty { try connection.query(WebhookSQL.storeBreakers(breakers)) }
                return result
            }
        }
    }

    /// The completion statement's rows (`ord`, `completed`) as one flag per attempt, in order.
    private static func completed(_ rows: PostgresRows, count: Int) throws -> [Bool] {
        var completed = [Bool](repeating: false, count: count)
        for row in rows {
            let row = StrictRow(row, read: "delivery completion")
            let ord = try row.int("ord")
            if ord >= 1, ord <= count { completed[ord - 1] = try row.bool("completed") }
        }
        return completed
    }

    /// Pending deliveries per subscription, with the age of the oldest one's event, for the metrics: rows
    /// pending, and events above the subscription's cursor not yet walked (migration 0018), which a
    /// disabled subscription never sends. Those of a subscription without filters are the positions above
    /// its cursor (the sequencer numbers without gaps, and retention deletes none above an enabled
    /// subscription's cursor); a filtered one's are counted, up to ``backlogCountLimit``.
    public func webhookBacklog(failingThreshold: Int) async throws -> [WebhookBacklog] {
        try await withConnection { connection in
            try connection.query(
                """
                WITH top AS (
                    SELECT coalesce((SELECT max(feed_position) FROM ci_event_feed), 0) AS top
                )
                SELECT s.subscription_id, r.pending + coalesce(w.unwalked, 0) AS pending,
                       coalesce(extract(epoch FROM now() - least(r.oldest, w.oldest)), 0)::float8 AS oldest,
                       s.consecutive_failures >= \(failingThreshold) AS failing, s.disabled_at IS NOT NULL AS disabled, s.breaker_state
                FROM webhook_subscriptions s
                LEFT JOIN webhook_cursors c ON c.subscription_id = s.subscription_id AND s.disabled_at IS NULL
                CROSS JOIN LATERAL (
                    SELECT count(*) AS pending, min(d.created_at) AS oldest
                    FROM webhook_deliveries d WHERE d.subscription_id = s.subscription_id AND d.status = 'pending'
                ) r
                LEFT JOIN LATERAL (
                    SELECT CASE WHEN s.tags IS NULL AND s.states IS NULL THEN greatest((SELECT top FROM top) - c.position, 0)
                                ELSE (SELECT count(*) FROM (SELECT 1 FROM ci_event_feed f JOIN ci_job_state_events e ON e.event_id = f.event_id
                                                            WHERE f.feed_position > c.position
                                                              AND (s.tags IS NULL OR e.tag = ANY (s.tags)) AND (s.states IS NULL OR e.state = ANY (s.states))
                                                            LIMIT \(Self.backlogCountLimit)) m) END AS unwalked,
                           (SELECT e.created_at FROM ci_event_feed f JOIN ci_job_state_events e ON e.event_id = f.event_id
                            WHERE f.feed_position > c.position
                              AND (s.tags IS NULL OR e.tag = ANY (s.tags)) AND (s.states IS NULL OR e.state = ANY (s.states))
                            ORDER BY f.feed_position LIMIT 1) AS oldest
                    WHERE c.subscription_id IS NOT NULL
                ) w ON true
                ORDER BY s.subscription_id
                """
            ).strict("webhook backlog") { row throws(StoredRowError) -> WebhookBacklog in
                WebhookBacklog(
                    subscriptionID: try row.string("subscription_id"), pending: try row.int("pending"), oldestPendingSeconds: try row.double("oldest"),
                    failing: try row.bool("failing"), disabled: try row.bool("disabled"),
                    breaker: try row.value("breaker_state", as: WebhookBreakerRecord.State.self))
            }
        }
    }
}

/// The delivery worker's statements.
enum WebhookSQL {
    /// `$1` most deliveries, `$2` lease in milliseconds.
    ///
    /// The circuit breakers decide which subscriptions the lease takes from: a closed one's due deliveries,
    /// up to the limit; an open one's, none until its `breaker_next_probe_at`, then one, the probe, which
    /// puts the breaker half-open until the lease runs out (so no other probe goes meanwhile; a probe whose
    /// replica died is followed by another). The probing subscription's row is locked (`SKIP LOCKED`):
    /// two replicas leasing at once send one probe.
    static let lease: String = """
        WITH probe AS (
            SELECT s.subscription_id
            FROM webhook_subscriptions s
            WHERE s.disabled_at IS NULL AND s.breaker_next_probe_at <= now()
            FOR NO KEY UPDATE SKIP LOCKED
        ), admitted AS (
            SELECT s.subscription_id, $1::integer AS take
            FROM webhook_subscriptions s
            WHERE s.disabled_at IS NULL AND s.breaker_next_probe_at IS NULL
            UNION ALL
            SELECT subscription_id, 1 FROM probe
        ), candidate AS (
            -- Per subscription, a walk of the due index in lease order that stops at the take, with one
            -- probe per row of the job's older pending deliveries (webhook_deliveries_job_order_idx; the
            -- ORDER BY keeps the planner off the due index, which also leads with subscription_id). As
            -- joins, stale statistics let the planner sort every pending row and check each one's job
            -- against all of its subscription's pending rows: 34 s for one lease at 12,000 pending.
            SELECT c.delivery_id, c.next_attempt_at
            FROM admitted a
            CROSS JOIN LATERAL (
                SELECT d.delivery_id, d.next_attempt_at
                FROM webhook_deliveries d
                WHERE d.subscription_id = a.subscription_id AND d.status = 'pending' AND d.next_attempt_at <= now()
                  AND (d.leased_until IS NULL OR d.leased_until <= now())
                  AND (SELECT o.delivery_id FROM webhook_deliveries o
                       WHERE o.subscription_id = d.subscription_id AND o.job_id = d.job_id AND o.status = 'pending' AND o.event_id < d.event_id
                       ORDER BY o.event_id LIMIT 1) IS NULL
                ORDER BY d.next_attempt_at, d.delivery_id
                LIMIT a.take
            ) c
        ), ready AS (
            -- Checked again on the locked row: another replica may have leased it since this snapshot.
            SELECT d.delivery_id, d.subscription_id, d.attempt_count AS previous_attempt, d.leased_until AS previous_lease,
                   d.leased_at AS previous_lease_at
            FROM webhook_deliveries d
            WHERE d.delivery_id IN (SELECT delivery_id FROM candidate ORDER BY next_attempt_at, delivery_id LIMIT $1::integer)
              AND d.status = 'pending' AND (d.leased_until IS NULL OR d.leased_until <= now())
            FOR UPDATE OF d SKIP LOCKED
        ), leased AS (
            UPDATE webhook_deliveries d
            SET leased_until = now() + $2::bigint * interval '1 millisecond', leased_at = now(), attempt_count = d.attempt_count + 1
            FROM ready
            WHERE d.delivery_id = ready.delivery_id
            RETURNING d.delivery_id, d.subscription_id, d.event_id, d.attempt_count, d.schedule_start
        ), probing AS (
            UPDATE webhook_subscriptions s
            SET breaker_state = 'half_open', breaker_next_probe_at = now() + $2::bigint * interval '1 millisecond'
            WHERE s.subscription_id IN (SELECT subscription_id FROM probe)
              AND s.subscription_id IN (SELECT subscription_id FROM ready)
        ), abandoned AS (
            -- A lease that ran out with no outcome recorded (completion clears leased_until): the replica
            -- sending it died, or could not reach the database. Whether the consumer got it is unknown.
            INSERT INTO webhook_attempts (delivery_id, attempt, started_at, error)
            SELECT r.delivery_id, r.previous_attempt, r.previous_lease_at, \(abandonedAttemptError)
            FROM ready r
            WHERE r.previous_lease IS NOT NULL AND r.previous_lease_at IS NOT NULL AND r.previous_attempt > 0
            ON CONFLICT (delivery_id, attempt) DO NOTHING
        )
        SELECT l.delivery_id, l.attempt_count, l.schedule_start, s.subscription_id, s.url, s.secret,
               l.subscription_id IN (SELECT subscription_id FROM probe) AS probe,
               s.breaker_state = 'closed' AND s.breaker_failures = 0 AS breaker_untouched,
               e.event_id, f.feed_position, \(EventSQL.jobColumns)
        FROM leased l
        JOIN webhook_subscriptions s ON s.subscription_id = l.subscription_id
        JOIN ci_job_state_events e ON e.event_id = l.event_id
        LEFT JOIN ci_event_feed f ON f.event_id = e.event_id
        ORDER BY l.delivery_id
        """

    /// A replay's subscription `s`, locked against its deletion while deliveries are added (migration
    /// 0019), and the events it picks, `picked(event_id, job_id)`: sequenced, their state changed in the
    /// window, matching the filters. `$1` the subscription, `$2` and `$3` the window in microseconds since
    /// the epoch. CTEs for a `WITH`.
    static let replayWindow = """
        s AS (
            SELECT subscription_id, tags, states FROM webhook_subscriptions WHERE subscription_id = $1
            FOR KEY SHARE
        ), picked AS (
            SELECT e.event_id, e.job_id
            FROM ci_job_state_events e, s
            WHERE EXISTS (SELECT 1 FROM ci_event_feed f WHERE f.event_id = e.event_id)
              AND e.state_changed_at >= 'epoch'::timestamptz + $2::bigint * interval '1 microsecond'
              AND e.state_changed_at < 'epoch'::timestamptz + $3::bigint * interval '1 microsecond'
              AND (s.tags IS NULL OR e.tag = ANY (s.tags)) AND (s.states IS NULL OR e.state = ANY (s.states))
        )
        """

    /// A replay (``JobStore/replay(subscriptionID:since:until:)``), with the binds of ``replayWindow``: queues
    /// the picked events again, new deliveries, finished ones started over (their implicit attempt written
    /// down first) and pending ones as they are. One row: `found` (the subscription), `queued`.
    static let replay = """
        WITH \(replayWindow), implicit AS (
            \(writeImplicitAttempts(joining: "s ON d.subscription_id = s.subscription_id JOIN picked p ON p.event_id = d.event_id"))
        ), queued AS (
            INSERT INTO webhook_deliveries (subscription_id, event_id, job_id, next_attempt_at, created_at)
            SELECT $1, event_id, job_id, now(), now() FROM picked
            ON CONFLICT (subscription_id, event_id) DO UPDATE
                SET status = 'pending', next_attempt_at = now(), completed_at = NULL,
                    schedule_start = webhook_deliveries.attempt_count
                WHERE webhook_deliveries.status <> 'pending'
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM s) AS found, (SELECT count(*) FROM picked) AS queued
        """

    /// What an attempt without a recorded outcome says in the history.
    static let abandonedAttemptError =
        "'no outcome was recorded: the lease ran out (the replica sending it stopped, or could not reach the database); the consumer may have received it'"

    /// A walked delivery that succeeded at its first attempt has no attempt row (migration 0019; since
    /// 0020 such a row is one moved out of its walk row): its row is that attempt, started at
    /// `created_at`, finished at `completed_at`, answered `last_status_code`.
    /// This is that attempt as a row of `attempt, started_at, finished_at, status_code, error`, for the
    /// delivery `alias`; no row for any other delivery.
    static func implicitAttempt(of alias: String) -> String {
        """
        SELECT 1, \(alias).created_at, \(alias).completed_at, \(alias).last_status_code, NULL::text
        WHERE \(alias).status = 'succeeded' AND \(alias).attempt_count = 1
          AND NOT EXISTS (SELECT 1 FROM webhook_attempts x WHERE x.delivery_id = \(alias).delivery_id)
        """
    }

    /// Writes down the implicit attempt (``implicitAttempt(of:)``) of the deliveries `d` that the join
    /// `selected` keeps, before a retry or a replay starts them over and their row stops saying it.
    static func writeImplicitAttempts(joining selected: String) -> String {
        """
        INSERT INTO webhook_attempts (delivery_id, attempt, started_at, finished_at, status_code)
        SELECT d.delivery_id, 1, d.created_at, d.completed_at, d.last_status_code
        FROM webhook_deliveries d JOIN \(selected)
        WHERE d.status = 'succeeded' AND d.attempt_count = 1
        ON CONFLICT (delivery_id, attempt) DO NOTHING
        """
    }

    /// The outcome names of the completion statement.
    static func outcome(_ completion: DeliveryCompletion) -> (name: String, delayMilliseconds: Int64) {
        switch completion {
        case .succeeded: ("succeeded", 0)
        case .retry(let milliseconds): ("retry", milliseconds)
        case .failed: ("failed", 0)
        case .gone: ("gone", 0)
        case .heldBack: ("held", 0)
        case .waiting: ("waiting", 0)
        }
    }

    /// Stores circuit breakers: one statement, `$1` a JSON array of them.
    static func storeBreakers(_ breakers: [String: WebhookBreakerRecord]) -> SQLQuery {
        var json = JSONWriter(reservingCapacity: 160 * breakers.count)
        json.beginArray()
        for (subscription, breaker) in breakers.sorted(by: { $0.key < $1.key }) {
            json.beginObject()
            json.member("subscription_id", subscription)
            json.member("state", breaker.state.rawValue)
            json.member("failures", breaker.failures)
            json.member("openings", breaker.openings)
            json.member("since_us", breaker.since.map { Int($0.microsecondsSince1970) })
            json.member("next_probe_us", breaker.nextProbeAt.map { Int($0.microsecondsSince1970) })
            json.endObject()
        }
        json.endArray()
        return SQLQuery(
            unsafeSQL: """
                UPDATE webhook_subscriptions s
                SET breaker_state = b.state, breaker_failures = b.failures, breaker_openings = b.openings,
                    breaker_since = \(JobUpsertSQL.instant("b.since_us")), breaker_next_probe_at = \(JobUpsertSQL.instant("b.next_probe_us"))
                FROM jsonb_to_recordset($1::jsonb) AS b(subscription_id text, state text, failures integer, openings integer,
                                                        since_us bigint, next_probe_us bigint)
                WHERE s.subscription_id = b.subscription_id
                """,
            binds: [.text(json.string)])
    }

    /// Records `attempts` (``complete``): `$1` a JSON array of them, in order; `$2` the walked cursors to
    /// move (``WebhookWalkSQL/advance``).
    static func completion(of attempts: [FinishedAttempt], advancing cursors: [CursorAdvance] = []) -> SQLQuery {
        var json = JSONWriter(reservingCapacity: 160 * attempts.count)
        json.beginArray()
        for (index, attempt) in attempts.enumerated() {
            let (name, delay) = outcome(attempt.completion)
            json.beginObject()
            json.member("ord", index + 1)
            json.member("delivery_id", Int(attempt.delivery.deliveryID))
            json.member("attempt", attempt.delivery.attempt)
            json.member("outcome", name)
            json.member("status_code", attempt.statusCode)
            json.member("error", attempt.error)
            json.member("delay_ms", Int(delay))
            json.member("started_us", Int(attempt.startedAt.microsecondsSince1970))
            json.member("finished_us", Int(attempt.finishedAt.microsecondsSince1970))
            if attempt.delivery.walked {
                json.member("walked", true)
                json.member("subscription_id", attempt.delivery.subscriptionID)
                json.member("event_id", Int(attempt.delivery.event.eventID))
                json.member("job_id", attempt.delivery.event.job.jobID)
            }
            json.endObject()
        }
        json.endArray()
        var advances = JSONWriter(reservingCapacity: 96 * cursors.count)
        advances.beginArray()
        for cursor in cursors {
            advances.beginObject()
            advances.member("subscription_id", cursor.subscriptionID)
            advances.member("token", Int(cursor.token))
            advances.member("through", Int(cursor.walkedThrough))
            advances.endObject()
        }
        advances.endArray()
        return SQLQuery(unsafeSQL: complete, binds: [.text(json.string), .text(advances.string)])
    }

    /// `$1` the attempts as a JSON array of `ord, delivery_id, attempt, outcome (succeeded | retry | failed |
    /// gone | held | waiting), status_code, error, delay_ms (pause before the next attempt), started_us,
    /// finished_us`, and for a walked delivery `walked, subscription_id, event_id, job_id`; `$2` the cursors
    /// to move (``WebhookWalkSQL/advance``). One row per attempt: `ord`, `completed`.
    ///
    /// A leased delivery moves on only if the attempt is still its current one: same attempt number, still
    /// pending and still leased (a completion clears the lease, so recording an attempt twice changes
    /// nothing). A walk's successes become one ``webhook_walk_successes`` row (migration 0020) and its other
    /// deliveries rows as their attempts left them, while the walk still leases its cursor (not once another
    /// replica reclaimed it). Per subscription, the outcomes apply in `ord` order: failures after the batch's last
    /// success count on from zero; without a success they add to the stored count. A `waiting` delivery was
    /// not sent: it counts for nothing and has no attempt.
    static let complete = """
        WITH input AS (
            SELECT * FROM jsonb_to_recordset($1::jsonb) AS i(ord integer, delivery_id bigint, attempt integer, outcome text,
                                                             status_code integer, error text, delay_ms bigint, started_us bigint, finished_us bigint,
                                                             walked boolean, subscription_id text, event_id bigint, job_id text)
        ), leased AS (
            UPDATE webhook_deliveries w
            SET status = CASE i.outcome WHEN 'succeeded' THEN 'succeeded' WHEN 'retry' THEN 'pending' WHEN 'held' THEN 'pending' ELSE 'failed' END,
                next_attempt_at = CASE i.outcome WHEN 'retry' THEN now() + i.delay_ms * interval '1 millisecond'
                                                 WHEN 'held' THEN now() ELSE w.next_attempt_at END,
                -- Held back by the circuit breaker: the next attempt has the same place in the schedule.
                schedule_start = CASE WHEN i.outcome = 'held' THEN w.schedule_start + 1 ELSE w.schedule_start END,
                leased_until = NULL,
                completed_at = CASE WHEN i.outcome IN ('retry', 'held') THEN NULL ELSE now() END,
                last_status_code = i.status_code, last_error = i.error
            FROM input i
            WHERE w.delivery_id = i.delivery_id AND w.attempt_count = i.attempt AND w.status = 'pending' AND w.leased_until IS NOT NULL
              AND NOT coalesce(i.walked, false)
            RETURNING w.delivery_id, w.subscription_id, i.ord, i.outcome
        ), owned AS (
            -- The cursors of the walks recorded here that those walks still lease: a walk whose lease ran out
            -- and that another replica reclaimed (its deliveries are pending rows now) records nothing. Locked,
            -- so deleting a subscription, whose cursor its foreign key cascades to, waits for this statement
            -- and then deletes what it adds, or this statement finds no cursor and adds nothing (deliveries
            -- have no foreign key on their subscription, migration 0019).
            SELECT c.subscription_id, c.position, a.through
            FROM webhook_cursors c
            JOIN jsonb_to_recordset($2::jsonb) AS a(subscription_id text, token bigint, through bigint)
              ON a.subscription_id = c.subscription_id AND a.token = c.walk_token
            FOR NO KEY UPDATE OF c
        ), inserted AS (
            -- A walk's other outcomes: rows, as leased deliveries are.
            INSERT INTO webhook_deliveries (delivery_id, subscription_id, event_id, job_id, status, attempt_count, schedule_start,
                                            next_attempt_at, created_at, completed_at, last_status_code, last_error)
            OVERRIDING SYSTEM VALUE
            SELECT i.delivery_id, i.subscription_id, i.event_id, i.job_id,
                   CASE WHEN i.outcome IN ('retry', 'held', 'waiting') THEN 'pending' ELSE 'failed' END,
                   CASE WHEN i.outcome = 'waiting' THEN 0 ELSE 1 END,
                   CASE WHEN i.outcome = 'held' THEN 1 ELSE 0 END,
                   CASE WHEN i.outcome = 'retry' THEN now() + i.delay_ms * interval '1 millisecond' ELSE now() END,
                   \(JobUpsertSQL.instant("i.started_us")),
                   CASE WHEN i.outcome IN ('retry', 'held', 'waiting') THEN NULL ELSE now() END,
                   i.status_code, i.error
            FROM input i
            WHERE i.walked AND i.outcome <> 'succeeded' AND i.subscription_id IN (SELECT subscription_id FROM owned)
            -- A replay queued the event meanwhile: its row sends it.
            ON CONFLICT DO NOTHING
            RETURNING delivery_id
        ), walk_successes AS (
            -- A walk's successes: one row for the walk, its attempts side by side (migration 0020).
            INSERT INTO webhook_walk_successes (subscription_id, first_delivery_id, last_delivery_id, after_position, through_position,
                                                delivery_ids, event_ids, job_ids, status_codes, started_at, finished_at, recorded_at)
            SELECT o.subscription_id, min(i.delivery_id), max(i.delivery_id), o.position, o.through,
                   array_agg(i.delivery_id ORDER BY i.ord), array_agg(i.event_id ORDER BY i.ord), array_agg(i.job_id ORDER BY i.ord),
                   array_agg(i.status_code ORDER BY i.ord), array_agg(\(JobUpsertSQL.instant("i.started_us")) ORDER BY i.ord),
                   array_agg(\(JobUpsertSQL.instant("i.finished_us")) ORDER BY i.ord), now()
            FROM input i JOIN owned o ON o.subscription_id = i.subscription_id
            WHERE i.walked AND i.outcome = 'succeeded'
            GROUP BY o.subscription_id, o.position, o.through
            RETURNING subscription_id
        ), d AS (
            SELECT delivery_id, subscription_id, ord, outcome FROM leased
            UNION ALL
            SELECT i.delivery_id, i.subscription_id, i.ord, i.outcome FROM inserted n JOIN input i USING (delivery_id)
            UNION ALL
            SELECT i.delivery_id, i.subscription_id, i.ord, i.outcome FROM input i
            WHERE i.walked AND i.outcome = 'succeeded' AND i.subscription_id IN (SELECT subscription_id FROM walk_successes)
        ), a AS (
            -- A row already there was written when the attempt was leased, before migration 0013.
            INSERT INTO webhook_attempts (delivery_id, attempt, started_at, finished_at, status_code, error)
            SELECT i.delivery_id, i.attempt, \(JobUpsertSQL.instant("i.started_us")), \(JobUpsertSQL.instant("i.finished_us")), i.status_code, i.error
            FROM input i JOIN d USING (ord)
            -- A walked success is its walk's row alone.
            WHERE i.outcome <> 'waiting' AND NOT (coalesce(i.walked, false) AND i.outcome = 'succeeded')
            ON CONFLICT (delivery_id, attempt) DO UPDATE
                SET finished_at = EXCLUDED.finished_at, status_code = EXCLUDED.status_code, error = EXCLUDED.error
        ), attempted AS (
            SELECT * FROM d WHERE outcome <> 'waiting'
        ), last_success AS (
            SELECT subscription_id, max(ord) FILTER (WHERE outcome = 'succeeded') AS ord FROM attempted GROUP BY subscription_id
        ), per_subscription AS (
            SELECT d.subscription_id, l.ord AS last_success,
                   count(*) FILTER (WHERE d.outcome <> 'succeeded' AND d.ord > coalesce(l.ord, 0)) AS failures_after,
                   count(*) FILTER (WHERE d.outcome <> 'succeeded' AND d.ord < l.ord) AS failures_before,
                   bool_or(d.outcome = 'gone') AS gone
            FROM attempted d JOIN last_success l USING (subscription_id)
            GROUP BY d.subscription_id, l.ord
        ), resumed AS (
            -- The endpoint is back: the subscription's deliveries waiting for a later retry are due now. The
            -- subscription row read here is the one before this statement's update (one snapshot).
            UPDATE webhook_deliveries w SET next_attempt_at = now()
            FROM per_subscription p JOIN webhook_subscriptions s ON s.subscription_id = p.subscription_id
            WHERE p.last_success IS NOT NULL AND (s.consecutive_failures > 0 OR p.failures_before > 0)
              AND w.subscription_id = p.subscription_id AND w.status = 'pending' AND w.next_attempt_at > now()
              AND NOT EXISTS (SELECT 1 FROM input i WHERE i.delivery_id = w.delivery_id)
        ), s AS (
            UPDATE webhook_subscriptions ws
            SET consecutive_failures = CASE WHEN p.last_success IS NOT NULL THEN p.failures_after
                                            ELSE ws.consecutive_failures + p.failures_after END,
                failing_since = CASE WHEN p.failures_after = 0 THEN NULL
                                     WHEN p.last_success IS NOT NULL THEN now()
                                     ELSE coalesce(ws.failing_since, now()) END,
                disabled_at = CASE WHEN p.gone THEN coalesce(ws.disabled_at, now()) ELSE ws.disabled_at END,
                disabled_reason = CASE WHEN p.gone THEN 'the endpoint answered 410 Gone' ELSE ws.disabled_reason END
            FROM per_subscription p
            WHERE ws.subscription_id = p.subscription_id
              -- A success on a healthy subscription changes nothing: writing the row anyway made every
              -- delivery of a subscription queue for its one row lock and leave a dead version behind.
              AND (p.failures_after > 0 OR ws.consecutive_failures <> 0 OR ws.failing_since IS NOT NULL)
        ), advanced AS (
            \(WebhookWalkSQL.advance)
        )
        SELECT i.ord, d.delivery_id IS NOT NULL AS completed FROM input i LEFT JOIN d USING (ord) ORDER BY i.ord
        """
}
