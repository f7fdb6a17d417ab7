import Foundation
import PostgresLibPQ
import TimeUnits

/// The statements around `webhook_walk_successes` (migration 0020): a walk's deliveries that succeeded at
/// their first attempt, one row per walk and subscription, their attempts side by side in arrays. The
/// completion statement writes them (``WebhookSQL/complete``); the history, the job page and retention read
/// them; a retry or a replay moves a delivery out of them first (``moveOut(subscriptionID:deliveryID:)``,
/// ``moveOutReplayed``), so that it is a row like any other from then on.
enum WebhookWalkSuccessSQL {
    /// The completion statement of the common case, a walk every delivery of which succeeded, where no
    /// circuit breaker moves (the caller records breaker moves under their lock, with
    /// ``WebhookSQL/complete``): the walk row, the subscription marked healthy when it was not, and the
    /// cursor moved on, as ``WebhookSQL/complete`` records the same batch, from plain arrays. That statement
    /// reads the batch as JSON and runs every outcome's CTEs for it: with this one, the database's CPU per
    /// delivery in a drain fell from 53–60 µs to 41–43 µs. Nil for any other batch. One row: `recorded`, 1
    /// when the walk still leased its cursor and was written, 0 when another replica reclaimed it (nothing
    /// is written then).
    static func recording(_ attempts: [FinishedAttempt], advancing cursors: [CursorAdvance]) -> SQLQuery? {
        guard cursors.count == 1, let cursor = cursors.first, !attempts.isEmpty,
            attempts.allSatisfy({ $0.delivery.walked && $0.completion == .succeeded && $0.delivery.subscriptionID == cursor.subscriptionID })
        else { return nil }
        let deliveryIDs = attempts.map(\.delivery.deliveryID)
        return """
            WITH owned AS (
                -- As in the completion statement: the cursor, only while this walk still leases it, locked.
                SELECT c.subscription_id, c.position FROM webhook_cursors c
                WHERE c.subscription_id = \(cursor.subscriptionID) AND c.walk_token = \(cursor.token)::bigint
                FOR NO KEY UPDATE OF c
            ), walk_successes AS (
                INSERT INTO webhook_walk_successes (subscription_id, first_delivery_id, last_delivery_id, after_position, through_position,
                                                    delivery_ids, event_ids, job_ids, status_codes, started_at, finished_at, recorded_at)
                SELECT o.subscription_id, \(deliveryIDs.min() ?? 0)::bigint, \(deliveryIDs.max() ?? 0)::bigint, o.position, \(cursor.walkedThrough)::bigint,
                       \(PostgresValue.integerArray(deliveryIDs))::bigint[],
                       \(PostgresValue.integerArray(attempts.lazy.map(\.delivery.event.eventID)))::bigint[],
                       \(PostgresValue.textArray(attempts.map(\.delivery.event.job.jobID)))::text[],
                       \(PostgresValue.integerArray(attempts.lazy.map { $0.statusCode.map(Int64.init) }))::integer[],
                       -- Two subqueries, not one unnest of both arrays into two array_agg: that sorted wider rows
                       -- twice and took about 30 % longer (pgbench, 256 elements).
                       ARRAY(SELECT \(unsafeRaw: JobUpsertSQL.instant("t.us")) FROM unnest(\(PostgresValue.integerArray(attempts.lazy.map(\.startedAt.microsecondsSince1970)))::bigint[])
                                 WITH ORDINALITY AS t(us, n) ORDER BY t.n),
                       ARRAY(SELECT \(unsafeRaw: JobUpsertSQL.instant("t.us")) FROM unnest(\(PostgresValue.integerArray(attempts.lazy.map(\.finishedAt.microsecondsSince1970)))::bigint[])
                                 WITH ORDINALITY AS t(us, n) ORDER BY t.n),
                       now()
                FROM owned o
                RETURNING subscription_id
            ), resumed AS (
                -- The endpoint answered after failures: its deliveries waiting for a later retry are due now.
                UPDATE webhook_deliveries w SET next_attempt_at = now()
                FROM webhook_subscriptions s
                WHERE s.subscription_id = (SELECT subscription_id FROM walk_successes) AND s.consecutive_failures > 0
                  AND w.subscription_id = s.subscription_id AND w.status = 'pending' AND w.next_attempt_at > now()
            ), healthy AS (
                UPDATE webhook_subscriptions ws SET consecutive_failures = 0, failing_since = NULL
                WHERE ws.subscription_id = (SELECT subscription_id FROM walk_successes)
                  AND (ws.consecutive_failures <> 0 OR ws.failing_since IS NOT NULL)
            ), advanced AS (
                UPDATE webhook_cursors c SET \(unsafeRaw: WebhookWalkSQL.released("a.through"))
                FROM (SELECT \(cursor.walkedThrough)::bigint AS through) a
                WHERE c.subscription_id = \(cursor.subscriptionID) AND c.walk_token = \(cursor.token)::bigint
            )
            SELECT count(*) AS recorded FROM walk_successes
            """
    }

