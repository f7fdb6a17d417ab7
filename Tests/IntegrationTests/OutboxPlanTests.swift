import Foundation
import PostgresLibPQ
import Testing

@testable import JobStore

/// The plans of the outbox's two hot statements, which run many times a second under load: their cost
/// must not grow with the number of events ever positioned, or with the deliveries waiting.
///
/// The sequencer's round (``EventSQL/sequence``): its cost must not grow with the number of
/// events ever positioned. A round looks at a few candidate events and asks, for each, whether it already
/// has a feed position; answered by hashing the whole of `ci_event_feed` instead, every round read every
/// position, and at 7,500 events a round already took 2.7 ms, a sixth of the ingest statements' database
/// time (pg_stat_statements, during Benchmarks/ingest.lua).
@Suite("Outbox plans")
struct OutboxPlanTests {
    static let events = 20_000

    /// Loading 20,000 rows may take longer than the service's statement timeout on a busy machine.
    static let unbounded: PostgresConnectionSettings = {
        var settings = PostgresConnectionSettings()
        settings.statementTimeout = .zero
        settings.ioTimeout = .seconds(120)
        return settings
    }()

    /// Statistics lag behind a table that grows all day (autovacuum analyses it now and then); with none
    /// at all, the planner guesses a third of the events are candidates, which is when it preferred
    /// hashing the feed table, and, once rounds looked back at stragglers by writer, scanning every event
    /// for them (1.3 s a round at 5 M events, after an upgrade, until autovacuum analysed the table).
    @Test func sequencerRound_ManyPositionedEventsAndStaleStatistics_ProbesTheFeedIndexPerCandidate() async throws {
        try await ServiceHarness.with(connection: Self.unbounded) { service in
            _ = try await service.query("ALTER TABLE ci_job_state_events SET (autovacuum_enabled = off)")
            _ = try await service.query("ALTER TABLE ci_event_feed SET (autovacuum_enabled = off)")
            _ = try await service.query(Self.loadEvents(Self.events))
            // Positioned as the sequencer positions them, in rounds.
            while try await !service.store.sequenceEvents().caughtUp {}
            let positioned = try await service.query("SELECT count(*)::int8 FROM ci_event_feed")
            #expect(positioned.first?[0].string == String(Self.events))

            // A few new events, so the round has candidates to probe.
            _ = try await service.query(Self.loadEvents(3))
            let round = try await Self.nextRound(limit: JobStore.sequencerRoundLimit, on: service)
            let plan = try await Self.explainRound(round, on: service)
            let scans = Self.scans(plan)
            #expect(scans.contains { $0.relation == "ci_event_feed" })
            for scan in scans where scan.type == "Seq Scan" && ["ci_event_feed", "ci_job_state_events"].contains(scan.relation) {
                Issue.record("the round scans all of \(scan.relation ?? "?") (\(Self.events) rows)")
            }
            let read = Self.rowsRead(plan, from: "ci_job_state_events")
            #expect(read <= 10, "the round read \(read) event rows to find 3 new events: \(scans)")
        }
    }

    /// A backlog far larger than a round (a bulk load, or events written while no sequencer ran): each round
    /// reads about one round's worth of events, however many earlier rounds positioned. A round cut short
    /// used to keep the last complete round's snapshot and ask of every event since, in order, whether it
    /// already had a position: with 5 million events every round hit statement_timeout and the feed stayed
    /// empty.
    @Test func sequencerRound_DeepIntoALargeBacklog_ReadsAboutOneRoundOfEvents() async throws {
        try await ServiceHarness.with(connection: Self.unbounded) { service in
            // A complete round before the backlog, as in a service that ran before the bulk load.
            _ = try await service.query(Self.loadEvents(1))
            #expect(try await service.store.sequenceEvents().caughtUp)
            _ = try await service.query(Self.loadEvents(Self.events))
            _ = try await service.query("ANALYZE ci_job_state_events")
            let limit = 500
            for _ in 0..<10 {
                let round = try await service.store.sequenceEvents(limit: limit)
                #expect(round.sequenced == limit)
                #expect(!round.caughtUp)
            }

            let round = try await Self.nextRound(limit: limit, on: service)
            let plan = try await Self.explainRound(round, on: service)
            let events = Self.rowsRead(plan, from: "ci_job_state_events")
            let probes = Self.rowsRead(plan, from: "ci_event_feed", loops: true)
            #expect(events <= Double(2 * limit), "the 11th round read \(events) event rows for a round of \(limit)")
            #expect(probes <= Double(2 * limit), "the 11th round probed the feed \(probes) times for a round of \(limit)")

            // Every event is positioned once, in event_id order.
            while try await !service.store.sequenceEvents(limit: limit).caughtUp {}
            let feed = try await service.query(
                """
                SELECT count(*)::int8 AS n, count(DISTINCT event_id)::int8 AS events,
                       bool_and(event_id > coalesce(previous, 0)) AS ordered
                FROM (SELECT event_id, lag(event_id) OVER (ORDER BY feed_position) AS previous FROM ci_event_feed) f
                """)
            #expect(feed.first?["n"].string == String(Self.events + 1))
            #expect(feed.first?["events"].string == String(Self.events + 1))
            #expect(feed.first?["ordered"].string == "t")
        }
    }

