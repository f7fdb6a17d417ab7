import ArgumentParser
import CISimulator
import Foundation
import Logging
import UnixSignals

/// `ci-simulator`: a fake Tencent Cloud Infinite to point ci-callbackd (or any CI client) at.
@main
struct CISimulatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ci-simulator",
        abstract: "A fake Tencent Cloud Infinite: signed POST /jobs, GET /jobs, and TaskFinish callbacks with CI's quirks and faults.",
        discussion: """
            Submit jobs with CI_ENDPOINT=http://127.0.0.1:<port> and the simulator's --secret-id/--secret-key. \
            Jobs become Running after --running-after seconds and Success (Failed for object keys containing \
            "missing") --job-duration seconds later; the callback then goes to the job's CallBack URL. \
            Stop with Ctrl-C or SIGTERM; the final statistics are printed.
            """
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one.")
    var port = 8090

    @Option(name: .customLong("secret-id"), help: "The SecretId requests must be signed with.")
    var secretID = SimulatorConfiguration().secretID

    @Option(name: .customLong("secret-key"), help: "The SecretKey requests must be signed with.")
    var secretKey = SimulatorConfiguration().secretKey

    @Option(help: "BucketName-APPID written into jobs.")
    var bucket = SimulatorConfiguration().bucket

    @Option(help: "Region written into jobs.")
    var region = SimulatorConfiguration().region

    @Option(name: .customLong("callback-url"), help: "Callback URL for jobs submitted without CallBack (a queue's NotifyConfig).")
    var callbackURL: String?

    @Option(help: "Probability (0-1) that a job's final callback is never sent.")
    var drop = 0.0

    @Option(help: "Probability (0-1) that each callback body is sent twice.")
    var duplicate = 0.0

    @Option(name: .customLong("out-of-order"), help: "Probability (0-1) that a Running callback follows the final one.")
    var outOfOrder = 0.0

    @Option(help: "Seconds between a job's end and its callback.")
    var delay = 0.0

    @Option(name: .customLong("running-after"), help: "Seconds from submission to Running.")
    var runningAfter = 1.0

    @Option(name: .customLong("job-duration"), help: "Seconds from Running to the final state.")
    var jobDuration = 3.0

    @Option(name: .customLong("max-delivery-attempts"), help: "Attempts per callback body (non-2xx answers are retried).")
    var maxDeliveryAttempts = 5

    @Option(help: "Seed for JobIds and fault draws; the same seed and submissions repeat a run.")
    var seed: UInt64?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func validate() throws {
        for (name, value) in [("--drop", drop), ("--duplicate", duplicate), ("--out-of-order", outOfOrder)] where !(0...1).contains(value) {
            throw ValidationError("\(name) must be between 0 and 1")
        }
        for (name, value) in [("--delay", delay), ("--running-after", runningAfter), ("--job-duration", jobDuration)]
        where !(value >= 0 && value <= 86_400) {
            throw ValidationError("\(name) must be between 0 and 86400 seconds")
        }
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        guard maxDeliveryAttempts >= 1 else { throw ValidationError("--max-delivery-attempts must be at least 1") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level \(logLevel) is not a level") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "ci-simulator")

        var configuration = SimulatorConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.secretID = secretID
        configuration.secretKey = secretKey
        configuration.bucket = bucket
        configuration.region = region
        configuration.defaultCallbackURL = callbackURL
        configuration.dropProbability = drop
        configuration.duplicateProbability = duplicate
        configuration.outOfOrderProbability = outOfOrder
        configuration.callbackDelay = .milliseconds(Int64(delay * 1000))
        configuration.runningAfter = .milliseconds(Int64(runningAfter * 1000))
        configuration.jobDuration = .milliseconds(Int64(jobDuration * 1000))
        configuration.maxDeliveryAttempts = maxDeliveryAttempts
        configuration.seed = seed

        let simulator = CISimulator(configuration: configuration, logger: logger)
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await simulator.run() }
            let boundPort = try await simulator.waitUntilListening()
            // Written unbuffered, so a script reading the pipe sees the port at once.
            FileHandle.standardOutput.write(Data("ci-simulator listening on http://\(host):\(boundPort) (SecretId \(secretID))\n".utf8))
            group.addTask {
                for await _ in signals { return }
            }
            // The first child to finish (a signal, or the server failing) stops the other.
            try await group.next()
            group.cancelAll()
        }
        FileHandle.standardOutput.write(Data("ci-simulator stopped: \(simulator.statistics)\n".utf8))
    }
}
