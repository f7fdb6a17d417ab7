import CSpawn
import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How a child process ended: the `waitpid` status, decoded.
public struct ExitStatus: Sendable, Equatable, CustomStringConvertible {
    /// The raw wait status.
    public let raw: Int32

    public init(raw: Int32) { self.raw = raw }

    /// The exit code, when the process exited (rather than being killed by a signal).
    public var code: Int32? { raw & 0x7f == 0 ? (raw >> 8) & 0xff : nil }
    /// The signal that ended the process, when one did.
    public var signal: Int32? { raw & 0x7f != 0 && raw & 0x7f != 0x7f ? raw & 0x7f : nil }
    /// Exited with code 0.
    public var succeeded: Bool { code == 0 }

    public var description: String {
        if let code { return "exit code \(code)" }
        if let signal { return "signal \(signal)" }
        return "wait status \(raw)"
    }
}

/// Why a child could not be started or waited for.
public enum ChildProcessError: Error, CustomStringConvertible {
    case spawnFailed(command: String, errno: Int32)
    case timedOut(command: String, after: Duration)
    case failed(command: String, status: ExitStatus, output: String)

    public var description: String {
        switch self {
        case .spawnFailed(let command, let code): "could not start \(command): errno \(code) (\(String(cString: strerror(code))))"
        case .timedOut(let command, let after): "\(command) did not exit within \(after)"
        case .failed(let command, let status, let output): "\(command) failed (\(status)):\n\(output)"
        }
    }
}

/// A child process of the test process, started with `posix_spawn` and reaped by a thread of its own.
///
/// Waiting for it (``exit(within:)``) suspends the calling task; no thread of Swift's cooperative pool
/// blocks. The pool is only as wide as the machine has cores (two here): Foundation's `waitUntilExit` or a
/// `waitpid` on a pool thread, in two tests at once, stalls every other async test in the process, and
/// listener tests' client timeouts fire meanwhile. The reaping thread waits on this one pid only, so it
/// never takes the exit status of a child someone else started.
///
/// Output goes to files (or a descriptor the caller owns), never to a pipe this process must drain: a file
/// cannot fill up and block the child, and a daemon the child starts (pg_ctl's PostgreSQL) that inherits it
/// cannot hold back an end-of-file the test waits for.
public final class ChildProcess: Sendable {
    /// Where one of the child's output streams goes.
    public enum Output: Sendable {
        /// /dev/null.
        case discard
        /// The file at this path, created or truncated.
        case file(String)
        /// A descriptor of the test process (say, the write end of a pipe nobody reads), duplicated into the child.
        case descriptor(Int32)
        /// The test process's own stream.
        case inherit
    }

    /// The process id; valid to signal while ``isRunning`` (``signal(_:)`` checks that).
    public let pid: pid_t
    /// The command line, for messages.
    public let command: String
    private let state: ChildState

    /// Starts `executable` (a path, or a name looked up in `PATH`) with `arguments`.
    ///
    /// - Parameters:
    ///   - environment: The child's whole environment; nil passes the test process's own.
    ///   - workingDirectory: The child's working directory; nil keeps the test process's.
    ///   - standardOutput: Where standard output goes.
    ///   - standardError: Where standard error goes; nil means wherever standard output goes.
    public init(
        _ executable: String, _ arguments: [String] = [], environment: [String: String]? = nil, workingDirectory: String? = nil,
        standardOutput: Output = .discard, standardError: Output? = nil
    ) throws {
        command = ([executable] + arguments).joined(separator: " ")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        Self.redirect(&actions, 1, standardOutput)
        if let standardError {
            Self.redirect(&actions, 2, standardError)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        // The test process holds sockets and pipes not all opened close-on-exec; a child (or a PostgreSQL it
        // starts) keeping them open would hold a test's connection or end-of-file hostage.
        cspawn_file_actions_addclosefrom(&actions, 3)
        if let workingDirectory { cspawn_file_actions_addchdir(&actions, workingDirectory) }

        // Signals the test process ignores or blocks (SIGPIPE, say) are the default again in the child.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer {
            argv.forEach { free($0) }
            envp?.forEach { free($0) }
        }
        var pid: pid_t = 0
        let spawned: Int32 =
            if let envp {
                posix_spawnp(&pid, executable, &actions, &attributes, argv, envp)
            } else {
                posix_spawnp(&pid, executable, &actions, &attributes, argv, environ)
            }
        guard spawned == 0 else { throw ChildProcessError.spawnFailed(command: command, errno: spawned) }
        self.pid = pid
        state = ChildState()
        let (state, reapedPID) = (state, pid)
        Thread.detachNewThread { state.reap(reapedPID) }
    }

