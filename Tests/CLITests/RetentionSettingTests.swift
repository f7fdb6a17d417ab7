import ArgumentParser
import Foundation
import JobStore
import Testing

@testable import ci_callbackd

/// The retention settings' syntax and the reprocess progress bar: pure, no database.
@Suite("Retention settings")
struct RetentionSettingTests {
    @Test func retention_daysOrForever_parse_anythingElseIsRefused() {
        #expect(SettingParsers.retention("30d") == .some(.seconds(30 * 86_400)))
        #expect(SettingParsers.retention("720h") == .some(.seconds(30 * 86_400)))
        #expect(SettingParsers.retention("forever") == .some(nil))
        #expect(SettingParsers.retention("Forever") == .some(nil))
        #expect(SettingParsers.retention("0") == nil)
        #expect(SettingParsers.retention("soon") == nil)
    }

    @Test func retention_defaults_areThirtyDaysForBodiesAndForeverForJobs() throws {
        let policy = try RetentionOptions.parse([]).resolve(SettingResolver(environment: [:]))
        #expect(policy.callbackRetention == .seconds(30 * 86_400))
        #expect(policy.jobRetention == nil)
        #expect(SettingFormat.retention(policy.callbackRetention) == "30d")
        #expect(SettingFormat.retention(policy.jobRetention) == "forever")
    }

    @Test func retention_environment_isRead_flagWins() throws {
        let resolver = SettingResolver(environment: ["CALLBACK_RETENTION": "7d", "JOB_RETENTION": "365d"])
        let fromEnvironment = try RetentionOptions.parse([]).resolve(resolver)
        #expect(fromEnvironment.callbackRetention == .seconds(7 * 86_400))
        #expect(fromEnvironment.jobRetention == .seconds(365 * 86_400))
        let flagged = try RetentionOptions.parse(["--callback-retention", "forever"]).resolve(resolver)
        #expect(flagged.callbackRetention == nil)
        #expect(throws: (any Error).self) { try RetentionOptions.parse(["--job-retention", "a while"]).resolve(resolver) }
    }

    @Test func progressBar_showsShareAndCounts() {
        var counts = ReprocessCounts()
        counts.total = 1000
        counts.read = 300
        counts.jobsApplied = 12
        #expect(ReprocessProgressDisplay.bar(counts, width: 10) == "[###-------]  30% 300/1000 bodies, 12 jobs applied")
        counts = ReprocessCounts()
        #expect(ReprocessProgressDisplay.bar(counts, width: 4) == "[####] 100% 0/0 bodies, 0 jobs applied")
    }
}
