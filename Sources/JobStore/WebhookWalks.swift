import Foundation
import PostgresLibPQ
import TimeUnits

/// One subscription's walk (migration 0018): the next events above its cursor, leased by this replica, to
/// send and then record with ``JobStore/completeDeliveries(_:advancing:)``.
public struct WalkedBatch: Sendable, Hashable {
    public var subscriptionID: String
    /// Identifies the lease: recording moves the cursor only while the walk is still this one.
    public var token: Int64
    /// Where the cursor goes once the walk is recorded: the last feed position it read, matching or not.
    public var walkedThrough: Int64
    /// The events to send, in feed order, as deliveries for attempt 1 (``LeasedDelivery/walked``).
    public var deliveries: [LeasedDelivery]
}

/// A walk's hold on its subscription's cursor: the cursor, and the token of the walk that leased it.
public struct WalkLease: Sendable, Hashable {
    public var subscriptionID: String
    public var token: Int64

    public init(subscriptionID: String, token: Int64) {
        self.subscriptionID = subscriptionID
        self.token = token
    }
}

/// A leased delivery's hold on its row: the delivery, and the attempt it was leased for.
public struct RowLease: Sendable, Hashable {
    public var deliveryID: Int64
    public var attempt: Int

    public init(deliveryID: Int64, attempt: Int) {
        self.deliveryID = deliveryID
        self.attempt = attempt
    }
}

/// Moves a walked subscription's cursor, in the statement that records the walk's attempts.
public struct CursorAdvance: Sendable, Hashable {
    public var subscriptionID: String
    public var token: Int64
    public var walkedThrough: Int64

    public init(subscriptionID: String, token: Int64, walkedThrough: Int64) {
        self.subscriptionID = subscriptionID
        self.token = token
        self.walkedThrough = walkedThrough
    }
}

extension JobStore {
    /// Most feed positions one walk reads per subscription, matching or not: a subscription whose filters
    /// match little still moves on by this much per walk, reading a bounded range.
    public static let walkWindow = 4096

    /// Leases the cursors of up to `subscriptions` subscriptions that have events to send, those walked
    /// least recently first, and takes each one's next events, at most `limit` a subscription, for `lease`
    /// (`FOR UPDATE SKIP LOCKED` on the cursor: one replica walks a subscription at a time, and every event
    /// is sent once). So a walk holds at most `subscriptions` × `limit` deliveries however many
    /// subscriptions are behind, and each gets its turn. Subscriptions whose circuit breaker is open or that
    /// are disabled are not walked; their events wait above the cursor.
    ///
    /// Per-job order: an event whose job has an older pending delivery to the subscription is not sent; its
    /// row is written here, pending, and the lease of pending rows sends it after the older one. A walk that
    /// finds nothing to send moves its cursor at once.
    public func walkDeliveries(limit: Int, subscriptions: Int, lease: Duration, token: Int64) async throws -> [WalkedBatch] {
        let binds: [PostgresValue] = [
            .text(String(max(limit, 1))), .text(String(lease.inMilliseconds)), .text(String(token)), .text(String(Self.walkWindow)),
            .text(String(max(subscriptions, 1))),
        ]
        return try await withConnection { connection in
            let rows = try connection.query(SQLQuery(unsafeSQL: WebhookWalkSQL.walk, binds: binds))
            var batches: [WalkedBatch] = []
            // An event taken by several subscriptions has its job columns on its first row only (the walk's
            // `sent`): one decoded event, shared.
            var events: [Int64: JobStateEvent] = [:]
            for row in rows {
                let row = StrictRow(row, read: "walked deliveries")
                let subscription = try row.string("subscription_id")
                let eventID = try row.int64("event_id")
                let event: JobStateEvent
                if try row.optionalString("job_id") == nil, let seen = events[eventID] {
                    event = seen
                } else {
                    event = try Self.stateEvent(row)  // a first row without job columns fails here, as NULL
                    events[eventID] = event
                }
                let delivery = LeasedDelivery(
                    deliveryID: try row.int64("delivery_id"), attempt: 1, scheduleAttempt: 1, subscriptionID: subscription,
                    url: try row.string("url"), secret: try row.string("secret"), event: event,
                    breakerUntouched: try row.bool("breaker_untouched"), walked: true)
                if batches.last?.subscriptionID == subscription {
                    batches[batches.count - 1].deliveries.append(delivery)
                } else {
                    batches.append(
                        WalkedBatch(subscriptionID: subscription, token: token, walkedThrough: try row.int64("walked_through"), deliveries: [delivery]))
                }
            }
            return batches
        }
    }