    /// The first round of all, over a backlog (events written before any round, or a schema upgraded
    /// without a complete round: migration 0017 starts the walk at the first event). No round has walked
    /// past an event yet, so there are no stragglers to look back at: the round walks only.
    @Test func sequencerRound_FirstRoundOverALargeBacklog_ReadsAboutOneRoundOfEvents() async throws {
        try await ServiceHarness.with(connection: Self.unbounded) { service in
            _ = try await service.query(Self.loadEvents(Self.events))
            _ = try await service.query("ANALYZE ci_job_state_events")
            let limit = 500
            let plan = try await Self.explainRound(try await Self.nextRound(limit: limit, on: service), on: service)
            let events = Self.rowsRead(plan, from: "ci_job_state_events")
            #expect(events <= Double(2 * limit), "the first round read \(events) event rows for a round of \(limit)")
            #expect(try await service.query("SELECT count(*)::int8 FROM ci_event_feed").first?[0].string == String(limit))
        }
    }

    /// `count` Success events of distinct jobs, written directly (no callbacks), in one transaction.
    static func loadEvents(_ count: Int) -> SQLQuery {
        SQLQuery(
            unsafeSQL: """
                INSERT INTO ci_job_state_events (job_id, state, detail, has_watermark, first_received_at, last_received_at,
                                                 state_changed_at, callback_count, state_source)
                SELECT 'j' || i, 'Success', '{}'::jsonb, false, now(), now(), now(), 1, 'callback'
                FROM generate_series(1, \(count)) AS i
                """)
    }