    /// The walk row `r`'s deliveries as rows `u(delivery_id, event_id, job_id, status_code, started_at,
    /// finished_at)`, for a `CROSS JOIN LATERAL`.
    static func elements(of r: String) -> String {
        """
        unnest(\(r).delivery_ids, \(r).event_ids, \(r).job_ids, \(r).status_codes, \(r).started_at, \(r).finished_at)
            AS u(delivery_id, event_id, job_id, status_code, started_at, finished_at)
        """
    }

    /// Moves the subscription's delivery `deliveryID`, if a walk row holds it, into a succeeded
    /// `webhook_deliveries` row with the same id, whose attempt is the row's implicit one
    /// (``WebhookSQL/implicitAttempt(of:)``). One probe of the primary key: the subscription's walks have
    /// id ranges that do not overlap, so only the first ending at or above it can hold it.
    static func moveOut(subscriptionID: String, deliveryID: Int64) -> SQLQuery {
        """
        WITH hit AS (
            SELECT r.subscription_id, r.last_delivery_id, u.*
            FROM webhook_walk_successes r
            CROSS JOIN LATERAL \(unsafeRaw: elements(of: "r"))
            WHERE r.subscription_id = \(subscriptionID)
              AND r.last_delivery_id = (SELECT min(x.last_delivery_id) FROM webhook_walk_successes x
                                        WHERE x.subscription_id = \(subscriptionID) AND x.last_delivery_id >= \(deliveryID))
              AND u.delivery_id = \(deliveryID)
        )\(unsafeRaw: moving)
        """
    }

    /// Moves the deliveries a replay picks (``WebhookSQL/replayWindow``, whose binds this statement takes:
    /// `$1` the subscription, `$2` and `$3` the window) out of the walk rows, as
    /// ``moveOut(subscriptionID:deliveryID:)`` does one: reading only the walk rows whose feed range meets
    /// the events' positions.
    static let moveOutReplayed = """
        WITH \(WebhookSQL.replayWindow), positions AS (
            SELECT p.event_id, f.feed_position FROM picked p JOIN ci_event_feed f ON f.event_id = p.event_id
        ), span AS (
            SELECT min(feed_position) AS low, max(feed_position) AS high FROM positions
        ), hit AS (
            SELECT r.subscription_id, r.last_delivery_id, u.*
            FROM webhook_walk_successes r
            CROSS JOIN LATERAL \(elements(of: "r"))
            WHERE r.subscription_id = $1
              AND r.through_position >= (SELECT low FROM span) AND r.after_position < (SELECT high FROM span)
              -- Feed ranges do not overlap either: none beyond the first that ends at or above the last event.
              AND r.through_position <= coalesce((SELECT min(x.through_position) FROM webhook_walk_successes x
                                                  WHERE x.subscription_id = $1 AND x.through_position >= (SELECT high FROM span)),
                                                 (SELECT high FROM span))
              AND u.event_id IN (SELECT event_id FROM positions)
        )\(moving)
        """