    /// Extends leases this replica still holds to `lease` from now: of `walks` being sent, and of leased
    /// deliveries (`rows`) whose attempts are not recorded yet. The sender sends the concurrency at once,
    /// each POST up to the timeout, so a walk of more events than that, or a delivery queued behind one,
    /// takes longer than one lease. A walk recorded or reclaimed meanwhile (its token gone from the
    /// cursor), or a delivery recorded or leased again (its attempt or state changed), is left alone; so is
    /// a row that a statement recording it has locked (`SKIP LOCKED`: no wait, and no deadlock with it).
    public func renewLeases(walks: [WalkLease], rows: [RowLease], lease: Duration) async throws {
        guard !walks.isEmpty || !rows.isEmpty else { return }
        let query: SQLQuery = """
            WITH walks AS (
                SELECT c.subscription_id FROM webhook_cursors c
                JOIN unnest(\(PostgresValue.textArray(walks.map(\.subscriptionID)))::text[], \(PostgresValue.integerArray(walks.map(\.token)))::bigint[]) AS w(subscription_id, token)
                  ON c.subscription_id = w.subscription_id AND c.walk_token = w.token
                FOR NO KEY UPDATE OF c SKIP LOCKED
            ), rows AS (
                SELECT d.delivery_id FROM webhook_deliveries d
                JOIN unnest(\(PostgresValue.integerArray(rows.map(\.deliveryID)))::bigint[], \(PostgresValue.integerArray(rows.map { Int64($0.attempt) }))::integer[]) AS r(delivery_id, attempt)
                  ON d.delivery_id = r.delivery_id AND d.attempt_count = r.attempt
                WHERE d.status = 'pending' AND d.leased_until IS NOT NULL
                FOR NO KEY UPDATE OF d SKIP LOCKED
            ), renewed_walks AS (
                UPDATE webhook_cursors c SET leased_until = now() + \(lease.inMilliseconds)::bigint * interval '1 millisecond'
                WHERE c.subscription_id IN (SELECT subscription_id FROM walks)
            )
            UPDATE webhook_deliveries d SET leased_until = now() + \(lease.inMilliseconds)::bigint * interval '1 millisecond'
            WHERE d.delivery_id IN (SELECT delivery_id FROM rows)
            """
        _ = try await withConnection { connection in try connection.query(query) }
    }

    /// Walks whose lease ran out with nothing recorded (the replica walking them stopped, or could not
    /// reach the database): each of their events becomes a pending delivery whose first attempt is
    /// recorded as cut short (the consumer may have received it), and the cursor moves past them. The
    /// lease of pending rows sends them again, same webhook-id. Returns how many deliveries it queued.
    @discardableResult
    public func reclaimLapsedWalks() async throws -> Int {
        try await withConnection { connection in
            let row = StrictRow(try connection.query(SQLQuery(unsafeSQL: WebhookWalkSQL.reclaim))[0], read: "lapsed walks")
            return try row.int("queued")
        }
    }
}

