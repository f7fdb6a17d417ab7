import ArgumentParser
import CallbackService
import Foundation
import HTTPListener
import HTTPWire
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

@testable import ci_callbackd

/// `ci-callbackd`'s command line: what the help says, how flags parse, and how bad values are reported.
@Suite("Command line")
struct CommandLineTests {
    private static var serveHelp: String { CICallbackd.helpMessage(for: Serve.self, columns: 200) }

    /// Every environment variable the service's code reads (a `SettingResolver` call's `env:`, an
    /// `environment[…]` lookup, or `CIConfiguration.fromEnvironment`'s `value(…)`/`required(…)`).
    private static func environmentVariablesRead() throws -> Set<String> {
        let pattern = try NSRegularExpression(pattern: #"(?:env: |environment\[|\bvalue\(|\brequired\()"([A-Z][A-Z0-9_]*)""#)
        var names = Set<String>()
        let sources = repositoryRoot.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)
        while let file = files?.nextObject() as? URL {
            // The simulator is another program with settings of its own.
            guard file.pathExtension == "swift", !file.path.contains("imulator") else { continue }
            let text = try String(contentsOf: file, encoding: .utf8)
            for match in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                if let range = Range(match.range(at: 1), in: text) { names.insert(String(text[range])) }
            }
        }
        return names
    }

    private static func mentions(_ text: String, _ name: String) -> Bool {
        text.range(of: "(?<![A-Z0-9_])\(name)(?![A-Z0-9_])", options: .regularExpression) != nil
    }

    @Test func serveHelp_ListsEveryEnvironmentVariableTheCodeReads() throws {
        let names = try Self.environmentVariablesRead()
        // The scan must find what it is for; an empty set would make the checks below pass vacuously.
        #expect(names.isSuperset(of: ["DATABASE_URL", "PORT", "CI_SECRET_ID", "CI_ENDPOINT", "PUBLIC_CALLBACK_URL", "RECONCILE_WINDOW", "VERIFY_INTERVAL"]))
        let help = Self.serveHelp
        for name in names.sorted() {
            #expect(Self.mentions(help, name), "ci-callbackd serve --help does not mention \(name)")
        }
    }

    @Test func readme_ConfigurationTables_ListEveryEnvironmentVariableTheCodeReads() throws {
        let readme = try String(contentsOf: repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let tableRows = readme.split(separator: "\n").filter { $0.hasPrefix("|") }.joined(separator: "\n")
        for name in try Self.environmentVariablesRead().sorted() {
            #expect(tableRows.contains("`\(name)`"), "no README table row names `\(name)`")
        }
    }

    @Test func serveHelp_ShowsTheLibraryTypesDefaults() {
        let help = Self.serveHelp
        let server = HTTPServerConfiguration()
        let expected = [
            "PORT, default: \(server.port)]",
            "DB_POOL_SIZE, default: \(PostgresPool.Configuration(conninfo: "").size)]",
            "MAX_WAITERS, default: \(JobCompletionListener.Configuration(conninfo: "").maxWaiters)]",
            "MAX_WAIT, default: \(SettingFormat.duration(CallbackApplication.Configuration(requiredSchemaVersion: 1).maxWait))]",
            "SHUTDOWN_GRACE, default: \(SettingFormat.duration(server.shutdownGracePeriod))]",
            "MAX_BODY_BYTES, default: \(SettingFormat.byteSize(server.limits.parser.maxBodyBytes))]",
            "MAX_INFLIGHT_BODY_BYTES, default: \(SettingFormat.byteSize(server.limits.maxInflightBodyBytes))]",
            "RECONCILE_WINDOW",
        ]
        for text in expected {
            #expect(help.contains(text), "serve --help lacks \(text)")
        }
        // And in the form the README documents.
        #expect(help.contains("MAX_WAIT, default: 60s]"))
        #expect(help.contains("MAX_BODY_BYTES, default: 1m]"))
        #expect(help.contains("MAX_INFLIGHT_BODY_BYTES, default: 64m]"))
    }

    @Test func settingFormat_WritesDefaultsAsAUserTypesThem() {
        #expect(SettingFormat.duration(.seconds(60)) == "60s")
        #expect(SettingFormat.duration(.seconds(300)) == "5m")
        #expect(SettingFormat.duration(.seconds(10)) == "10s")
        #expect(SettingFormat.duration(.seconds(24 * 3600)) == "24h")
        #expect(SettingFormat.duration(.milliseconds(250)) == "250ms")
        #expect(SettingFormat.byteSize(16 * 1024) == "16k")
        #expect(SettingFormat.byteSize(1024 * 1024) == "1m")
        #expect(SettingFormat.byteSize(1000) == "1000")
        // Whatever it writes, the parser reads back.
        for duration in [Duration.seconds(5), .seconds(300), .milliseconds(1500)] {
            #expect(SettingParsers.duration(SettingFormat.duration(duration)) == duration)
        }
    }

    @Test func submitHelp_ShowsTheCallbackFormatDefaultOnce() {
        let help = CICallbackd.helpMessage(for: Submit.self, columns: 200)
        #expect(help.components(separatedBy: "default: json").count - 1 == 1, "\(help)")
    }

    @Test func rootHelp_ListsIngestSQL() {
        #expect(CICallbackd.helpMessage(columns: 200).contains("ingest-sql"))
    }

    @Test func booleanFlags_WorkBare_AndHaveANoForm() throws {
        #expect(try Serve.parse(["--verify-callbacks"]).verifyCallbacks == true)
        #expect(try Serve.parse(["--no-verify-callbacks"]).verifyCallbacks == false)
        #expect(try Serve.parse([]).verifyCallbacks == nil)
        #expect(try Serve.parse(["--auto-migrate"]).autoMigrate == true)
        #expect(try Serve.parse(["--no-auto-migrate"]).autoMigrate == false)
        #expect(try Serve.parse([]).autoMigrate == nil)
    }

    @Test func submit_JobLevelOutOfRange_NamesTheFlagAndShowsSubmitUsage() async throws {
        let run = try await CommandRun.finished(["submit", "--object", "input/demo.mp4", "--job-level", "7"])
        #expect(run.exitCode == ExitCode.validationFailure.rawValue)
        #expect(run.errors.contains("--job-level must be 0, 1 or 2"), "\(run.errors)")
        #expect(!run.errors.contains("JobLevel"), "\(run.errors)")
        #expect(run.errors.contains("Usage: ci-callbackd submit"), "\(run.errors)")
    }

    @Test func serve_BadEnvironmentValue_ShowsServeUsage() async throws {
        let run = try await CommandRun.finished(["serve"], environment: ["DATABASE_URL": testDatabaseURL, "PORT": "eighty"])
        #expect(run.exitCode == ExitCode.validationFailure.rawValue)
        #expect(run.errors.contains("PORT='eighty' is not valid"), "\(run.errors)")
        #expect(run.errors.contains("Usage: ci-callbackd serve"), "\(run.errors)")
        #expect(run.errors.contains("See 'ci-callbackd serve --help'"), "\(run.errors)")
    }

    @Test func serve_DatabaseThatDoesNotExist_ExitsAtOnceSayingWhatToDo() async throws {
        let missing = Self.replacingDatabaseName(in: testDatabaseURL, with: "ci_callbackd_no_such_database")
        // Retrying cannot create the database: the service gives up at once (it retries a database
        // that is unreachable for 30 s, so the deadline is below that).
        let run = try await CommandRun.finished(["serve", "--port", "0"], environment: ["DATABASE_URL": missing], within: .seconds(25))
        #expect(run.exitCode == 1)
        #expect(run.errors.contains("the database named in DATABASE_URL (--database-url) does not exist: create it"), "\(run.errors)")
    }

    @Test func serve_SIGTERM_StopsGracefullyAndExitsZero() async throws {
        // Its own schema, so the migrations it applies touch nothing another test uses.
        let schema = "t_cli_\(UInt32.random(in: 0...UInt32.max))"
        let admin = try PostgresConnection.connect(testDatabaseURL)
        defer {
            try? admin.execute(simpleSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE")
            admin.close()
        }
        try admin.execute(simpleSQL: "CREATE SCHEMA \(schema)")
        let separator = testDatabaseURL.contains("?") ? "&" : "?"
        let run = try CommandRun(
            ["serve", "--host", "127.0.0.1", "--port", "0", "--migrations-dir", repositoryRoot.appendingPathComponent("migrations").path],
            environment: ["DATABASE_URL": testDatabaseURL + separator + "options=-csearch_path%3D\(schema)"])
        // Generous: it waits its turn for the database's migration lock behind the rest of the suite's services.
        try await run.waitUntil(within: .seconds(240), "serve did not start listening; stderr: \(run.errors)") {
            run.errors.contains("http server listening")
        }
        run.child.terminate()
        // The process (not a reaper that collects orphans now and then) sees it exit: measured at 0.26 s.
        let status = try await run.waitForExit(within: .seconds(15))
        #expect(status == 0, "\(run.errors)")
        #expect(run.errors.contains("stopped"))
    }

    private static func replacingDatabaseName(in url: String, with name: String) -> String {
        guard let slash = url.range(of: "@/") else { return url + " dbname=\(name)" }
        let end = url[slash.upperBound...].firstIndex(of: "?") ?? url.endIndex
        return url.replacingCharacters(in: slash.upperBound..<end, with: name)
    }
}
