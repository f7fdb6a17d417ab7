import CallbackService
import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

/// A service with the event sequencer running beside it, as `ci-callbackd serve` runs it.
struct EventService {
    let service: ServiceHarness
    let store: JobStore
    private let sequencerTask: Task<Void, Never>

    /// - Parameters:
    ///   - configuration: The sequencer's; nil runs none, so that the test alone runs rounds.
    ///   - poolSize: The store's connections.
    static func with<T>(
        sequencer configuration: EventSequencerConfiguration? = EventSequencerConfiguration(), poolSize: Int = 4,
        _ body: (EventService) async throws -> T
    ) async throws -> T {
        let newEvents = WakeSignal()
        let service = try await ServiceHarness.start(stateEventSignal: newEvents, poolSize: poolSize)
        let store = service.store
        let sequencer = configuration.map {
            EventSequencer(store: store, signal: newEvents, configuration: $0, metrics: ServiceMetrics(), logger: serviceTestLogger)
        }
        let task = Task { _ = try? await sequencer?.run() }
        let events = EventService(service: service, store: store, sequencerTask: task)
        do {
            let result = try await body(events)
            await events.stop()
            return result
        } catch {
            await events.stop()
            throw error
        }
    }

    private func stop() async {
        sequencerTask.cancel()
        await sequencerTask.value
        await service.stop()
        try? service.dropSchema()
    }