/// The walk's statements.
enum WebhookWalkSQL {
    /// `$1` most events per subscription, `$2` lease in milliseconds, `$3` the lease's token, `$4` the
    /// window of feed positions one walk reads, `$5` most subscriptions. One row per event to send, grouped by subscription in feed
    /// order: `subscription_id, delivery_id, url, secret, breaker_untouched, walked_through, event_id,
    /// feed_position` and ``EventSQL/jobColumns``, these only on an event's first row.
    static let walk = """
        WITH top AS (
            SELECT coalesce((SELECT max(feed_position) FROM ci_event_feed), 0) AS top
        ), due AS (
            SELECT c.subscription_id, c.position, s.tags, s.states
            FROM webhook_cursors c
            JOIN webhook_subscriptions s ON s.subscription_id = c.subscription_id
            WHERE c.leased_until IS NULL AND s.disabled_at IS NULL AND s.breaker_next_probe_at IS NULL
              AND c.position < (SELECT top FROM top)
            -- Least recently walked first: with more subscriptions behind than one walk takes, each gets its
            -- turn (the order among those walked by one statement: their ids).
            ORDER BY c.last_walked_at NULLS FIRST, c.subscription_id
            LIMIT $5::integer
            FOR NO KEY UPDATE OF c SKIP LOCKED
        ), picked AS (
            -- The feed's primary key in order from the cursor, read only as far as the limit needs, then per
            -- feed row one probe of the events' primary key and one of the deliveries', until the limit. The
            -- window's end is a filter, not an index bound, and the subquery has a LIMIT (which also keeps
            -- the order below the probes): with the range as an index bound the planner estimated a few rows
            -- and read the whole window by bitmap, then sorted it, a third of the walk's time when catching
            -- up. The LIMIT bounds the scan by the window's size all the same. The probes are a LATERAL
            -- subquery kept apart and a scalar subplan, not joins: without statistics (a bulk load, an
            -- upgrade) the planner hashed every event for the join (OutboxPlanTests). An event waits
            -- (blocked) when its job has an older pending delivery to the subscription.
            SELECT d.subscription_id, p.event_id, p.walk_job, p.feed_position,
                   EXISTS (SELECT 1 FROM webhook_deliveries o
                           WHERE o.subscription_id = d.subscription_id AND o.job_id = p.walk_job AND o.status = 'pending'
                             AND o.event_id < p.event_id) AS blocked
            FROM due d
            CROSS JOIN LATERAL (
                SELECT f.event_id, e.job_id AS walk_job, f.feed_position
                FROM (
                    SELECT w.feed_position, w.event_id FROM ci_event_feed w
                    WHERE w.feed_position > d.position AND w.feed_position - d.position <= $4::bigint
                    ORDER BY w.feed_position
                    LIMIT $4::bigint
                ) f
                CROSS JOIN LATERAL (
                    SELECT x.job_id, x.tag, x.state FROM ci_job_state_events x WHERE x.event_id = f.event_id OFFSET 0
                ) e
                WHERE (d.tags IS NULL OR e.tag = ANY (d.tags)) AND (d.states IS NULL OR e.state = ANY (d.states))
                  -- A replay queued it already: its row sends it.
                  AND (SELECT r.delivery_id FROM webhook_deliveries r
                       WHERE r.subscription_id = d.subscription_id AND r.event_id = f.event_id) IS NULL
                ORDER BY f.feed_position
                LIMIT $1::integer
            ) p
        ), numbered AS (
            -- The sequence looked up once (an InitPlan), not per row: per row it was a catalog lookup each.
            SELECT picked.*, nextval((SELECT pg_get_serial_sequence('webhook_deliveries', 'delivery_id')::regclass)) AS delivery_id
            FROM picked
        ), walks AS (
            SELECT d.subscription_id,
                   coalesce(array_agg(n.event_id ORDER BY n.feed_position) FILTER (WHERE NOT n.blocked), '{}') AS events,
                   coalesce(array_agg(n.delivery_id ORDER BY n.feed_position) FILTER (WHERE NOT n.blocked), '{}') AS deliveries,
                   CASE WHEN count(n.event_id) >= $1::integer THEN max(n.feed_position)
                        ELSE least(d.position + $4::bigint, (SELECT top FROM top)) END AS through
            FROM due d
            LEFT JOIN numbered n ON n.subscription_id = d.subscription_id
            GROUP BY d.subscription_id, d.position
        ), waiting AS (
            -- The cursor's lock (due) keeps its subscription from being deleted meanwhile (migration 0019).
            INSERT INTO webhook_deliveries (delivery_id, subscription_id, event_id, job_id, next_attempt_at, created_at)
            OVERRIDING SYSTEM VALUE
            SELECT n.delivery_id, n.subscription_id, n.event_id, n.walk_job, now(), now() FROM numbered n WHERE n.blocked
            ON CONFLICT DO NOTHING
        ), leased AS (
            -- A walk with nothing to send moves the cursor at once and leases nothing.
            UPDATE webhook_cursors c
            SET position = CASE WHEN cardinality(w.events) = 0 THEN w.through ELSE c.position END,
                last_walked_at = now(),
                leased_until = CASE WHEN cardinality(w.events) > 0 THEN now() + $2::bigint * interval '1 millisecond' END,
                leased_at = CASE WHEN cardinality(w.events) > 0 THEN now() END,
                walk_token = CASE WHEN cardinality(w.events) > 0 THEN $3::bigint END,
                walk_events = CASE WHEN cardinality(w.events) > 0 THEN w.events END,
                walk_deliveries = CASE WHEN cardinality(w.events) > 0 THEN w.deliveries END,
                walked_through = CASE WHEN cardinality(w.events) > 0 THEN w.through END
            FROM walks w
            WHERE c.subscription_id = w.subscription_id
        ), sent AS (
            -- An event several subscriptions take is read and sent over once, on its first row in the
            -- order below (the first subscription's); its other rows carry no job columns.
            SELECT n.*, row_number() OVER (PARTITION BY n.event_id ORDER BY n.subscription_id) = 1 AS first
            FROM numbered n
            WHERE NOT n.blocked
        )
        SELECT n.subscription_id, n.delivery_id, s.url, s.secret, s.breaker_state = 'closed' AND s.breaker_failures = 0 AS breaker_untouched,
               w.through AS walked_through, n.event_id, n.feed_position, e.*
        FROM sent n
        JOIN walks w ON w.subscription_id = n.subscription_id
        JOIN webhook_subscriptions s ON s.subscription_id = n.subscription_id
        LEFT JOIN LATERAL (SELECT \(EventSQL.jobColumns) FROM ci_job_state_events x WHERE x.event_id = n.event_id AND n.first OFFSET 0) e ON true
        ORDER BY n.subscription_id, n.feed_position
        """

