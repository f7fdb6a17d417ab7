import ArgumentParser
import CIClient
import CIModel
import CallbackService
import Foundation
import JobStore
import Logging
import PostgresLibPQ

/// `ci-callbackd submit`: submits one ExtractDigitalWatermark job to CI and prints its JobId.
///
/// With a database configured, CI's answer is stored as the job's first state (source `submit`), just
/// as `POST /v1/watermark-extractions` does; without one, the job is only submitted and its callback
/// records it.
struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submits a watermark extraction (ExtractDigitalWatermark, Text, V1) to CI and prints its JobId.",
        discussion: "CI credentials and endpoint come from CI_SECRET_ID, CI_SECRET_KEY, CI_SESSION_TOKEN, CI_BUCKET, CI_REGION, "
            + "CI_QUEUE_ID, CI_ENDPOINT; the callback URL from PUBLIC_CALLBACK_URL."
    )

    @Option(help: "The input video's object key in the bucket, e.g. input/demo.mp4.")
    var object: String

    @Option(name: .customLong("user-data"), help: "Text CI echoes back in every JobsDetail: printable ASCII, at most 1024 bytes.")
    var userData: String?

    @Option(name: .customLong("job-level"), help: "Priority: 0, 1 or 2.")
    var jobLevel: Int?

    @Option(name: .customLong("callback-format"), help: "json or xml.")
    var callbackFormat: String = "json"

    @Option(name: .customLong("database-url"), help: "Store CI's answer in this database. [env: DATABASE_URL, default: do not store]")
    var databaseURL: String?

    /// The flags' own checks (CI's limits), run while parsing so that a bad value names its flag and the
    /// usage shown is this command's.
    func validate() throws {
        _ = try format()
        do {
            try WatermarkExtractionRequest(object: object, userData: userData, jobLevel: jobLevel).validate()
        } catch {
            let flag = ["Object": "--object", "UserData": "--user-data", "JobLevel": "--job-level"][error.field] ?? error.field
            throw ValidationError("\(flag) \(error.reason)")
        }
    }

    private func format() throws -> CallbackFormat {
        guard let format = CallbackFormat(rawValue: callbackFormat.uppercased()) else {
            throw ValidationError("--callback-format '\(callbackFormat)' is not valid: expected json or xml")
        }
        return format
    }

    func run() async throws {
        let resolver = SettingResolver()
        var logger = Logger(label: "ci-callbackd")
        logger.logLevel = .warning
        let format = try format()
        let settings = try CISettings.resolve(resolver)
        guard let submitter = settings.submitter(logger: logger) else {
            throw ValidationError("CI is not configured: set CI_SECRET_ID, CI_SECRET_KEY, CI_BUCKET and CI_REGION")
        }
        let request = submitter.request(object: object, userData: userData, jobLevel: jobLevel, callbackFormat: format)
        do {
            try request.validate()
        } catch {
            throw ValidationError("\(error.field) \(error.reason)")
        }
        let databaseURL = try resolver.value(
            flag: databaseURL, flagName: "database-url", env: "DATABASE_URL", default: nil, parse: { $0 }, expected: "")
        var pool: PostgresPool?
        if let databaseURL {
            var configuration = PostgresPool.Configuration(conninfo: databaseURL)
            configuration.size = 1
            pool = PostgresPool(configuration: configuration, logger: logger)
        }
        do {
            let submission = try await submitter.submit(request, store: pool.map { JobStore(pool: $0, logger: logger) })
            print("JobId: \(submission.jobID)")
            print("State: \(submission.state.rawValue)")
            print("Stored: \(submission.stored)")
            print("LookupUrl: /v1/jobs/\(submission.jobID)")
            print("WatermarkUrl: /v1/jobs/\(submission.jobID)/watermark")
            await pool?.close()
        } catch {
            await pool?.close()
            throw error
        }
    }
}