    static func callback(_ jobID: String, state: String, tag: String = "ExtractDigitalWatermark", progress: Int? = nil) -> [UInt8] {
        let progressField = progress.map { #","Progress":"\#($0)""# } ?? ""
        return Array(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"\#(state)","Tag":"\#(tag)"\#(progressField)}}"#.utf8)
    }

    /// One page of the feed.
    func feed(after cursor: String? = nil, limit: Int = 1000, wait: String? = nil) async throws -> (events: [FeedEvent], next: String) {
        var query: [String] = ["limit=\(limit)"]
        if let cursor { query.append("after=\(cursor)") }
        if let wait { query.append("wait=\(wait)") }
        let reply = try await service.get("/v1/events?" + query.joined(separator: "&"))
        #expect(reply.status == 200, "\(reply.text)")
        let json = try reply.json()
        let events = try #require(json["Events"] as? [[String: Any]])
        return (try events.map(FeedEvent.init), try #require(json["NextCursor"] as? String))
    }
}

/// A feed entry or webhook body, as a consumer reads it.
struct FeedEvent: Sendable, Hashable {
    var id: String?
    var type: String?
    var timestamp: String?
    var jobID: String?
    var state: String?
    var stateChangedTime: String?
    /// `data` re-serialised with sorted keys, to compare with a lookup's body.
    var data: String

    init(_ object: [String: Any]) throws {
        id = object["id"] as? String
        type = object["type"] as? String
        timestamp = object["timestamp"] as? String
        let data = object["data"] as? [String: Any]
        jobID = (data?["JobsDetail"] as? [String: Any])?["JobId"] as? String
        state = (data?["JobsDetail"] as? [String: Any])?["State"] as? String
        stateChangedTime = (data?["Receipt"] as? [String: Any])?["StateChangedTime"] as? String
        self.data = String(decoding: try JSONSerialization.data(withJSONObject: data ?? [:], options: [.sortedKeys]), as: UTF8.self)
    }
}

@Suite("Event feed")
struct EventFeedTests {
    @Test func eventFeed_AppliedChanges_OneEventEach_DuplicatesStaleAndReReportedStatesNone() async throws {
        try await EventService.with { events in
            let jobID = RequestIDForTests.jobID()
            let post = { (body: [UInt8]) in try await events.service.post("/v1/callbacks", body).status }
            #expect(try await post(EventService.callback(jobID, state: "Running", progress: 10)) == 200)
            #expect(try await post(EventService.callback(jobID, state: "Running", progress: 10)) == 200)  // duplicate body
            #expect(try await post(EventService.callback(jobID, state: "Running", progress: 50)) == 200)  // re-reported state
            #expect(try await post(EventService.callback(jobID, state: "Success")) == 200)
            let lookup = try await events.service.get("/v1/jobs/\(jobID)")
            #expect(try await post(EventService.callback(jobID, state: "Running", progress: 70)) == 200)  // stale: Success stays
            try await events.store.sequenceEvents()

            let page = try await events.feed()
            #expect(page.events.map(\.state) == ["Running", "Success"])
            #expect(page.events.allSatisfy { $0.type == "job.state_changed" })
            // The Success event's data is exactly the lookup's body right after that change.
            let body = try JSONSerialization.data(withJSONObject: try lookup.json(), options: [.sortedKeys])
            #expect(page.events.last?.data == String(decoding: body, as: UTF8.self))
            #expect(page.events.last?.timestamp == page.events.last?.stateChangedTime)

            // Following the cursor from the end gives nothing more; a forged cursor is refused.
            #expect(try await events.feed(after: page.next).events.isEmpty)
            #expect(try await events.service.get("/v1/events?after=nonsense").status == 400)
            #expect(try await events.service.get("/v1/events?limit=0").status == 400)
            #expect(try await events.service.get("/v1/events?colour=red").status == 400)
        }
    }

    /// The sequence trap: a transaction that took its event id first but commits last must still be seen,
    /// once, after the events that committed before it.
    @Test func eventFeed_TransactionCommittingAfterALaterId_IsSeenOnceAfterwards() async throws {
        try await EventService.with { events in
            let early = RequestIDForTests.jobID()
            let late = RequestIDForTests.jobID()
            #expect(try await events.service.post("/v1/callbacks", EventService.callback(early, state: "Running")).status == 200)
            try await events.store.sequenceEvents()
            let start = try await events.feed()
            #expect(start.events.count == 1)

            // A writer takes the next event id and holds its transaction open...
            let writer = try PostgresConnection.connect(conninfo(testDatabaseURL, searchPath: events.service.schema))
            defer { writer.close() }
            try writer.execute(simpleSQL: "BEGIN")
            try writer.query("UPDATE ci_jobs SET state = 'Pause', detail = jsonb_set(detail, '{State}', '\"Pause\"') WHERE job_id = \(early)")
            // ...while another commits a change with a later id.
            #expect(try await events.service.post("/v1/callbacks", EventService.callback(late, state: "Running")).status == 200)
            try await events.store.sequenceEvents()
            let second = try await events.feed(after: start.next)
            #expect(second.events.map(\.jobID) == [late])

            try writer.execute(simpleSQL: "COMMIT")
            try await events.store.sequenceEvents()
            let third = try await events.feed(after: second.next)
            #expect(third.events.map(\.jobID) == [early])
            #expect(third.events.map(\.state) == ["Pause"])
            let ids = try await events.service.query("SELECT job_id, event_id FROM ci_job_state_events WHERE state <> 'Running' OR job_id = \(late)")
            let byJob = Dictionary(uniqueKeysWithValues: ids.map { ($0["job_id"].string ?? "", $0["event_id"].int ?? 0) })
            // The held-open writer did take the smaller id: paging by event id would have skipped it.
            #expect(try #require(byJob[early]) < (try #require(byJob[late])))
            #expect(try await events.feed(after: third.next).events.isEmpty)
        }
    }

    /// A round remembers its snapshot and the next looks only at writers that were running then or began
    /// later (migration 0012). Pins the two writers that rule must not miss: one that had no transaction id
    /// yet when a round ran (it takes one above that round's xmax), and one still running at a round that
    /// was cut short by its limit (the round keeps the older snapshot). Every event is positioned once.
    @Test func eventFeed_WritersWithoutAnIdYetAndRoundsCutShort_EveryEventOnce() async throws {
        try await EventService.with(sequencer: nil) { events in
            let schema = events.service.schema
            let idle = try PostgresConnection.connect(conninfo(testDatabaseURL, searchPath: schema))
            defer { idle.close() }
            let running = try PostgresConnection.connect(conninfo(testDatabaseURL, searchPath: schema))
            defer { running.close() }
            let jobs = (0..<5).map { _ in RequestIDForTests.jobID() }
            for jobID in jobs {
                #expect(try await events.service.post("/v1/callbacks", EventService.callback(jobID, state: "Running")).status == 200)
            }
            // `idle` is in a transaction but has written nothing (no id); `running` has written an event.
            try idle.execute(simpleSQL: "BEGIN")
            try idle.query("SELECT 1")
            try running.execute(simpleSQL: "BEGIN")
            try running.query("UPDATE ci_jobs SET state = 'Pause', detail = jsonb_set(detail, '{State}', '\"Pause\"') WHERE job_id = \(jobs[0])")
            // Rounds of two: the first two are cut short, the third completes and remembers its snapshot.
            #expect(try await events.store.sequenceEvents(limit: 2).sequenced == 2)
            #expect(try await events.store.sequenceEvents(limit: 2).sequenced == 2)
            #expect(try await events.store.sequenceEvents(limit: 2).sequenced == 1)
            #expect(try await events.store.sequenceEvents(limit: 2).sequenced == 0)

            try idle.query("UPDATE ci_jobs SET state = 'Pause', detail = jsonb_set(detail, '{State}', '\"Pause\"') WHERE job_id = \(jobs[1])")
            try idle.execute(simpleSQL: "COMMIT")
            try running.execute(simpleSQL: "COMMIT")
            #expect(try await events.store.sequenceEvents(limit: 2).sequenced == 2)
            #expect(try await events.store.sequenceEvents(limit: 2).sequenced == 0)

            let page = try await events.feed()
            #expect(page.events.count == 7)
            #expect(Set(page.events.compactMap(\.id)).count == 7)
            #expect(page.events.filter { $0.state == "Pause" }.compactMap(\.jobID).sorted() == [jobs[0], jobs[1]].sorted())
            let positions = try await events.service.query("SELECT count(*) AS n, count(DISTINCT event_id) AS events FROM ci_event_feed")
            #expect(positions.first?["n"].int == 7)
            #expect(positions.first?["events"].int == 7)
        }
    }

    /// A sequencer whose periodic round never comes during a test.
    static let neverOnItsOwn: EventSequencerConfiguration = {
        var configuration = EventSequencerConfiguration()
        configuration.interval = .seconds(3600)
        return configuration
    }()

    /// Rounds of three events: nearly every round is cut short, and writers commit while the walk passes
    /// their event ids, so their events are positioned as stragglers by a later round.
    static let tinyRounds: EventSequencerConfiguration = {
        var configuration = EventSequencerConfiguration()
        configuration.roundLimit = 3
        return configuration
    }()

    /// Many writers commit concurrently while a reader follows the feed with `wait`: every event is read
    /// exactly once, and each job's states in the order they were applied. With rounds of the default size,
    /// and with rounds so small that the sequencer walks behind the writers.
    @Test(arguments: [EventSequencerConfiguration(), Self.tinyRounds])
    func eventFeed_ConcurrentWriters_EveryEventOnceAndInOrderPerJob(sequencer: EventSequencerConfiguration) async throws {
        try await EventService.with(sequencer: sequencer) { events in
            let writers = 8
            let jobsPerWriter = 15
            let states = ["Submitted", "Running", "Success"]
            let expected = writers * jobsPerWriter * states.count
            let reader = Task { () throws -> [FeedEvent] in
                var seen: [FeedEvent] = []
                var cursor: String?
                let deadline = ContinuousClock.now + .seconds(120)
                while seen.count < expected && ContinuousClock.now < deadline {
                    let page = try await events.feed(after: cursor, limit: 50, wait: "5s")
                    seen += page.events
                    cursor = page.next
                }
                // Anything beyond the expected count would be a duplicate: read once more.
                seen += try await events.feed(after: cursor).events
                return seen
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<writers {
                    group.addTask {
                        for _ in 0..<jobsPerWriter {
                            let jobID = RequestIDForTests.jobID()
                            for state in states {
                                let status = try await events.service.post("/v1/callbacks", EventService.callback(jobID, state: state)).status
                                #expect(status == 200)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let seen = try await reader.value
            #expect(seen.count == expected)
            let ids = seen.compactMap(\.id)
            #expect(Set(ids).count == ids.count)
            var byJob: [String: [String]] = [:]
            for event in seen { byJob[event.jobID ?? "", default: []].append(event.state ?? "") }
            #expect(byJob.count == writers * jobsPerWriter)
            #expect(byJob.values.allSatisfy { $0 == states })
        }
    }

    /// `wait` answers as soon as an event commits. The process that committed the change wakes its
    /// sequencer (migration 0012 took the NOTIFY out of the trigger): the sequencer's periodic round is an
    /// hour away here, so without that wake-up the wait would run out empty.
    @Test func eventFeed_Wait_AnswersWhenAnEventCommits() async throws {
        try await EventService.with(sequencer: Self.neverOnItsOwn) { events in
            let start = try await events.feed()
            let waiting = Task { try await events.feed(after: start.next, wait: "30s") }
            #expect(try await eventually { events.service.completionListener.sleepingWaiters(for: "") == 1 })
            let jobID = RequestIDForTests.jobID()
            #expect(try await events.service.post("/v1/callbacks", EventService.callback(jobID, state: "Success")).status == 200)
            let page = try await waiting.value
            #expect(page.events.map(\.jobID) == [jobID])
        }
    }
}
