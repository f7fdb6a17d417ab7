import CIModel
import Foundation
import PostgresLibPQ
import Testing

@testable import JobStore

/// The plans PostgreSQL chooses for every listing the API can send: index scans, never a sequential scan
/// of a table that grows with traffic and never a sort of all of it.
///
/// The plans are genuine: the schema holds 20,000 jobs (and a history of 2,000 callbacks among 22,000
/// events), enough that a sequential scan costs more than an index scan, and fewer than ANALYZE's sample
/// of 30,000 rows, so the statistics, and therefore the plans, are the same on every run.
@Suite("List plans")
struct ListPlanTests {
    static let jobs = 20_000
    static let historyCallbacks = 2_000
    static let tables: Set<String> = ["ci_jobs", "ci_callbacks", "ci_job_events"]

    @Test func listPlans_everyFilterCombination_usesIndexes_andSortsNoWholeTable() async throws {
        try await Self.withLoadedSchema { service in
            let store = service.store
            let cursor = JobListCursor(firstReceivedMicros: Int64(Date().timeIntervalSince1970 * 1e6) - 20 * 86_400_000_000, jobID: "jx")
            for (bits, query) in Self.shapes(cursor: cursor).enumerated() {
                let plan = try await Self.explain(JobListSQL.query(query), on: service)
                Self.expectIndexOnly(plan, shape: "list shape \(bits) \(query)")
            }
            // State and tag together, with or without more filters, seek the index of both (0015) at any
            // page, walking it in list order or (few rows expected, as here with queueId too) as one of the
            // bitmaps intersected: a rare pair read through one filter's index reads and drops a row for
            // each job it skips.
            for (bits, query) in Self.shapes(cursor: cursor).enumerated() where bits & 3 == 3 {
                let plan = try await Self.explain(JobListSQL.query(query), on: service)
                let indexes = Self.nodes(plan).compactMap(\.index)
                #expect(indexes.contains("ci_jobs_state_tag_idx"), "list shape \(bits) \(query): \(Self.nodes(plan).map { ($0.type, $0.index) })")
            }
            // The store runs the same statements: a page of each answers.
            let page = try await store.jobs(JobListQuery(state: .failed, tag: "Transcode", limit: 5))
            #expect(page.jobs.count == 5)
            #expect(page.jobs.allSatisfy { $0.state == .failed && $0.tag == "Transcode" })
        }
    }

