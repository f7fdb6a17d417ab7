import Foundation
import PostgresLibPQ

/// One webhook delivery of a job's state event, as the job's console page lists it.
public struct JobDelivery: Sendable, Hashable {
    public var deliveryID: Int64
    public var subscriptionID: String
    /// The subscription's endpoint.
    public var url: String
    /// The state the delivered event announced; nil when the event itself is gone (retention).
    public var eventState: String?
    public var status: WebhookDeliveryStatus
    public var attemptCount: Int
    /// RFC 3339 UTC; set while pending.
    public var nextAttemptAt: String?
    public var createdAt: String
    public var completedAt: String?
    public var lastStatusCode: Int?
    public var lastError: String?
}

extension JobStore {
    /// Most deliveries a job's page lists.
    public static let maximumJobDeliveries = 50

    /// Whether any webhook subscription exists: the job page shows deliveries only then.
    public func hasSubscriptions() async throws -> Bool {
        try await withConnection { connection in
            !(try connection.query(ConsoleDeliverySQL.anySubscription)).isEmpty
        }
    }

    /// The job's webhook deliveries to every subscription, newest first, at most ``maximumJobDeliveries``.
    public func deliveries(forJob jobID: String) async throws -> [JobDelivery] {
        try await withConnection { connection in
            try connection.query(ConsoleDeliverySQL.forJob(jobID, limit: Self.maximumJobDeliveries)).strict("job deliveries") { row throws(StoredRowError) in
                JobDelivery(
                    deliveryID: try row.int64("delivery_id"), subscriptionID: try row.string("subscription_id"), url: try row.string("url"),
                    eventState: try row.optionalString("event_state"),
                    status: WebhookDeliveryStatus(rawValue: try row.string("status")) ?? .pending,
                    attemptCount: try row.int("attempt_count"), nextAttemptAt: try row.optionalString("next_attempt_at"),
                    createdAt: try row.string("created_at"), completedAt: try row.optionalString("completed_at"),
                    lastStatusCode: try row.optionalInt("last_status_code"), lastError: try row.optionalString("last_error"))
            }
        }
    }
}

/// The job page's delivery statements: rows by the index on `(job_id, delivery_id DESC)` (migration 0010),
/// walks' successes by the index on their `job_ids` (migration 0020), and the primary keys of the
/// subscription and the event.
enum ConsoleDeliverySQL {
    static let anySubscription: SQLQuery = "SELECT 1 FROM webhook_subscriptions LIMIT 1"

    static func forJob(_ jobID: String, limit: Int) -> SQLQuery {
        SQLQuery(
            unsafeSQL: """
                (SELECT d.delivery_id, d.subscription_id, s.url, e.state AS event_state, d.status, d.attempt_count,
                        CASE WHEN d.status = 'pending' THEN \(JobStore.rfc3339("d.next_attempt_at")) END AS next_attempt_at,
                        \(JobStore.rfc3339("d.created_at")) AS created_at, \(JobStore.rfc3339("d.completed_at")) AS completed_at,
                        d.last_status_code, d.last_error
                 FROM webhook_deliveries d
                 JOIN webhook_subscriptions s ON s.subscription_id = d.subscription_id
                 LEFT JOIN ci_job_state_events e ON e.event_id = d.event_id
                 WHERE d.job_id = $1
                 ORDER BY d.delivery_id DESC
                 LIMIT $2::integer)
                UNION ALL
                (\(WebhookWalkSuccessSQL.forJob))
                ORDER BY delivery_id DESC
                LIMIT $2::integer
                """,
            binds: [.text(jobID), .text(String(limit))])
    }
}
