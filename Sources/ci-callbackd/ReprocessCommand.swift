import ArgumentParser
import Foundation
import JobStore
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `ci-callbackd reprocess`: re-decodes stored bodies with this build's decoder and re-applies them.
struct Reprocess: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-decodes stored raw bodies with this build's decoder and re-applies them under the usual precedence.",
        discussion: """
            Running it twice changes nothing. Bodies once refused that now decode are applied too. Progress is a bar \
            on a terminal and a log line every 10 s otherwise. Ctrl-C (SIGINT) or SIGTERM stops it after the current \
            page; the same command resumes there (--from-start begins again).
            """)

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var timeouts: DatabaseTimeoutOptions

    @Option(help: "Only bodies received at or after this RFC 3339 instant, e.g. 2026-12-01T00:00:00Z.")
    var since: String?

    @Option(help: "Only bodies received before this RFC 3339 instant.")
    var until: String?

    @Option(help: "Only the callbacks in this job's history.")
    var job: String?

    @Flag(name: .customLong("dry-run"), help: "Count what would change, and roll every change back.")
    var dryRun = false

    @Flag(name: .customLong("from-start"), help: "Forget where an interrupted run with the same arguments stopped.")
    var fromStart = false

    static func instant(_ text: String?, name: String) throws -> Date? {
        guard let text else { return nil }
        guard let date = try? Date(text, strategy: .iso8601) else {
            throw ValidationError("--\(name) '\(text)' is not valid: expected an RFC 3339 instant such as 2026-12-01T00:00:00Z")
        }
        return date
    }

    func run() async throws {
        let resolver = SettingResolver()
        let databaseURL = try resolver.databaseURL(database.databaseURL)
        let logger = try database.makeLogger(resolver)
        let scope = ReprocessScope(since: try Self.instant(since, name: "since"), until: try Self.instant(until, name: "until"), jobID: job)
        let reprocessor = Reprocessor(conninfo: databaseURL, settings: try timeouts.resolve(resolver).connection, logger: logger)
        let display = ReprocessProgressDisplay(terminal: isatty(STDERR_FILENO) == 1, logger: logger)
        let task = Task { try await reprocessor.run(scope, dryRun: dryRun, fromStart: fromStart, progress: display.update) }
        // Signals end the run between pages (each page commits with its checkpoint), not mid-page.
        let signals = [SIGINT, SIGTERM].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { task.cancel() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        do {
            let counts = try await task.value
            display.finish()
            print((dryRun ? "dry run, nothing changed: " : "done: ") + counts.description)
        } catch is CancellationError {
            display.finish()
            FileHandle.standardError.write(Data("interrupted; run the same command again to resume\n".utf8))
            throw ExitCode(130)
        } catch {
            throw DatabaseStartupError.translating(error)
        }
    }
}

/// Shows a run's progress: a bar redrawn in place on a terminal, else a log line at most every 10 s.
final class ReprocessProgressDisplay: Sendable {
    private let terminal: Bool
    private let logger: Logger
    /// Updated from the run's thread, read at the end from the command's task.
    private let state = Mutex<(lastLog: ContinuousClock.Instant?, drawn: Bool)>((nil, false))

    init(terminal: Bool, logger: Logger) {
        self.terminal = terminal
        self.logger = logger
    }

    func update(_ counts: ReprocessCounts) {
        if terminal {
            FileHandle.standardError.write(Data(("\r" + Self.bar(counts, width: 30)).utf8))
            state.withLock { $0.drawn = true }
            return
        }
        let now = ContinuousClock.now
        let due = state.withLock { state in
            guard state.lastLog.map({ $0.duration(to: now) >= .seconds(10) }) ?? true else { return false }
            state.lastLog = now
            return true
        }
        if due {
            logger.info("reprocess progress", metadata: ["reprocess.read": "\(counts.read)", "reprocess.total": "\(counts.total)",
                "reprocess.jobs_applied": "\(counts.jobsApplied)", "reprocess.rejected_now_accepted": "\(counts.rejectedNowAccepted)"])
        }
    }

    func finish() {
        if state.withLock({ $0.drawn }) { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    /// `[#########---------------------]  30% 300/1000 bodies, 12 jobs applied`.
    static func bar(_ counts: ReprocessCounts, width: Int) -> String {
        let fraction = counts.total > 0 ? min(Double(counts.read) / Double(counts.total), 1) : 1
        let filled = Int((fraction * Double(width)).rounded(.down))
        let percent = String(format: "%3d%%", Int((fraction * 100).rounded(.down)))
        return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] "
            + "\(percent) \(counts.read)/\(counts.total) bodies, \(counts.jobsApplied) jobs applied"
    }
}
