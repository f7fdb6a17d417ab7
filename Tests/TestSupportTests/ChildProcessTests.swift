import Foundation
import Synchronization
import TestSupport
import Testing

@Suite("Child processes")
struct ChildProcessTests {
    /// More waits than Swift's cooperative pool has threads (one per core) suspend rather than block: while
    /// all of them wait for children that are still running, another task gets a thread and finishes. With
    /// a blocking wait (Foundation's `waitUntilExit`) the pool is stuck until a child exits, and the probe
    /// finds every child gone.
    @Test(.timeLimit(.minutes(2)))
    func childProcess_MoreConcurrentWaitsThanPoolThreads_LeaveThePoolFreeForOtherTasks() async throws {
        let waits = max(8, ProcessInfo.processInfo.activeProcessorCount * 4)
        // Long enough that no loaded machine lets them end before the probe runs; killed once it has.
        let children = try (0..<waits).map { _ in try ChildProcess("sleep", ["60"]) }
        defer { children.forEach { $0.kill() } }
        let waiting = Counter()
        let waitTask = Task {
            await withTaskGroup(of: Void.self) { group in
                for child in children {
                    group.addTask {
                        waiting.value.add(1, ordering: .relaxed)
                        _ = try? await child.exit(within: .seconds(90))
                    }
                }
            }
        }
        // The probe: a task that needs a pool thread while every wait is in progress.
        let probe = Task { () -> (waiting: Int, running: Int) in
            let deadline = ContinuousClock.now + .seconds(30)
            while waiting.value.load(ordering: .relaxed) < waits, ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(10))
            }
            return (waiting.value.load(ordering: .relaxed), children.filter(\.isRunning).count)
        }
        let seen = await probe.value
        #expect(seen.waiting == waits, "only \(seen.waiting) of \(waits) waits began")
        #expect(seen.running == waits, "the probe ran only after \(waits - seen.running) of \(waits) children had exited")

        children.forEach { $0.kill() }
        await waitTask.value
        #expect(children.allSatisfy { $0.exitStatus?.signal == SIGKILL })
    }

    @Test func childProcess_Run_CapturesOutputErrorsAndExitCode() async throws {
        let finished = try await ChildProcess.run("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"], within: .seconds(30))
        #expect(finished.status.code == 3)
        #expect(finished.output == "out\n")
        #expect(finished.errors == "err\n")
    }

    /// Far more output than a pipe holds (64 KiB) cannot block the child: it goes to a file.
    @Test func childProcess_Run_LargeOutputDoesNotBlockTheChild() async throws {
        let finished = try await ChildProcess.run("/bin/sh", ["-c", "head -c 4000000 /dev/zero | tr '\\0' x"], within: .seconds(60))
        #expect(finished.status.succeeded)
        #expect(finished.output.utf8.count == 4_000_000)
    }

    @Test func childProcess_ExitDeadlinePasses_ThrowsAndLeavesTheChildRunning() async throws {
        let child = try ChildProcess("sleep", ["60"])
        await #expect(throws: ChildProcessError.self) { try await child.exit(within: .milliseconds(200)) }
        #expect(child.isRunning)
        let status = await child.stop()
        #expect(status.signal == SIGTERM)
        #expect(!child.isRunning)
    }

    @Test func childProcess_IgnoresSIGTERM_StopKillsItAfterTheGrace() async throws {
        let files = try OutputFiles(name: "ignores-term")
        defer { files.remove() }
        // An ignored signal stays ignored across exec: the sleep itself ignores SIGTERM.
        let child = try ChildProcess("/bin/sh", ["-c", "trap '' TERM; echo ready; exec sleep 60"], standardOutput: .file(files.output))
        #expect(try await eventually { files.read(files.output) == "ready\n" }, "the shell never set its trap")
        let status = await child.stop(grace: .milliseconds(500))
        #expect(status.signal == SIGKILL, "\(status)")
    }

    @Test func childProcess_Succeed_ThrowsWithTheOutputWhenTheCommandFails() async throws {
        await #expect {
            try await ChildProcess.succeed("/bin/sh", ["-c", "echo why >&2; exit 1"], within: .seconds(30))
        } throws: { error in
            "\(error)".contains("why") && "\(error)".contains("exit code 1")
        }
    }

    @Test func childProcess_Environment_IsExactlyTheOneGiven() async throws {
        let finished = try await ChildProcess.run("/usr/bin/env", environment: ["ONLY": "this"], within: .seconds(30))
        #expect(finished.output == "ONLY=this\n")
    }

    @Test func childProcess_WorkingDirectory_IsTheOneGiven() async throws {
        let finished = try await ChildProcess.run("/bin/pwd", workingDirectory: "/tmp", within: .seconds(30))
        #expect(finished.output == "/tmp\n")
    }

    @Test func childProcess_MissingExecutable_ThrowsSpawnFailed() {
        #expect(throws: ChildProcessError.self) { try ChildProcess("/nonexistent/command") }
    }
}

private final class Counter: Sendable {
    let value = Atomic<Int>(0)
}