    /// The next sequencer round's statement, exactly as ``JobStore/sequenceEvents(limit:)`` would send it.
    static func nextRound(limit: Int, on service: ServiceHarness) async throws -> SQLQuery {
        let last = try #require(try await service.query(EventSQL.lastRound).first)
        return SQLQuery(
            unsafeSQL: EventSQL.sequence,
            binds: [.text(String(limit)), .text(try #require(last["xmax"].string)), .text(try #require(last["running"].string)), .text(try #require(last["walked_through"].string))])
    }

    /// `EXPLAIN (ANALYZE, FORMAT JSON)` of a sequencer round, in a transaction begun as
    /// ``JobStore/sequenceEvents(limit:)`` begins its own (``EventSQL/beginRound``): runs it.
    static func explainRound(_ round: SQLQuery, on service: ServiceHarness) async throws -> [String: Any] {
        try await explainAnalyze(round, after: EventSQL.beginRound, on: service)
    }

    /// `EXPLAIN (ANALYZE, FORMAT JSON)` of `query`, in one transaction after `setup` when given: runs it.
    static func explainAnalyze(_ query: SQLQuery, after setup: SQLQuery? = nil, on service: ServiceHarness) async throws -> [String: Any] {
        let text = try await service.store.withConnection { connection in
            try connection.transaction { connection in
                if let setup { try connection.query(setup) }
                return try connection.query(SQLQuery(unsafeSQL: "EXPLAIN (ANALYZE, FORMAT JSON) " + query.sql, binds: query.binds)).first?[0].string
            }
        }
        let json = try #require(text)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
        return try #require(document.first?["Plan"] as? [String: Any])
    }

    /// Rows the scans of `relation` in an analysed plan read: returned or removed by a filter, in every loop;
    /// with `loops`, how many times they were run instead (one probe per loop).
    static func rowsRead(_ plan: [String: Any], from relation: String, loops: Bool = false) -> Double {
        let type = plan["Node Type"] as? String ?? ""
        var here = 0.0
        if plan["Relation Name"] as? String == relation && (type.contains("Scan") && type != "Bitmap Index Scan") {
            let number = { (key: String) in (plan[key] as? NSNumber)?.doubleValue ?? 0 }
            let count = max(number("Actual Loops"), 1)
            here = loops ? count : (number("Actual Rows") + number("Rows Removed by Filter") + number("Rows Removed by Index Recheck")) * count
        }
        return here + ((plan["Plans"] as? [[String: Any]]) ?? []).reduce(0) { $0 + rowsRead($1, from: relation, loops: loops) }
    }

    /// The delivery lease (``WebhookSQL/lease``) with thousands of deliveries waiting and no statistics:
    /// it reads the due index (in lease order, stopping at its limit, once statistics show many rows) and
    /// checks each row's job with one probe
    /// of the per-job index. As joins, the planner started from the subscriptions, sorted every pending row
    /// and checked each against all pending rows of its subscription: 34 s for one lease at 12,000
    /// pending (EXPLAIN ANALYZE, during Benchmarks/webhooks.py), which capped delivery at ~100/s.
    @Test func deliveryLease_ThousandsPendingAndNoStatistics_ReadsTheDueIndexAndProbesEachJobOnce() async throws {
        try await ServiceHarness.with(connection: Self.unbounded) { service in
            _ = try await service.query("ALTER TABLE webhook_deliveries SET (autovacuum_enabled = off)")
            _ = try await service.query(
                """
                INSERT INTO webhook_subscriptions (subscription_id, url, secret, created_at)
                SELECT 'sub' || n, 'http://127.0.0.1:9/' || n, 'whsec_AAAA', now() FROM generate_series(1, 2) AS n
                """)
            _ = try await service.query(
                """
                INSERT INTO webhook_deliveries (subscription_id, event_id, job_id, next_attempt_at, created_at)
                SELECT 'sub' || (1 + i % 2), i, 'j' || (i / 4), now() - interval '1 minute', now()
                FROM generate_series(1, \(Self.events)) AS i
                """)
            let lease = SQLQuery(unsafeSQL: WebhookSQL.lease, binds: [.text("16"), .text("30000")])
            let plan = try await Self.explain(lease, on: service)
            // A bitmap heap scan's index is its child's; the UPDATE's own node names no index.
            for scan in Self.scans(plan) where scan.relation == "webhook_deliveries" && !["ModifyTable", "Bitmap Heap Scan"].contains(scan.type) {
                #expect(scan.type != "Seq Scan", "the lease reads all of webhook_deliveries: \(scan)")
                #expect(
                    scan.index == "webhook_deliveries_due_idx" || scan.index == "webhook_deliveries_job_order_idx"
                        || scan.index == "webhook_deliveries_pkey",
                    "the lease reads webhook_deliveries through \(scan)")
            }
            for scan in Self.scans(plan) where scan.type == "Bitmap Index Scan" {
                #expect(scan.index == "webhook_deliveries_due_idx" || scan.index == "webhook_deliveries_job_order_idx", "\(scan)")
            }
            #expect(Self.scans(plan).contains { $0.index == "webhook_deliveries_job_order_idx" })
            #expect(!Self.scans(plan).contains { $0.type == "Sort" && $0.relation == nil && $0.rows > 1_000 })
        }
    }

    /// A walk of a subscription's cursor (``WebhookWalkSQL/walk``) deep in a large feed, with no
    /// statistics: the feed's primary key in order from the cursor, as far as its limit needs, and one
    /// probe of the events' (and the deliveries') per row, never a scan of any of the three tables. The
    /// first version hashed all 20,000 events.
    @Test func deliveryWalk_DeepInALargeFeedAndNoStatistics_ReadsAboutItsLimit() async throws {
        try await ServiceHarness.with(connection: Self.unbounded) { service in
            for table in ["ci_job_state_events", "ci_event_feed", "webhook_deliveries"] {
                _ = try await service.query(SQLQuery(unsafeSQL: "ALTER TABLE \(table) SET (autovacuum_enabled = off)"))
            }
            _ = try await service.query(Self.loadEvents(Self.events))
            _ = try await service.query(
                "INSERT INTO ci_event_feed (feed_position, event_id) SELECT row_number() OVER (ORDER BY event_id), event_id FROM ci_job_state_events")
            _ = try await service.query(
                """
                INSERT INTO webhook_subscriptions (subscription_id, url, secret, created_at) VALUES ('sub1', 'http://127.0.0.1:9/', 'whsec_AAAA', now())
                """)
            _ = try await service.query("INSERT INTO webhook_cursors (subscription_id, position) VALUES ('sub1', \(Self.events / 2))")
            // The deliveries of the events below the cursor, as the walks before wrote them.
            _ = try await service.query(
                """
                INSERT INTO webhook_deliveries (subscription_id, event_id, job_id, status, attempt_count, next_attempt_at, created_at, completed_at)
                SELECT 'sub1', event_id, job_id, 'succeeded', 1, now(), now(), now() FROM ci_job_state_events WHERE event_id <= \(Self.events / 2)
                """)
            let limit = 100
            let walk = SQLQuery(
                unsafeSQL: WebhookWalkSQL.walk, binds: [.text(String(limit)), .text("30000"), .text("1"), .text(String(JobStore.walkWindow)), .text("16")])
            let plan = try await Self.explainAnalyze(walk, on: service)
            let feed = Self.rowsRead(plan, from: "ci_event_feed")
            let events = Self.rowsRead(plan, from: "ci_job_state_events")
            // The feed is read in order, and no further than the limit needs for a subscription without
            // filters: a bitmap scan of the whole window then a sort was a third of the walk's time when
            // catching up (4,096 feed rows read for 128 sent).
            #expect(feed <= Double(limit + 2), "the walk read \(feed) feed rows for a limit of \(limit)")
            #expect(events <= Double(2 * limit), "the walk read \(events) event rows for a limit of \(limit)")
            let deliveries = Self.rowsRead(plan, from: "webhook_deliveries")
            #expect(deliveries <= Double(limit), "the walk read \(deliveries) delivery rows for a limit of \(limit)")
            let scanned = Self.scans(plan).filter {
                $0.type == "Seq Scan" && ["ci_event_feed", "ci_job_state_events", "webhook_deliveries"].contains($0.relation ?? "")
            }
            #expect(scanned.isEmpty, "\(scanned)")
        }
    }

    /// A subscription whose circuit breaker is open keeps its whole backlog pending and due (an outage
    /// of minutes under load: hundreds of thousands of rows). The lease must not step over it to reach
    /// the other subscriptions' deliveries, on every lease: it reads each admitted subscription's part
    /// of the due index only.
    @Test func deliveryLease_OpenBreakerOverLargeBacklog_ReadsOnlyAdmittedSubscriptions() async throws {
        try await ServiceHarness.with(connection: Self.unbounded) { service in
            _ = try await service.query(
                """
                INSERT INTO webhook_subscriptions (subscription_id, url, secret, created_at, breaker_state, breaker_next_probe_at)
                VALUES ('down', 'http://127.0.0.1:9/down', 'whsec_AAAA', now(), 'open', now() + interval '1 hour'),
                       ('up', 'http://127.0.0.1:9/up', 'whsec_AAAA', now(), 'closed', NULL)
                """)
            // The open subscription's deliveries are older: first in any walk of all due deliveries.
            _ = try await service.query(
                """
                INSERT INTO webhook_deliveries (subscription_id, event_id, job_id, next_attempt_at, created_at)
                SELECT CASE WHEN i <= \(Self.events) - 100 THEN 'down' ELSE 'up' END, i, 'j' || i, now() - interval '1 hour' + i * interval '1 ms', now()
                FROM generate_series(1, \(Self.events)) AS i
                """)
            _ = try await service.query("ANALYZE webhook_deliveries")
            let plan = try await Self.explainAnalyze(SQLQuery(unsafeSQL: WebhookSQL.lease, binds: [.text("16"), .text("30000")]), on: service)
            let read = Self.rowsRead(plan, from: "webhook_deliveries")
            #expect(read < 200, "the lease read \(read) delivery rows")
            let leased = try await service.query("SELECT subscription_id, count(*)::int8 FROM webhook_deliveries WHERE leased_until IS NOT NULL GROUP BY 1")
            #expect(leased.map { [$0[0].string, $0[1].string] } == [["up", "16"]])
        }
    }

    struct Scan: CustomStringConvertible {
        var type: String
        var relation: String?
        var index: String?
        var rows: Double
        var description: String { "\(type) on \(relation ?? "-") using \(index ?? "-")" }
    }

    /// Every node of `EXPLAIN (FORMAT JSON)` of `query`, flattened.
    static func explain(_ query: SQLQuery, on service: ServiceHarness) async throws -> [String: Any] {
        let rows = try await service.query(SQLQuery(unsafeSQL: "EXPLAIN (FORMAT JSON) " + query.sql, binds: query.binds))
        let text = try #require(rows.first?[0].string)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
        return try #require(document.first?["Plan"] as? [String: Any])
    }

    static func scans(_ plan: [String: Any]) -> [Scan] {
        let this = Scan(
            type: plan["Node Type"] as? String ?? "?", relation: plan["Relation Name"] as? String, index: plan["Index Name"] as? String,
            rows: (plan["Plan Rows"] as? NSNumber)?.doubleValue ?? 0)
        return [this] + ((plan["Plans"] as? [[String: Any]]) ?? []).flatMap(scans)
    }
}