    private static func redirect(_ actions: inout posix_spawn_file_actions_t, _ descriptor: Int32, _ output: Output) {
        switch output {
        case .discard: posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", O_WRONLY, 0)
        case .file(let path): posix_spawn_file_actions_addopen(&actions, descriptor, path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        case .descriptor(let source): posix_spawn_file_actions_adddup2(&actions, source, descriptor)
        case .inherit: break
        }
    }

    /// How it ended; nil while it runs.
    public var exitStatus: ExitStatus? { state.status }

    public var isRunning: Bool { state.status == nil }

    /// Sends `signal`, unless the process has already been reaped (its pid may belong to another by then).
    public func signal(_ signal: Int32) {
        state.whileUnreaped { _ = Glibc.kill(pid, signal) }
    }

    /// SIGTERM.
    public func terminate() { signal(SIGTERM) }

    /// SIGKILL.
    public func kill() { signal(SIGKILL) }

    /// Waits until the process has exited; throws ``ChildProcessError/timedOut(command:after:)`` when
    /// `deadline` passes first (the process keeps running) or the task is cancelled.
    @discardableResult
    public func exit(within deadline: Duration) async throws -> ExitStatus {
        guard let status = await state.wait(deadline: deadline) else {
            throw ChildProcessError.timedOut(command: command, after: deadline)
        }
        return status
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`; returns once it has been reaped.
    @discardableResult
    public func stop(grace: Duration = .seconds(10)) async -> ExitStatus {
        terminate()
        if let status = await state.wait(deadline: grace) { return status }
        kill()
        // SIGKILL cannot be ignored: this returns once the kernel has torn the process down.
        while true {
            if let status = await state.wait(deadline: .seconds(60)) { return status }
        }
    }

    /// The result of ``run(_:_:environment:workingDirectory:within:)``.
    public struct Finished: Sendable {
        public var status: ExitStatus
        /// Standard output.
        public var output: String
        /// Standard error.
        public var errors: String
    }

    /// Runs a command to its end and returns its status and output; kills it and throws when it takes
    /// longer than `deadline`.
    public static func run(
        _ executable: String, _ arguments: [String] = [], environment: [String: String]? = nil, workingDirectory: String? = nil,
        within deadline: Duration = .seconds(120)
    ) async throws -> Finished {
        let files = try OutputFiles(name: URL(fileURLWithPath: executable).lastPathComponent)
        defer { files.remove() }
        let child = try ChildProcess(
            executable, arguments, environment: environment, workingDirectory: workingDirectory, standardOutput: .file(files.output),
            standardError: .file(files.errors))
        do {
            let status = try await child.exit(within: deadline)
            return Finished(status: status, output: files.read(files.output), errors: files.read(files.errors))
        } catch {
            await child.stop(grace: .zero)
            throw error
        }
    }

    /// Like ``run(_:_:environment:workingDirectory:within:)``, and throws unless the command exits 0;
    /// returns its standard output.
    @discardableResult
    public static func succeed(
        _ executable: String, _ arguments: [String] = [], environment: [String: String]? = nil, workingDirectory: String? = nil,
        within deadline: Duration = .seconds(120)
    ) async throws -> String {
        let finished = try await run(executable, arguments, environment: environment, workingDirectory: workingDirectory, within: deadline)
        guard finished.status.succeeded else {
            throw ChildProcessError.failed(
                command: ([executable] + arguments).joined(separator: " "), status: finished.status, output: finished.output + finished.errors)
        }
        return finished.output
    }
}

/// Two temporary files for a child's output streams.
public struct OutputFiles: Sendable {
    public let output: String
    public let errors: String

    public init(name: String) throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path
        output = base + ".out"
        errors = base + ".err"
        for path in [output, errors] { _ = FileManager.default.createFile(atPath: path, contents: nil) }
    }

    /// What has been written to `path` so far.
    public func read(_ path: String) -> String {
        String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
    }

    public func remove() {
        for path in [output, errors] { try? FileManager.default.removeItem(atPath: path) }
    }
}

/// The exit status and the tasks waiting for it. Shared by the reaping thread, signalling callers and
/// waiting tasks, hence the lock: an `NSLock` (pthread mutex), which ThreadSanitizer understands.
private final class ChildState: @unchecked Sendable {
    private let lock = NSLock()
    private var exited: ExitStatus?
    private var waiters: [UInt64: CheckedContinuation<ExitStatus?, Never>] = [:]
    private var nextWaiter: UInt64 = 0

    var status: ExitStatus? { lock.withLock { exited } }

    /// Runs `body` under the lock if the process has not been reaped: the reaper reaps under the same lock,
    /// so a signal never reaches a recycled pid.
    func whileUnreaped(_ body: () -> Void) {
        lock.withLock { if exited == nil { body() } }
    }

    /// On the reaping thread: waits for `pid` to exit without reaping it (WNOWAIT), then reaps it under the
    /// lock and resumes every waiter.
    func reap(_ pid: pid_t) {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        let resumed: [CheckedContinuation<ExitStatus?, Never>]
        let status: ExitStatus
        lock.lock()
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        status = ExitStatus(raw: raw)
        exited = status
        resumed = Array(waiters.values)
        waiters.removeAll()
        lock.unlock()
        for continuation in resumed { continuation.resume(returning: status) }
    }

    /// The exit status, or nil when `deadline` passes or the task is cancelled first.
    func wait(deadline: Duration) async -> ExitStatus? {
        let id = lock.withLock {
            nextWaiter += 1
            return nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<ExitStatus?, Never>) in
                let early: ExitStatus?? = lock.withLock {
                    if let exited { return .some(exited) }
                    if Task.isCancelled { return .some(nil) }
                    waiters[id] = continuation
                    return nil
                }
                if let early {
                    continuation.resume(returning: early)
                    return
                }
                // A Dispatch timer, not a sleeping task: it takes no cooperative thread either.
                let (seconds, attoseconds) = deadline.components
                let nanoseconds = max(0, seconds) * 1_000_000_000 + attoseconds / 1_000_000_000
                DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: nanoseconds))) { [self] in
                    self.expire(id)
                }
            }
        } onCancel: {
            expire(id)
        }
    }

    private func expire(_ id: UInt64) {
        lock.withLock { waiters.removeValue(forKey: id) }?.resume(returning: nil)
    }
}