    /// The rest of a move, after the deliveries `hit` (a walk row's `subscription_id, last_delivery_id` and
    /// one element each): their rows, then their walk rows without them, or deleted once empty. Two moves
    /// of one delivery at once are safe: the second finds its row (`ON CONFLICT`) and, once the first
    /// committed, trims or deletes by what the walk row then holds. One row: `moved`, the deliveries hit,
    /// and `superseded_by`, the lowest id of another delivery row of a hit's event (a replay queued while
    /// its walk was sent), which keeps that hit in its walk row; NULL when there is none.
    private static let moving = """
        , moved AS (
            INSERT INTO webhook_deliveries (delivery_id, subscription_id, event_id, job_id, status, attempt_count, schedule_start,
                                            next_attempt_at, created_at, completed_at, last_status_code)
            OVERRIDING SYSTEM VALUE
            SELECT h.delivery_id, h.subscription_id, h.event_id, h.job_id, 'succeeded', 1, 0, now(), h.started_at, h.finished_at, h.status_code
            FROM hit h
            ON CONFLICT DO NOTHING
            RETURNING delivery_id
        ), walks AS (
            -- Only deliveries that are rows now leave their walk row. One whose event already has another
            -- delivery row to the subscription (a replay queued it while its walk was in flight) stays where
            -- it is: the conflict is on the event, not on its id.
            SELECT h.subscription_id, h.last_delivery_id, array_agg(h.delivery_id) AS ids
            FROM hit h
            WHERE h.delivery_id IN (SELECT delivery_id FROM moved)
               OR EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.delivery_id = h.delivery_id)
            GROUP BY h.subscription_id, h.last_delivery_id
        ), trimmed AS (
            UPDATE webhook_walk_successes r
            -- The arrays without the moved, read in one pass, in their order (the row keeps at least one).
            SET (delivery_ids, event_ids, job_ids, status_codes, started_at, finished_at) = (
                SELECT array_agg(u.delivery_id ORDER BY u.n), array_agg(u.event_id ORDER BY u.n), array_agg(u.job_id ORDER BY u.n),
                       array_agg(u.status_code ORDER BY u.n), array_agg(u.started_at ORDER BY u.n), array_agg(u.finished_at ORDER BY u.n)
                FROM unnest(r.delivery_ids, r.event_ids, r.job_ids, r.status_codes, r.started_at, r.finished_at)
                    WITH ORDINALITY AS u(delivery_id, event_id, job_id, status_code, started_at, finished_at, n)
                WHERE u.delivery_id <> ALL (w.ids))
            FROM walks w
            WHERE r.subscription_id = w.subscription_id AND r.last_delivery_id = w.last_delivery_id AND NOT (r.delivery_ids <@ w.ids)
        ), emptied AS (
            DELETE FROM webhook_walk_successes r
            USING walks w
            WHERE r.subscription_id = w.subscription_id AND r.last_delivery_id = w.last_delivery_id AND r.delivery_ids <@ w.ids
        )
        SELECT count(*)::int8 AS moved,
               (SELECT min(d.delivery_id) FROM hit h
                JOIN webhook_deliveries d ON d.subscription_id = h.subscription_id AND d.event_id = h.event_id AND d.delivery_id <> h.delivery_id
               ) AS superseded_by
        FROM hit
        """

    /// The job page's deliveries from walk rows (the index on `job_ids`), as the columns of
    /// ``ConsoleDeliverySQL/forJob(_:limit:)``; `$1` the job.
    static let forJob = """
        SELECT u.delivery_id, r.subscription_id, s.url, e.state AS event_state, 'succeeded' AS status, 1 AS attempt_count,
               NULL AS next_attempt_at, \(JobStore.rfc3339("u.started_at")) AS created_at, \(JobStore.rfc3339("u.finished_at")) AS completed_at,
               u.status_code AS last_status_code, NULL AS last_error
        FROM webhook_walk_successes r
        CROSS JOIN LATERAL \(elements(of: "r"))
        JOIN webhook_subscriptions s ON s.subscription_id = r.subscription_id
        LEFT JOIN ci_job_state_events e ON e.event_id = u.event_id
        WHERE r.job_ids @> ARRAY[$1::text] AND u.job_id = $1::text
        """
}
