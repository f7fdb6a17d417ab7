import CIModel
import Foundation
import PostgresLibPQ

/// One applied change of a job's state (migration 0008's outbox row), with the job as
/// `GET /v1/jobs/{JobId}` showed it at that state.
public struct JobStateEvent: Sendable, Hashable {
    /// The outbox row's id: the `webhook-id` of every delivery of this event (`evt_<id>`).
    public var eventID: Int64
    /// Where the event sits in the feed; nil until the sequencer has positioned it.
    public var feedPosition: Int64?
    /// The job at that state, decoded exactly as a lookup decodes `ci_jobs`.
    public var job: StoredJob

    /// The id consumers see (`webhook-id`, the feed's `id`).
    public var publicID: String { "evt_\(eventID)" }
    /// When the state changed: the event's `timestamp`.
    public var timestamp: String { job.stateChangedAt }
}

/// Where a reader of `GET /v1/events` stands: the feed position of the last event it read (0 before the
/// first). Opaque to clients: base64url text.
public struct EventFeedCursor: Sendable, Hashable {
    public var position: Int64

    public init(position: Int64) {
        self.position = position
    }

    /// `base64url("e:<position>")`.
    public var token: String { Base64URL.encode("e:\(position)") }

    /// Parses a token made by `token`; nil for anything else.
    public init?(token: String) {
        guard let text = Base64URL.decode(token), text.hasPrefix("e:"), let position = Int64(text.dropFirst(2)), position >= 0 else { return nil }
        self.init(position: position)
    }
}

/// A feed cursor that points below what retention kept: events after it were deleted, so following it
/// would skip them. The reader must start again without a cursor (from ``horizon``) and accept the gap.
public struct EventFeedCursorExpired: Error, Sendable, Hashable {
    /// The cursor asked for.
    public var cursor: EventFeedCursor
    /// The highest position retention deleted: the oldest cursor still served.
    public var horizon: EventFeedCursor
}

/// One page of the event feed.
public struct EventFeedPage: Sendable, Hashable {
    public var events: [JobStateEvent]
    /// Where the next page starts: after the last event here, or where the request started when empty.
    public var nextCursor: EventFeedCursor
}

/// What one sequencer round did.
public struct SequencerRound: Sendable, Hashable {
    /// Events given a feed position.
    public var sequenced: Int
    /// Whether the round reached the newest event its snapshot showed; false when its limit cut it short,
    /// and the next round should follow at once.
    public var caughtUp: Bool
}

extension JobStore {
    /// Channel a sequencer round notifies after it positioned events (feed waits and delivery workers listen).
    public static let sequencedEventsChannel = "ci_job_events"

    /// Most events one sequencer round walks through (besides the stragglers it looks back at); a backlog
    /// takes several rounds.
    public static let sequencerRoundLimit = 1000

    /// Gives every committed, unpositioned event a feed position, above all earlier ones, in `event_id`
    /// order (the delivery worker walks the feed for the subscriptions): one transaction, serialised
    /// across replicas by an advisory lock (keyed by schema, so schemas of one database do not wait for
    /// each other).
    ///
    /// Why this is exactly once for feed readers: a round runs after the lock is granted, so its snapshot
    /// sees every earlier round's commit and numbers upwards from their highest position; rows whose
    /// transaction has not committed are invisible to it and get a later round's, higher, position. A reader
    /// therefore never finds a position below one it already read appear later. Rolled-back rows never
    /// become visible and take no position.
    ///
    /// Which rows a round looks at (migration 0017): every round that saw an event remembers its snapshot
    /// and the highest event_id it walked through. Every event at or below that id has a position or was
    /// invisible to the snapshot, its writer running then (the snapshot's list) or begun later (at or above
    /// its xmax). So the next round positions those stragglers, found by writer, and walks on in event_id
    /// order above that id for at most `limit` events. Its work is bounded by the limit and by the writers of
    /// one interval, however large the backlog.
    public func sequenceEvents(limit: Int = JobStore.sequencerRoundLimit) async throws -> SequencerRound {
        try await withConnection { connection in
            try connection.transaction { connection in
                try connection.query(EventSQL.beginRound)
                // Read first and bound as values, so that the round's statement is planned for them: with the
                // snapshot read inside it, the planner must guess at `writer_xid >= $xmax` and scans the table.
                guard let lastRound = try connection.query(EventSQL.lastRound).first else {
                    throw JobStoreError("ci_event_sequencer has no row: the schema is not at migration 0012")
                }
                let last = StrictRow(lastRound, read: "sequencer's last round")
                let row = StrictRow(
                    try connection.query(
                        SQLQuery(
                            unsafeSQL: EventSQL.sequence,
                            binds: [
                                .text(String(max(limit, 1))), .text(try last.string("xmax")), .text(try last.string("running")),
                                .text(String(try last.int64("walked_through"))),
                            ])
                    )[0], read: "sequencer round")
                let round = SequencerRound(
                    sequenced: try row.int("sequenced"), caughtUp: try row.int("walked") < max(limit, 1))
                if round.sequenced > 0 {
                    // Delivered after COMMIT, like every NOTIFY: feed waits and delivery workers then read it.
                    try connection.query("SELECT pg_notify(\(Self.sequencedEventsChannel), '')")
                }
                return round
            }
        }
    }

