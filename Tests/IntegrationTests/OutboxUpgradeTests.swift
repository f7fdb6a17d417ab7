import CallbackService
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

@Suite("Outbox upgrade")
struct OutboxUpgradeTests {
    /// Migration 0012 moves feed positions out of the event rows into `ci_event_feed`. A database upgraded
    /// from 0011 keeps every position (a consumer's cursor points at one), and the events the old sequencer
    /// had not reached yet are positioned after them, each once, as are the events written after the upgrade.
    @Test func outboxUpgrade_PositionedEventsKeepTheirPlace_UnpositionedOnesFollowOnce() async throws {
        let schema = "t_" + RequestIDForTests.random()
        let admin = try PostgresConnection.connect(testDatabaseURL)
        try admin.execute(simpleSQL: "CREATE SCHEMA \(schema)")
        admin.close()
        let latest = try MigrationSet.embedded()
        let before = try MigrationSet(migrations: latest.migrations.filter { $0.version <= 11 })
        let service = try await ServiceHarness.start(schema: schema, migrate: false)
        do {
            _ = try await service.pool.withConnection { connection in try Migrator(migrations: before, logger: serviceTestLogger).migrate(connection) }
            let jobs = (0..<4).map { _ in RequestIDForTests.jobID() }
            for jobID in jobs {
                #expect(try await service.post("/v1/callbacks", EventService.callback(jobID, state: "Running")).status == 200)
            }
            // The 0011 sequencer had positioned the first three.
            _ = try await service.query(
                "UPDATE ci_job_state_events SET feed_position = event_id + 100 WHERE event_id IN (SELECT event_id FROM ci_job_state_events ORDER BY event_id LIMIT 3)")
            let positioned = try await service.query("SELECT event_id + 100 AS position FROM ci_job_state_events ORDER BY event_id LIMIT 3").compactMap { $0["position"].int }

            _ = try await service.pool.withConnection { connection in try Migrator(migrations: latest, logger: serviceTestLogger).migrate(connection) }
            let upgraded = try await service.store.events(after: nil, limit: 100)
            #expect(upgraded.events.compactMap(\.feedPosition).map(Int.init) == positioned)
            #expect(upgraded.events.map(\.job.jobID) == Array(jobs.prefix(3)))

            #expect(try await service.store.sequenceEvents().sequenced == 1)
            let later = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks", EventService.callback(later, state: "Running")).status == 200)
            #expect(try await service.store.sequenceEvents().sequenced == 1)
            #expect(try await service.store.sequenceEvents().sequenced == 0)

            let rest = try await service.store.events(after: upgraded.nextCursor, limit: 100)
            #expect(rest.events.map(\.job.jobID) == [jobs[3], later])
            #expect(rest.events.compactMap(\.feedPosition).map(Int.init) == [positioned[2] + 1, positioned[2] + 2])
        } catch {
            await service.stop()
            try? service.dropSchema()
            throw error
        }
        await service.stop()
        try? service.dropSchema()
    }
}
