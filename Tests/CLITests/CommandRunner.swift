import Foundation
import TestSupport
import Testing

/// One run of `ci-callbackd`, started with only the environment a test gives it (plus PATH), so settings
/// from the developer's shell cannot change the outcome.
final class CommandRun: Sendable {
    let child: ChildProcess
    private let files: OutputFiles

    init(_ arguments: [String], environment: [String: String] = [:]) throws {
        files = try OutputFiles(name: "ci-callbackd")
        child = try ChildProcess(
            try builtServiceBinary().path, arguments,
            environment: environment.merging(["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]) { own, _ in own },
            standardOutput: .file(files.output), standardError: .file(files.errors))
    }

    deinit {
        // The reaping thread collects it; nothing here waits.
        child.kill()
        files.remove()
    }

    var output: String { files.read(files.output) }
    var errors: String { files.read(files.errors) }
    /// The exit code once it has exited (nil while it runs, or when a signal ended it).
    var exitCode: Int32? { child.exitStatus?.code }

    /// Waits until the process has exited, or `deadline` passes (then kills it and fails the test); returns
    /// its exit code (nil when a signal ended it).
    @discardableResult
    func waitForExit(within deadline: Duration) async throws -> Int32? {
        do {
            return try await child.exit(within: deadline).code
        } catch {
            child.kill()
            Issue.record(Comment(rawValue: "ci-callbackd did not exit within \(deadline); stderr: \(errors)"))
            throw error
        }
    }

    /// Polls `condition` every 20 ms until it holds, or `deadline` passes (then kills the process and fails).
    func waitUntil(within deadline: Duration, _ failure: @autoclosure () -> String, _ condition: () -> Bool) async throws {
        let end = ContinuousClock.now.advanced(by: deadline)
        while !condition() {
            guard ContinuousClock.now < end else {
                child.kill()
                Issue.record(Comment(rawValue: failure()))
                throw CommandTimeout()
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Runs `arguments` to completion.
    static func finished(
        _ arguments: [String], environment: [String: String] = [:], within deadline: Duration = .seconds(60)
    ) async throws -> CommandRun {
        let run = try CommandRun(arguments, environment: environment)
        try await run.waitForExit(within: deadline)
        return run
    }
}

struct CommandTimeout: Error {}