    /// Events after `cursor` in feed order, at most `limit`; without a cursor, from the oldest retained event.
    ///
    /// Retention deletes old events and records the highest position it deleted (the horizon, migration
    /// 0011); the feed holds the positions above it. A cursor below the horizon has missed deleted events:
    /// that throws ``EventFeedCursorExpired`` rather than silently skipping them. The horizon and the page
    /// are read by one statement, so they agree.
    public func events(after cursor: EventFeedCursor?, limit: Int) async throws -> EventFeedPage {
        let asked = cursor?.position ?? 0
        let rows = try await withConnection { connection in
            try connection.query(
                """
                WITH horizon AS (SELECT pruned_through FROM ci_event_feed_horizon)
                SELECT h.pruned_through, e.event_id, e.feed_position, \(unsafeRaw: EventSQL.jobColumns)
                FROM horizon h
                LEFT JOIN LATERAL (
                    SELECT f.feed_position, e.*
                    FROM ci_event_feed f
                    JOIN ci_job_state_events e ON e.event_id = f.event_id
                    WHERE f.feed_position > greatest(\(asked)::bigint, h.pruned_through)
                    ORDER BY f.feed_position
                    LIMIT \(max(limit, 1))
                ) e ON true
                ORDER BY e.feed_position
                """)
        }
        guard let first = rows.first else {
            throw JobStoreError("ci_event_feed_horizon has no row: the schema is not at migration 0011")
        }
        let horizon = try StrictRow(first, read: "event feed horizon").int64("pruned_through")
        if let cursor, cursor.position < horizon {
            throw EventFeedCursorExpired(cursor: cursor, horizon: EventFeedCursor(position: horizon))
        }
        // Without events the lateral join leaves one row of NULLs: only the horizon.
        let events = try rows.filter { !$0["event_id"].isNull }.map { row throws(StoredRowError) in try Self.stateEvent(StrictRow(row, read: "event feed")) }
        return EventFeedPage(events: events, nextCursor: EventFeedCursor(position: events.last?.feedPosition ?? max(asked, horizon)))
    }

    /// A row of `event_id, feed_position` plus ``EventSQL/jobColumns``.
    static func stateEvent(_ row: StrictRow) throws(StoredRowError) -> JobStateEvent {
        JobStateEvent(eventID: try row.int64("event_id"), feedPosition: try row.optionalInt("feed_position").map(Int64.init), job: try storedJob(row))
    }
}

/// The event statements.
enum EventSQL {
    /// An event row's job under the names ``JobStore/storedJob(_:)`` reads, so an event decodes exactly as
    /// the lookup of that job did at that state.
    static let jobColumns = JobStore.jobColumns

