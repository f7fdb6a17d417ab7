import Foundation

/// The repository checkout the tests run from: `CI_CALLBACKD_REPO` (scripts/test sets it), else the
/// checkout this file was compiled from.
public let repositoryRoot: URL = {
    if let root = ProcessInfo.processInfo.environment["CI_CALLBACKD_REPO"], !root.isEmpty {
        return URL(fileURLWithPath: root)
    }
    // …/Tests/TestSupport/TestRepository.swift → the repository.
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}()

/// The database the tests use: `DATABASE_URL` (scripts/test sets it), else the project-local cluster.
public let testDatabaseURL: String =
    ProcessInfo.processInfo.environment["DATABASE_URL"]
    ?? "postgresql://postgres@/ci_callbackd_test?host=\(repositoryRoot.path)/.pgdata/run&port=54329"

/// A product that `swift build --build-tests` put beside this test runner is missing.
public struct MissingBuiltProduct: Error, CustomStringConvertible {
    public let description: String
}

/// The `ci-callbackd` binary the tests run: `CI_CALLBACKD_BINARY`, else the one beside the test runner.
/// Missing is a failure, not a skip: the suite builds every product before it runs.
public func builtServiceBinary() throws -> URL {
    if let explicit = ProcessInfo.processInfo.environment["CI_CALLBACKD_BINARY"], !explicit.isEmpty {
        return URL(fileURLWithPath: explicit)
    }
    return try builtProduct("ci-callbackd")
}

/// The executable product `name` that SwiftPM built beside this test runner.
public func builtProduct(_ name: String) throws -> URL {
    var folders: [URL] = [URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()]
    if let runner = Bundle.main.executableURL {
        folders.append(runner.resolvingSymlinksInPath().deletingLastPathComponent())
    }
    // On macOS the tests load as an .xctest bundle in the products folder, run by a helper elsewhere.
    folders += Bundle.allBundles.filter { $0.bundlePath.hasSuffix(".xctest") }.map { $0.bundleURL.deletingLastPathComponent() }
    let candidates = folders.map { $0.appendingPathComponent(name) }
    guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
        throw MissingBuiltProduct(
            description: "no built \(name) in \(folders.map(\.path)); build it with `swift build --build-tests` before `swift test --skip-build`")
    }
    return found
}
