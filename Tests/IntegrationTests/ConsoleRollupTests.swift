import Foundation
import JobStore
import PostgresLibPQ
import Testing

/// The overview's per-minute rates come from the rollup plus the callbacks since its watermark, and
/// agree with a count of the callbacks themselves.
@Suite("Console rollup")
struct ConsoleRollupTests {
    /// Stores a callback row received `secondsAgo` before `now` (not through ingest: the test picks the instant).
    static func store(_ service: ServiceHarness, outcome: String, at instant: Date, tag: String) async throws {
        let micros = Int64(instant.timeIntervalSince1970 * 1_000_000)
        _ = try await service.query(
            """
            INSERT INTO ci_callbacks (body_sha256, body, body_size, format, content_type, outcome, source, job_count, received_at)
            VALUES (sha256(convert_to(\(tag), 'UTF8')), convert_to(\(tag), 'UTF8'), 4, 'JSON', 'application/json', \(outcome), 'callback', 0,
                    'epoch'::timestamptz + \(micros)::bigint * interval '1 microsecond')
            """)
    }

    static func counts(_ buckets: [CallbackRateBucket]) -> [String: Int] {
        Dictionary(grouping: buckets, by: \.outcome.rawValue).mapValues { $0.reduce(0) { $0 + $1.count } }
    }

    @Test func rollup_countsEachMinuteOnce_andTheOverviewAddsCallbacksSinceItsWatermark() async throws {
        try await ServiceHarness.with { service in
            // A whole minute, so that the arithmetic below never straddles one.
            let now = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 60).rounded(.down) * 60 + 30)
            for i in 0..<3 { try await Self.store(service, outcome: "accepted", at: now.addingTimeInterval(-1800), tag: "a\(i)") }
            for i in 0..<2 { try await Self.store(service, outcome: "rejected", at: now.addingTimeInterval(-1790), tag: "r\(i)") }
            try await Self.store(service, outcome: "no_jobs", at: now.addingTimeInterval(-7200), tag: "old")

            let first = try await service.store.rollUpCallbackRates(now: now)
            #expect(!first.skipped && first.countedBeforeMicros == Int64(now.timeIntervalSince1970 - 30) * 1_000_000)
            let minutes = try await service.query("SELECT count(*)::int FROM ci_callback_minutes")
            #expect(minutes[0][0].string == "3", "one row per minute and outcome: the two of half an hour ago, the one of two hours ago")
            #expect(Self.counts(try await service.store.consoleOverview(now: now).hour) == ["accepted": 3, "rejected": 2])

            // After the watermark: counted by the page itself.
            try await Self.store(service, outcome: "accepted", at: now.addingTimeInterval(-10), tag: "live")
            // Before the watermark but within the settle time (committed late): the next run counts it.
            try await Self.store(service, outcome: "rejected", at: now.addingTimeInterval(-60), tag: "late")
            let live = try await service.store.consoleOverview(now: now).hour
            #expect(Self.counts(live) == ["accepted": 4, "rejected": 2])
            _ = try await service.store.rollUpCallbackRates(now: now)
            _ = try await service.store.rollUpCallbackRates(now: now)
            let settled = try await service.store.consoleOverview(now: now).hour
            #expect(Self.counts(settled) == ["accepted": 4, "rejected": 3], "runs again count no minute twice")
            #expect(settled.filter { $0.outcome == .accepted }.map(\.count).sorted() == [1, 3])
            // The day chart sums the same minutes into 20-minute bars on its own grid, the older callback too.
            let day = try await service.store.consoleOverview(now: now)
            #expect(Self.counts(day.day) == ["accepted": 4, "rejected": 3, "no_jobs": 1])
            #expect(day.day.allSatisfy { ($0.startMicros - day.dayStartMicros) % day.dayBucketMicros == 0 && $0.startMicros >= day.dayStartMicros })

            // The counts outlive the bodies: retention dropping them leaves the chart as it was.
            _ = try await service.query("DELETE FROM ci_callbacks WHERE received_at < now() - interval '2 minutes' AND outcome <> 'no_jobs'")
            let later = now.addingTimeInterval(600)
            _ = try await service.store.rollUpCallbackRates(now: later)
            #expect(Self.counts(try await service.store.consoleOverview(now: now).hour) == ["accepted": 4, "rejected": 3])
        }
    }
}
