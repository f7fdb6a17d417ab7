import Foundation
import PostgresLibPQ
import Testing

@testable import JobStore

/// The plan of the sequencer's round (``EventSQL/sequence``): its cost must not grow with the number of
/// events ever positioned. A round looks at a few candidate events and asks, for each, whether it already
/// has a feed position; answered by hashing the whole of `ci_event_feed` instead, every round read every
/// position, and at 7,500 events a round already took 2.7 ms, a sixth of the ingest statements' database
/// time (pg_stat_statements, during Benchmarks/ingest.lua).
@Suite("Event sequencer plan")
struct EventSequencerPlanTests {
    static let events = 20_000

    /// Statistics lag behind a table that grows all day (autovacuum analyses it now and then); with none
    /// at all, the planner guesses a third of the events are candidates, which is when it preferred
    /// hashing the feed table.
    @Test func sequencerRound_ManyPositionedEventsAndStaleStatistics_ProbesTheFeedIndexPerCandidate() async throws {
        var unbounded = PostgresConnectionSettings()
        unbounded.statementTimeout = .zero
        unbounded.ioTimeout = .seconds(120)
        try await ServiceHarness.with(connection: unbounded) { service in
            _ = try await service.query("ALTER TABLE ci_job_state_events SET (autovacuum_enabled = off)")
            _ = try await service.query("ALTER TABLE ci_event_feed SET (autovacuum_enabled = off)")
            _ = try await service.query(
                """
                INSERT INTO ci_job_state_events (job_id, state, detail, has_watermark, first_received_at, last_received_at,
                                                 state_changed_at, callback_count, state_source)
                SELECT 'j' || i, 'Success', '{}'::jsonb, false, now(), now(), now(), 1, 'callback'
                FROM generate_series(1, \(Self.events)) AS i
                """)
            // Positioned as the sequencer positions them, in rounds.
            while try await service.store.sequenceEvents().sequenced > 0 {}
            let positioned = try await service.query("SELECT count(*)::int8 FROM ci_event_feed")
            #expect(positioned.first?[0].string == String(Self.events))

            let last = try #require(try await service.query(EventSQL.lastRound).first)
            let round = SQLQuery(
                unsafeSQL: EventSQL.sequence,
                binds: [.text(String(JobStore.sequencerRoundLimit)), .text(try #require(last[0].string)), .text(try #require(last[1].string))])
            let plan = try await ListPlanTests.explain(round, on: service)
            let feedScans = ListPlanTests.nodes(plan).filter { $0.relation == "ci_event_feed" }
            #expect(!feedScans.isEmpty)
            for scan in feedScans where scan.type == "Seq Scan" {
                Issue.record("the round scans all of ci_event_feed (\(Self.events) positions): \(scan.type), parent \(scan.parentRelationship ?? "-")")
            }
        }
    }
}
