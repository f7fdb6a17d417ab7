import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// The database goes away and comes back while the service keeps running.
///
/// Uses a cluster of its own (scripts/pg-cluster, `.pgdata-outage/`), because stopping the shared one
/// would fail every other test running in parallel.
@Suite("Database outage")
struct ServiceOutageTests {
    private static let directory = repositoryRoot.appendingPathComponent(".pgdata-outage").path
    /// Picked once per test process, so several checkouts can run the suite at the same time.
    private static let port: String = {
        guard let port = try? freeLoopbackPort() else { return "54339" }
        return String(port)
    }()

    /// Runs `scripts/pg-cluster COMMAND DIR PORT` and returns what it printed.
    ///
    /// posix_spawn and waitpid on a thread of its own, so the cooperative pool is not blocked while
    /// PostgreSQL starts or stops.
    @discardableResult
    private static func cluster(_ command: String) async throws -> String {
        let script = repositoryRoot.appendingPathComponent("scripts/pg-cluster").path
        let (status, output) = await withCheckedContinuation { (continuation: CheckedContinuation<(Int32, String), Never>) in
            Thread.detachNewThread {
                continuation.resume(returning: spawnAndWait([script, command, directory, port]))
            }
        }
        try #require(status == 0, "scripts/pg-cluster \(command) exited with \(status)")
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func spawnAndWait(_ arguments: [String]) -> (Int32, String) {
        var pipe: [Int32] = [0, 0]
        // O_CLOEXEC: the PostgreSQL server that pg_ctl starts must not inherit the write end, or the
        // read below would wait for the server to exit.
        guard Glibc.pipe(&pipe) == 0 else { return (-1, "") }
        _ = fcntl(pipe[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(pipe[1], F_SETFD, FD_CLOEXEC)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipe[1], 1)
        posix_spawn_file_actions_addclose(&actions, pipe[0])
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, arguments[0], &actions, nil, argv, environ)
        close(pipe[1])
        guard spawned == 0 else {
            close(pipe[0])
            return (-1, "")
        }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(pipe[0], &buffer, buffer.count)
            if count > 0 { output += buffer[0..<count] } else if count == 0 || errno != EINTR { break }
        }
        close(pipe[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = (status & 0x7f) == 0
        return (exited ? (status >> 8) & 0xff : -1, String(decoding: output, as: UTF8.self))
    }

    private static func callback(_ jobID: String) -> [UInt8] {
        Array(#"{"JobsDetail":{"JobId":"\#(jobID)","State":"Success","Tag":"ExtractDigitalWatermark"}}"#.utf8)
    }

    @Test func databaseDown_gives503WithRetryAfter_andRecoversWithoutRestart() async throws {
        let databaseURL = try await Self.cluster("start")
        let service = try await ServiceHarness.start(databaseURL: databaseURL)
        do {
            let before = RequestIDForTests.jobID()
            #expect(try await service.post("/v1/callbacks", Self.callback(before)).status == 200)

            try await Self.cluster("stop")
            let during = RequestIDForTests.jobID()
            let refused = try await service.post("/v1/callbacks", Self.callback(during))
            #expect(refused.status == 503)
            #expect(refused.header("Retry-After") == "5")
            let error = try #require(try refused.json()["Error"] as? [String: Any])
            #expect(error["Code"] as? String == "DatabaseUnavailable")
            #expect(try await service.get("/readyz").status == 503)
            #expect(try await service.get("/healthz").status == 200, "the process itself is alive")

            try await Self.cluster("start")
            let after = try await service.post("/v1/callbacks", Self.callback(during))
            #expect(after.status == 200, "the same callback, retried, is accepted: \(after.text)")
            #expect(try after.json()["Duplicate"] as? Bool == false)
            #expect(try await service.get("/v1/jobs/\(before)").status == 200)
            #expect(try await service.get("/v1/jobs/\(during)").status == 200)
            #expect(try await service.get("/readyz").status == 200)
        } catch {
            await service.stop()
            try? service.dropSchema(databaseURL: databaseURL)
            throw error
        }
        await service.stop()
        try service.dropSchema(databaseURL: databaseURL)
        try await Self.cluster("stop")
    }
}