    /// Takes the sequencer's lock for the transaction (one round at a time across replicas), and turns
    /// sequential scans off for it. Every table a round reads grows without end, and each part of the round
    /// has one right plan, an index range bounded by its limit or by the writers of one interval; the
    /// planner picks it from statistics, which lag behind a bulk load or an upgrade until autovacuum
    /// analyses the table. With none, it scanned all 5 M events for the stragglers (1.3 s a round), and in
    /// `OutboxPlanTests` all 20,000 for the walk too.
    static let beginRound: SQLQuery = """
        SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.ci_job_state_events')),
               set_config('enable_seqscan', 'off', true)
        """

    /// The last round that saw an event: its snapshot's `xmax` (`0` before the first such round) and the
    /// writers it saw `running`, as the text of an `xid8[]`, and the event_id it `walked_through`.
    static let lastRound: SQLQuery = """
        SELECT coalesce(pg_snapshot_xmax(last_round), '0'::xid8)::text AS xmax,
               ARRAY(SELECT pg_snapshot_xip(last_round))::text AS running,
               walked_through
        FROM ci_event_sequencer
        """

    /// `$1` the round's limit, `$2`, `$3` and `$4` the ``lastRound``. Returns one row: `sequenced` and how many
    /// events the round `walked` (the limit when it was cut short). Every CTE reads the
    /// statement's one snapshot, the one `pg_current_snapshot()` stores for the next round.
    static let sequence = """
        WITH base AS (
            -- Above the horizon too: retention may have deleted every positioned event, the top one included.
            SELECT greatest(coalesce((SELECT max(feed_position) FROM ci_event_feed), 0),
                            (SELECT pruned_through FROM ci_event_feed_horizon)) AS top
        ), walk AS (
            -- The next events this snapshot sees above the last round's walk: one index range, read up to the limit.
            SELECT e.event_id, e.job_id, e.state, e.tag
            FROM ci_job_state_events e
            WHERE e.event_id > $4::bigint
            ORDER BY e.event_id
            LIMIT $1::integer
        ), stragglers AS (
            -- Events the last round walked past unseen: their writers were running then, or began later
            -- (one that took its event_id before its transaction id). The writers of one interval, read
            -- through the writer index; OFFSET 0 keeps the event_id bound out of the scan, where the
            -- planner, without statistics, read the primary key's range up to it instead: every event.
            -- Before any walk (walked_through 0, and no snapshot: xmax 0 matches every writer) there are
            -- none, and the scan is not run.
            SELECT w.event_id, w.job_id, w.state, w.tag
            FROM (
                SELECT e.event_id, e.job_id, e.state, e.tag
                FROM ci_job_state_events e
                WHERE (e.writer_xid = ANY ($3::xid8[]) OR e.writer_xid >= $2::xid8) AND $4::bigint > 0
                OFFSET 0
            ) w
            WHERE w.event_id <= $4::bigint
        ), todo AS (
            -- Both sets hold only unpositioned events while walked_through keeps its promise; the probe of
            -- ci_event_feed's event_id index (a subplan: written as NOT EXISTS, the planner may hash the
            -- whole feed table) keeps a round from positioning an event twice if it ever did not, as after
            -- an upgrade without a complete round (0017), when the walk starts from the first event.
            SELECT c.event_id, c.job_id, c.state, c.tag, row_number() OVER (ORDER BY c.event_id) AS n
            FROM (SELECT * FROM stragglers UNION ALL SELECT * FROM walk) c
            WHERE (SELECT f.feed_position FROM ci_event_feed f WHERE f.event_id = c.event_id) IS NULL
        ), positioned AS (
            INSERT INTO ci_event_feed (feed_position, event_id)
            SELECT base.top + todo.n, todo.event_id FROM todo, base
        ), remembered AS (
            -- Only when the round saw an event: an idle sequencer writes nothing (and takes no transaction id)
            -- however often it runs, and its last snapshot still covers every writer since.
            UPDATE ci_event_sequencer
            SET last_round = pg_current_snapshot(), walked_through = coalesce((SELECT max(event_id) FROM walk), $4::bigint)
            WHERE EXISTS (SELECT 1 FROM walk) OR EXISTS (SELECT 1 FROM stragglers)
        )
        SELECT (SELECT count(*) FROM todo) AS sequenced, (SELECT count(*) FROM walk) AS walked
        """
}
