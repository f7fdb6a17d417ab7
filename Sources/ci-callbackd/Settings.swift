import ArgumentParser
import Foundation
import Logging
import TimeUnits

/// Resolves a setting from its command-line flag, else its environment variable, else a default, so a
/// bad value names where it came from.
struct SettingResolver {
    var environment: [String: String] = ProcessInfo.processInfo.environment

    func value<T>(
        flag: String?, flagName: String, env: String, default defaultValue: T?, parse: (String) -> T?, expected: String
    ) throws -> T? {
        if let flag {
            guard let value = parse(flag) else {
                throw ValidationError("--\(flagName) '\(flag)' is not valid: expected \(expected)")
            }
            return value
        }
        if let text = environment[env], !text.isEmpty {
            guard let value = parse(text) else {
                throw ValidationError("\(env)='\(text)' is not valid: expected \(expected)")
            }
            return value
        }
        return defaultValue
    }

    func required<T>(
        flag: String?, flagName: String, env: String, default defaultValue: T, parse: (String) -> T?, expected: String
    ) throws -> T {
        try value(flag: flag, flagName: flagName, env: env, default: defaultValue, parse: parse, expected: expected) ?? defaultValue
    }

    /// `--request-read-timeout` / `REQUEST_READ_TIMEOUT`, also read under its deprecated names
    /// `--header-timeout` / `HEADER_TIMEOUT` (it always bounded the body too, so the old name misled).
    ///
    /// A flag beats an environment variable, whichever name each uses. Giving both names at the same level
    /// (both flags, or both variables) is an error, since which one was meant is a guess.
    func requestReadTimeout(flag: String?, deprecatedFlag: String?, default defaultValue: Duration) throws -> Duration {
        if flag != nil, deprecatedFlag != nil {
            throw ValidationError("--request-read-timeout and --header-timeout are one setting (--header-timeout is its deprecated name): give only --request-read-timeout")
        }
        let newEnvironment = environment["REQUEST_READ_TIMEOUT"].map { !$0.isEmpty } ?? false
        let oldEnvironment = environment["HEADER_TIMEOUT"].map { !$0.isEmpty } ?? false
        if newEnvironment, oldEnvironment {
            throw ValidationError("REQUEST_READ_TIMEOUT and HEADER_TIMEOUT are one setting (HEADER_TIMEOUT is its deprecated name): set only REQUEST_READ_TIMEOUT")
        }
        let useOldFlag = flag == nil && deprecatedFlag != nil
        return try required(
            flag: flag ?? deprecatedFlag, flagName: useOldFlag ? "header-timeout" : "request-read-timeout",
            env: oldEnvironment ? "HEADER_TIMEOUT" : "REQUEST_READ_TIMEOUT", default: defaultValue,
            parse: SettingParsers.duration, expected: "a duration such as 10s")
    }

    /// `--database-url` or `DATABASE_URL`; there is no sensible default, so its absence is an error.
    func databaseURL(_ flag: String?) throws -> String {
        guard let url = try value(flag: flag, flagName: "database-url", env: "DATABASE_URL", default: nil, parse: { $0 }, expected: "")
        else {
            throw ValidationError(
                "no database configured: pass --database-url or set DATABASE_URL (a libpq URI or conninfo); scripts/run sets up a local cluster for you"
            )
        }
        return url
    }
}

/// Parsers for setting values, shared by flags and environment variables.
enum SettingParsers {
    static func port(_ text: String) -> Int? {
        guard let port = Int(text), (0...65_535).contains(port) else { return nil }
        return port
    }

    static func positiveInt(_ text: String) -> Int? {
        guard let value = Int(text), value > 0 else { return nil }
        return value
    }

    static func nonNegativeInt(_ text: String) -> Int? {
        guard let value = Int(text), value >= 0 else { return nil }
        return value
    }

    /// A byte size: `1048576`, `64k`/`64KiB`, `1m`/`1MiB`.
    static func byteSize(_ text: String) -> Int? {
        let lower = text.lowercased().replacingOccurrences(of: "ib", with: "").replacingOccurrences(of: "b", with: "")
        let multipliers: [(String, Int)] = [("k", 1024), ("m", 1024 * 1024), ("g", 1024 * 1024 * 1024)]
        for (suffix, multiplier) in multipliers where lower.hasSuffix(suffix) {
            guard let value = Int(lower.dropLast()), value > 0 else { return nil }
            return value * multiplier
        }
        return positiveInt(lower)
    }

    /// A duration: `10s`, `250ms`, `2m`, `30d`, or a plain number of seconds.
    static func duration(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, seconds) in units where text.hasSuffix(suffix) {
            guard let value = Double(text.dropLast(suffix.count)), value > 0, value.isFinite else { return nil }
            return .milliseconds(Int64((value * seconds * 1000).rounded()))
        }
        guard let value = Double(text), value > 0, value.isFinite else { return nil }
        return .milliseconds(Int64((value * 1000).rounded()))
    }

    /// A duration, where `0` is allowed (reconcile at once, list in every sweep, no statement timeout).
    static func durationOrZero(_ text: String) -> Duration? {
        if let zero = Double(text.trimmingCharacters(in: CharacterSet(charactersIn: "mshd"))), zero == 0 { return .zero }
        return duration(text)
    }

    /// A retention: a duration (`30d`), or `forever` for none. `.some(nil)` is forever.
    static func retention(_ text: String) -> Duration?? {
        if text.lowercased() == "forever" { return .some(nil) }
        return duration(text).map { .some($0) }
    }

    static func logLevel(_ text: String) -> Logger.Level? {
        Logger.Level(rawValue: text.lowercased())
    }

    static func bool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "1", "true", "yes", "on": true
        case "0", "false", "no", "off": false
        default: nil
        }
    }
}

/// Writes a default the way a user would type it, so help text shows the library's own default.
enum SettingFormat {
    /// `250ms`, `60s`, `5m`, `24h`: a larger unit only once the smaller one passes 120.
    static func duration(_ duration: Duration) -> String {
        let milliseconds = duration.inMilliseconds
        guard milliseconds % 1000 == 0 else { return "\(milliseconds)ms" }
        let seconds = milliseconds / 1000
        guard seconds > 120, seconds % 60 == 0 else { return "\(seconds)s" }
        let minutes = seconds / 60
        guard minutes > 120, minutes % 60 == 0 else { return "\(minutes)m" }
        let hours = minutes / 60
        guard hours > 48, hours % 24 == 0 else { return "\(hours)h" }
        return "\(hours / 24)d"
    }

    /// `1m`, `16k`, or plain bytes: the largest unit that divides the size.
    static func byteSize(_ bytes: Int) -> String {
        for (suffix, unit) in [("m", 1024 * 1024), ("k", 1024)] where bytes % unit == 0 && bytes > 0 {
            return "\(bytes / unit)\(suffix)"
        }
        return "\(bytes)"
    }
}
