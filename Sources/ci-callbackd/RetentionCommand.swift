import ArgumentParser
import CallbackService
import Foundation
import JobStore

/// `CALLBACK_RETENTION`, `JOB_RETENTION`, `PARTITION_DAYS_AHEAD`: shared by `serve` (which runs retention
/// in-process) and `retention` (the operator's command), so both apply one policy.
struct RetentionOptions: ParsableArguments {
    @Option(
        name: .customLong("callback-retention"),
        help:
            "How long raw bodies (and the duplicate window) are kept, e.g. 30d, or forever. [env: CALLBACK_RETENTION, default: \(SettingFormat.retention(ServeDefaults.retention.callbackRetention))]"
    )
    var callbackRetention: String?

    @Option(
        name: .customLong("job-retention"),
        help:
            "How long jobs and their history are kept after their last callback, e.g. 365d, or forever. [env: JOB_RETENTION, default: \(SettingFormat.retention(ServeDefaults.retention.jobRetention))]"
    )
    var jobRetention: String?

    @Option(
        name: .customLong("partition-days-ahead"),
        help: "Day partitions of raw bodies made ahead of today. [env: PARTITION_DAYS_AHEAD, default: \(ServeDefaults.retention.daysAhead)]")
    var daysAhead: String?

    func resolve(_ resolver: SettingResolver) throws -> RetentionPolicy {
        var policy = ServeDefaults.retention
        let expected = "a duration such as 30d, or forever"
        policy.callbackRetention = try resolver.required(
            flag: callbackRetention, flagName: "callback-retention", env: "CALLBACK_RETENTION", default: policy.callbackRetention,
            parse: SettingParsers.retention, expected: expected)
        policy.jobRetention = try resolver.required(
            flag: jobRetention, flagName: "job-retention", env: "JOB_RETENTION", default: policy.jobRetention, parse: SettingParsers.retention,
            expected: expected)
        policy.daysAhead = try resolver.required(
            flag: daysAhead, flagName: "partition-days-ahead", env: "PARTITION_DAYS_AHEAD", default: policy.daysAhead,
            parse: SettingParsers.positiveInt, expected: "a positive whole number")
        return policy
    }
}

extension SettingFormat {
    static func retention(_ retention: Duration?) -> String {
        retention.map(duration) ?? "forever"
    }
}

/// `ci-callbackd retention`: one retention run now, as the service runs it every `RETENTION_INTERVAL`.
struct Retention: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Makes raw-body and history partitions ahead, drops expired ones, and deletes expired digests and jobs, then exits.",
        discussion: """
            Takes the same lock as the service's own retention runs, so it never runs beside one; if a replica \
            holds it, nothing is done and the exit status is 75 (try again).
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var timeouts: DatabaseTimeoutOptions
    @OptionGroup var retention: RetentionOptions

    @Flag(name: .customLong("dry-run"), help: "Only print what would be made, dropped and deleted.")
    var dryRun = false

    func run() async throws {
        let resolver = SettingResolver()
        let databaseURL = try resolver.databaseURL(database.databaseURL)
        let logger = try database.makeLogger(resolver)
        let policy = try retention.resolve(resolver)
        let settings = try timeouts.resolve(resolver).connection
        let runner = RetentionRunner(conninfo: databaseURL, settings: settings, policy: policy, logger: logger)
        let lock = SweepLock(conninfo: databaseURL, settings: settings, classID: RetentionSweeper.lockClassID, logger: logger)
        let report: RetentionReport?
        do {
            report = try await lock.withLock { try await runner.run(dryRun: dryRun) }
            await lock.close()
        } catch {
            await lock.close()
            throw DatabaseStartupError.translating(error)
        }
        guard let report else {
            FileHandle.standardError.write(Data("another ci-callbackd is running retention now; try again later\n".utf8))
            throw ExitCode(75)
        }
        print((dryRun ? "would have: " : "") + report.description)
    }
}
