import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The repository checkout the tests run from.
let repositoryRoot: URL = {
    if let root = ProcessInfo.processInfo.environment["CI_CALLBACKD_REPO"], !root.isEmpty {
        return URL(fileURLWithPath: root)
    }
    // …/Tests/CLITests/CommandRunner.swift → the repository.
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}()

/// The database the tests use: `DATABASE_URL` (scripts/test sets it), else the project-local cluster.
let testDatabaseURL: String =
    ProcessInfo.processInfo.environment["DATABASE_URL"]
    ?? "postgresql://postgres@/ci_callbackd_test?host=\(repositoryRoot.path)/.pgdata/run&port=54329"

/// The `ci-callbackd` binary built beside this test bundle (`swift build --build-tests` builds both).
let commandBinary: URL = {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    // The runner is `…/debug/<Package>PackageTests.xctest` (a file on Linux, a bundle directory elsewhere).
    var directory = bundle.deletingLastPathComponent()
    if directory.lastPathComponent == "MacOS" {
        directory = directory.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }
    return directory.appendingPathComponent("ci-callbackd")
}()

/// One run of `ci-callbackd`, started with only the environment a test gives it (plus PATH), so settings
/// from the developer's shell cannot change the outcome.
final class CommandRun: @unchecked Sendable {
    // `process` is started once in `init` and then only read (isRunning, terminationStatus, signals),
    // which Foundation's Process allows from any thread.
    let process: Process
    private let outputFile: URL
    private let errorFile: URL

    init(_ arguments: [String], environment: [String: String] = [:]) throws {
        let directory = FileManager.default.temporaryDirectory
        let name = UUID().uuidString
        outputFile = directory.appendingPathComponent("ci-callbackd-\(name).out")
        errorFile = directory.appendingPathComponent("ci-callbackd-\(name).err")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errorFile.path, contents: nil)
        process = Process()
        process.executableURL = commandBinary
        process.arguments = arguments
        process.environment = environment.merging(["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]) { own, _ in own }
        // Files, not pipes: a full pipe would block the child while the test waits for it.
        process.standardOutput = try FileHandle(forWritingTo: outputFile)
        process.standardError = try FileHandle(forWritingTo: errorFile)
        try process.run()
    }

    deinit {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: outputFile)
        try? FileManager.default.removeItem(at: errorFile)
    }

    var output: String { (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "" }
    var errors: String { (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "" }

    /// Polls until the process has exited, or `deadline` passes (then kills it and fails the test).
    @discardableResult
    func waitForExit(within deadline: Duration) async throws -> Int32 {
        try await waitUntil(within: deadline, "ci-callbackd did not exit within \(deadline); stderr: \(errors)") { !self.process.isRunning }
        return process.terminationStatus
    }

    /// Polls `condition` every 20 ms until it holds, or `deadline` passes (then kills the process and fails).
    func waitUntil(within deadline: Duration, _ failure: @autoclosure () -> String, _ condition: () -> Bool) async throws {
        let end = ContinuousClock.now.advanced(by: deadline)
        while !condition() {
            guard ContinuousClock.now < end else {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
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