    /// Lapsed walks into pending deliveries, each with its cut-short first attempt; one row: `queued`.
    static let reclaim = """
        WITH lapsed AS (
            SELECT c.subscription_id, c.leased_at, c.walk_events, c.walk_deliveries, c.walked_through
            FROM webhook_cursors c
            WHERE c.leased_until <= now()
            FOR NO KEY UPDATE SKIP LOCKED
        ), queued AS (
            -- As in the walk, the cursor's lock keeps its subscription meanwhile.
            INSERT INTO webhook_deliveries (delivery_id, subscription_id, event_id, job_id, attempt_count, next_attempt_at, created_at)
            OVERRIDING SYSTEM VALUE
            SELECT u.delivery_id, l.subscription_id, u.event_id, e.job_id, 1, now(), l.leased_at
            FROM lapsed l
            CROSS JOIN LATERAL unnest(l.walk_deliveries, l.walk_events) AS u(delivery_id, event_id)
            JOIN ci_job_state_events e ON e.event_id = u.event_id
            ON CONFLICT DO NOTHING
            RETURNING delivery_id, created_at
        ), cut AS (
            INSERT INTO webhook_attempts (delivery_id, attempt, started_at, error)
            SELECT q.delivery_id, 1, q.created_at, \(WebhookSQL.abandonedAttemptError) FROM queued q
            ON CONFLICT (delivery_id, attempt) DO NOTHING
        ), moved AS (
            UPDATE webhook_cursors c
            SET position = greatest(c.position, l.walked_through), leased_until = NULL, leased_at = NULL, walk_token = NULL,
                walk_events = NULL, walk_deliveries = NULL, walked_through = NULL
            FROM lapsed l
            WHERE c.subscription_id = l.subscription_id
        )
        SELECT count(*)::int8 AS queued FROM queued
        """

    /// Moves walked cursors (`$2` of ``WebhookSQL/complete``: a JSON array of `subscription_id, token,
    /// through`) while that walk still holds the lease; a lapsed one was reclaimed by another replica.
    static let advance = """
        UPDATE webhook_cursors c
        SET \(released("a.through"))
        FROM jsonb_to_recordset($2::jsonb) AS a(subscription_id text, token bigint, through bigint)
        WHERE c.subscription_id = a.subscription_id AND c.walk_token = a.token
        """

    /// The `SET` list of a cursor `c` whose walk is recorded: moved to `through` (never back), its lease gone.
    /// `through` is a column of the statement, never a value spliced into its text: a statement is prepared
    /// once per connection by its text, and one whose text changed with every walk was parsed and planned
    /// again each time (its preparation cost more than running it).
    static func released(_ through: String) -> String {
        """
        position = greatest(c.position, \(through)), leased_until = NULL, leased_at = NULL, walk_token = NULL,
            walk_events = NULL, walk_deliveries = NULL, walked_through = NULL
        """
    }
}