    @Test func historyPlans_firstAndLaterPages_walkTheEventKey() async throws {
        try await Self.withLoadedSchema { service in
            let middle = try await service.query(
                "SELECT callback_id FROM ci_job_events WHERE job_id = 'jhistory' ORDER BY callback_id OFFSET 1000 LIMIT 1")
            let cursor = CallbackHistoryCursor(callbackID: Int64(try #require(middle.first?["callback_id"].int)))
            for page in [CallbackHistoryQuery(), CallbackHistoryQuery(limit: 1000, cursor: cursor)] {
                let plan = try await Self.explain(CallbackHistorySQL.query(jobID: "jhistory", page: page), on: service)
                Self.expectIndexOnly(plan, shape: "history \(page)")
                // ci_job_events is partitioned: across partitions the planner may sort the page's events
                // (taken from the event key's index), but the joins to bodies and digests run for the page only.
                for sort in Self.nodes(plan) where sort.type == "Sort" {
                    // What the sort reads, without the CTE the plan hangs below it (computed once, not sorted).
                    let below = Self.inputs(sort)
                    let joins = below.contains { $0.type.hasSuffix("Join") || $0.type == "Nested Loop" }
                    let readsEvents = below.contains { $0.relation.flatMap(Self.table(of:)) == "ci_job_events" }
                    #expect(!(joins && readsEvents), "a sort of joined events: \(plan)")
                }
            }
            let known = try await Self.explain(CallbackHistorySQL.known(jobID: "jhistory"), on: service)
            Self.expectIndexOnly(known, shape: "history existence")
        }
    }

    // MARK: Shapes and plans

    /// Every combination of the six list filters (bit 0 state … bit 5 cursor), with values the data holds.
    static func shapes(cursor: JobListCursor) -> [JobListQuery] {
        let now = Date()
        return (0..<64).map { bits in
            JobListQuery(
                state: bits & 1 != 0 ? .failed : nil,
                tag: bits & 2 != 0 ? "Transcode" : nil,
                queueID: bits & 4 != 0 ? "p03" : nil,
                since: bits & 8 != 0 ? now - 50 * 86_400 : nil,
                until: bits & 16 != 0 ? now - 5 * 86_400 : nil,
                limit: 20,
                cursor: bits & 32 != 0 ? cursor : nil)
        }
    }

    struct Node {
        var type: String
        /// `InitPlan` for a CTE or subquery computed once, `Outer`/`Inner`/`Member` for a node's inputs.
        var parentRelationship: String?
        var relation: String?
        /// The index an index scan reads.
        var index: String?
        var rows: Double
        var children: [Node]
    }

    /// `EXPLAIN (FORMAT JSON)` without ANALYZE, of the statement exactly as the store sends it (same
    /// parameters, so the same custom plan).
    static func explain(_ query: SQLQuery, on service: ServiceHarness) async throws -> Node {
        let rows = try await service.query(SQLQuery(unsafeSQL: "EXPLAIN (FORMAT JSON) " + query.sql, binds: query.binds))
        let text = try #require(rows.first?[0].string)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
        return try node(try #require(document.first?["Plan"] as? [String: Any]))
    }

    static func node(_ plan: [String: Any]) throws -> Node {
        Node(
            type: try #require(plan["Node Type"] as? String),
            parentRelationship: plan["Parent Relationship"] as? String,
            relation: plan["Relation Name"] as? String,
            index: plan["Index Name"] as? String,
            rows: (plan["Plan Rows"] as? NSNumber)?.doubleValue ?? 0,
            children: try ((plan["Plans"] as? [[String: Any]]) ?? []).map(node))
    }

    static func nodes(_ root: Node) -> [Node] {
        [root] + root.children.flatMap(nodes)
    }

    /// `root` and the nodes feeding its rows, leaving out init plans (CTEs, one-off subqueries).
    static func inputs(_ root: Node) -> [Node] {
        [root] + root.children.filter { $0.parentRelationship != "InitPlan" }.flatMap(inputs)
    }

    /// The table a relation of the plan belongs to: itself, or the partitioned table of a partition
    /// (`ci_callbacks_legacy`, `ci_job_events_p202612`); nil for other relations.
    static func table(of relation: String) -> String? {
        if tables.contains(relation) { return relation }
        for table in tables where relation.hasPrefix(table + "_") {
            let suffix = relation.dropFirst(table.count + 1)
            if suffix == "legacy" || (suffix.hasPrefix("p") && suffix.dropFirst().allSatisfy(\.isNumber)) { return table }
        }
        return nil
    }

    /// No sequential scan of the growing tables, and a sort only of rows an index already narrowed to a
    /// small share of the table (a bitmap of several filters' indexes), never of the whole table.
    static func expectIndexOnly(_ plan: Node, shape: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for node in nodes(plan) {
            // A partition counts as its table; an empty one (the planner's estimate of 1 row) may be scanned.
            if let relation = node.relation, let table = table(of: relation), !(relation != table && node.rows <= 1) {
                #expect(node.type != "Seq Scan", "\(shape): sequential scan of \(relation) (\(table))", sourceLocation: sourceLocation)
            }
            if node.type == "Sort" || node.type == "Incremental Sort" {
                let input = node.children.map(\.rows).reduce(0, +)
                #expect(input <= Double(jobs) / 20, "\(shape): sorts \(input) rows", sourceLocation: sourceLocation)
            }
        }
    }

    // MARK: Data

    /// A migrated schema holding `jobs` jobs shaped like production (Benchmarks/lists.py loads the same
    /// shape at millions), one event and callback per job, and the job `jhistory` with a long history.
    static func withLoadedSchema(_ body: (ServiceHarness) async throws -> Void) async throws {
        // Loading 22,000 rows and ANALYZE may take longer than the service's statement timeout on a busy machine.
        var unbounded = PostgresConnectionSettings()
        unbounded.statementTimeout = .zero
        // Several plan suites load at once on a loaded 2-core machine: one INSERT may take longer than 8 s.
        unbounded.ioTimeout = .seconds(120)
        try await ServiceHarness.with(connection: unbounded) { service in
            _ = try await service.query(
                """
                INSERT INTO ci_callbacks (body_sha256, body, body_size, format, content_type, outcome, source, job_count, received_at)
                SELECT sha256(convert_to('plan-' || i, 'UTF8')), convert_to('{"i":' || i || '}', 'UTF8'), 10, 'JSON', 'application/json',
                       'accepted', 'callback', 1, now() - interval '60 days' * (1 - i::float8 / \(jobs + historyCallbacks))
                FROM generate_series(1, \(jobs + historyCallbacks)) AS i
                """)
            _ = try await service.query(
                """
                INSERT INTO ci_jobs (job_id, state, state_rank, is_final, tag, queue_id, has_watermark, detail, state_callback_id, state_source,
                                     first_received_at, last_received_at, state_changed_at, callback_count)
                SELECT 'j' || lpad(i::text, 8, '0'),
                       CASE WHEN i % 100 < 85 THEN 'Success' WHEN i % 100 < 93 THEN 'Failed' WHEN i % 100 < 96 THEN 'Running'
                            WHEN i % 100 < 98 THEN 'Submitted' WHEN i % 100 < 99 THEN 'Cancel' ELSE 'Pause' END,
                       3, true,
                       CASE WHEN abs(hashint8(i)) % 100 < 90 THEN 'ExtractDigitalWatermark' WHEN abs(hashint8(i)) % 100 < 96 THEN 'Transcode'
                            WHEN abs(hashint8(i)) % 100 < 99 THEN 'Snapshot' ELSE 'Animation' END,
                       'p' || lpad((abs(hashint8(i + 1000000007)) % 16)::text, 2, '0'),
                       true, jsonb_build_object('JobId', 'j' || i), c.callback_id, 'callback', c.received_at, c.received_at, c.received_at, 1
                FROM generate_series(1::bigint, \(jobs)) AS i JOIN ci_callbacks c ON c.body_sha256 = sha256(convert_to('plan-' || i, 'UTF8'))
                """)
            _ = try await service.query(
                """
                INSERT INTO ci_job_events (job_id, callback_id, state, applied, received_at)
                SELECT j.job_id, j.state_callback_id, j.state, true, j.first_received_at FROM ci_jobs j
                UNION ALL
                SELECT 'jhistory', c.callback_id, 'Running', false, c.received_at
                FROM ci_callbacks c WHERE c.callback_id NOT IN (SELECT state_callback_id FROM ci_jobs)
                """)
            _ = try await service.query("ANALYZE ci_callbacks")
            _ = try await service.query("ANALYZE ci_jobs")
            _ = try await service.query("ANALYZE ci_job_events")
            try await body(service)
        }
    }
}
