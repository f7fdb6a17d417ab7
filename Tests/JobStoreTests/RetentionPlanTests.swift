import Foundation
import Testing

@testable import JobStore

/// Which partitions a retention run makes and drops, with the clock passed in: no database.
@Suite("Retention plan")
struct RetentionPlanTests {
    static func instant(_ text: String) -> Date {
        try! Date(text + "Z", strategy: .iso8601)
    }

    static func day(_ text: String) -> PartitionInfo {
        let lower = instant(text + "T00:00:00")
        return PartitionInfo(
            name: PartitionedTable.callbacks.partitionName(startingAt: lower), lower: lower, upper: PartitionedTable.callbacks.periodEnd(lower))
    }

    static let legacy = PartitionInfo(name: "ci_callbacks_legacy", lower: nil, upper: instant("2026-12-05T00:00:00"))

    @Test func plan_freshUpgrade_createsTodayAndDaysAheadAfterLegacyOnly() {
        let now = Self.instant("2026-12-04T16:00:00")
        let actions = RetentionPlan.actions(for: .callbacks, existing: [Self.legacy], now: now, retention: .seconds(30 * 86_400), ahead: 3)
        #expect(
            actions == [
                .create(name: "ci_callbacks_p20261205", from: Self.instant("2026-12-05T00:00:00"), to: Self.instant("2026-12-06T00:00:00")),
                .create(name: "ci_callbacks_p20261206", from: Self.instant("2026-12-06T00:00:00"), to: Self.instant("2026-12-07T00:00:00")),
                .create(name: "ci_callbacks_p20261207", from: Self.instant("2026-12-07T00:00:00"), to: Self.instant("2026-12-08T00:00:00")),
            ])
    }

    @Test func plan_everythingPresent_isEmpty() {
        let now = Self.instant("2026-12-05T10:00:00")
        let existing = [Self.day("2026-12-05"), Self.day("2026-12-06")]
        #expect(RetentionPlan.actions(for: .callbacks, existing: existing, now: now, retention: nil, ahead: 1).isEmpty)
    }

    @Test func plan_partitionEndingExactlyAtCutoff_isDropped_oneEndingAfter_isKept() {
        let now = Self.instant("2027-01-05T00:00:00")
        let existing = [Self.day("2026-12-05"), Self.day("2026-12-06"), Self.day("2027-01-05")]
        // Cutoff 2026-12-06T00:00: the partition of 12-05 ends there (every row older than 30 days);
        // the one of 12-06 still holds rows 29.x days old, so a re-delivery then is still a duplicate.
        let actions = RetentionPlan.actions(for: .callbacks, existing: existing, now: now, retention: .seconds(30 * 86_400), ahead: 0)
        #expect(actions == [.drop(name: "ci_callbacks_p20261205", detachPending: false)])
    }

    @Test func plan_legacyPartition_isDroppedOnlyOnceItsNewestRowExpired() {
        let retention = Duration.seconds(30 * 86_400)
        let before = RetentionPlan.actions(
            for: .callbacks, existing: [Self.legacy, Self.day("2027-01-03")], now: Self.instant("2027-01-03T23:59:59"), retention: retention, ahead: 0)
        #expect(!before.contains(.drop(name: "ci_callbacks_legacy", detachPending: false)))
        let after = RetentionPlan.actions(
            for: .callbacks, existing: [Self.legacy, Self.day("2027-01-04")], now: Self.instant("2027-01-04T00:00:00"), retention: retention, ahead: 0)
        #expect(after == [.drop(name: "ci_callbacks_legacy", detachPending: false)])
    }

    @Test func plan_interruptedDetach_isFinalizedWhenExpired() {
        var old = Self.day("2026-11-01")
        old.detachPending = true
        let actions = RetentionPlan.actions(
            for: .callbacks, existing: [old, Self.day("2027-01-05")], now: Self.instant("2027-01-05T01:00:00"), retention: .seconds(86_400), ahead: 0)
        #expect(actions == [.drop(name: "ci_callbacks_p20261101", detachPending: true)])
    }

    @Test func plan_foreverRetention_dropsNothing_evenCenturiesLater() {
        let actions = RetentionPlan.actions(
            for: .events, existing: [PartitionInfo(name: "ci_job_events_legacy", lower: nil, upper: Self.instant("2027-01-01T00:00:00"))],
            now: Self.instant("2126-01-15T00:00:00"), retention: nil, ahead: 1)
        #expect(actions.allSatisfy { if case .create = $0 { true } else { false } })
        #expect(
            actions.first
                == .create(name: "ci_job_events_p212601", from: Self.instant("2126-01-01T00:00:00"), to: Self.instant("2126-02-01T00:00:00")))
    }

    @Test func plan_monthPartitions_followCalendarMonths() {
        let actions = RetentionPlan.actions(for: .events, existing: [], now: Self.instant("2027-01-31T23:00:00"), retention: nil, ahead: 1)
        #expect(
            actions == [
                .create(name: "ci_job_events_p202701", from: Self.instant("2027-01-01T00:00:00"), to: Self.instant("2027-02-01T00:00:00")),
                .create(name: "ci_job_events_p202702", from: Self.instant("2027-02-01T00:00:00"), to: Self.instant("2027-03-01T00:00:00")),
            ])
    }

    @Test func plan_gapAfterPartitionEndingMidPeriod_isFilledFromItsEnd() {
        let odd = PartitionInfo(name: "odd", lower: nil, upper: Self.instant("2026-12-05T06:00:00"))
        let actions = RetentionPlan.actions(for: .callbacks, existing: [odd], now: Self.instant("2026-12-05T01:00:00"), retention: nil, ahead: 0)
        #expect(actions == [.create(name: "ci_callbacks_p20261205", from: Self.instant("2026-12-05T06:00:00"), to: Self.instant("2026-12-06T00:00:00"))])
    }

    @Test func digestCutoff_isTheOldestRemainingLowerBound_noneWhileLegacyRemains() {
        #expect(RetentionPlan.digestCutoff(remaining: [Self.day("2026-12-07"), Self.day("2026-12-06")]) == Self.instant("2026-12-06T00:00:00"))
        #expect(RetentionPlan.digestCutoff(remaining: [Self.legacy, Self.day("2026-12-06")]) == nil)
        #expect(RetentionPlan.digestCutoff(remaining: []) == nil)
    }

    @Test func literal_isUTCWithMicroseconds() {
        #expect(RetentionRunner.literal(Self.instant("2026-12-05T00:00:00")) == "2026-12-05 00:00:00.000000+00")
        #expect(RetentionRunner.literal(Date(timeIntervalSince1970: 1.5)) == "1970-01-01 00:00:01.500000+00")
    }

    @Test func identifier_refusesAnythingButPlainNames() throws {
        #expect(try RetentionRunner.identifier("ci_callbacks_p20261205") == "\"ci_callbacks_p20261205\"")
        #expect(throws: JobStoreError.self) { try RetentionRunner.identifier("x\"; DROP TABLE ci_jobs; --") }
        #expect(throws: JobStoreError.self) { try RetentionRunner.identifier("Upper") }
    }
}
