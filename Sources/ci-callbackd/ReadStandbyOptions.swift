import ArgumentParser
import JobStore

/// Lookups and listings from a hot standby: `READ_DATABASE_URL`, `READ_POOL_SIZE`, `READ_MAX_LAG` and
/// `READ_LAG_CHECK_INTERVAL`.
struct ReadStandbyOptions: ParsableArguments {
    @Option(
        name: .customLong("read-database-url"),
        help: "A hot standby of DATABASE_URL's database for lookups and listings; unset = all reads on the primary. Prefer the environment. [env: READ_DATABASE_URL]")
    var readDatabaseURL: String?

    @Option(name: .customLong("read-pool-size"), help: "Connections to the read standby. [env: READ_POOL_SIZE, default: \(ServeDefaults.readPoolSize)]")
    var readPoolSize: String?

    @Option(
        name: .customLong("read-max-lag"),
        help: "Replay lag beyond which reads go to the primary, e.g. 1s. [env: READ_MAX_LAG, default: \(SettingFormat.duration(ServeDefaults.readRouting.maxLag))]")
    var readMaxLag: String?

    @Option(
        name: .customLong("read-lag-check-interval"),
        help: "Pause between two measurements of the standby's lag; well under read-max-lag. [env: READ_LAG_CHECK_INTERVAL, default: \(SettingFormat.duration(ServeDefaults.readRouting.checkInterval))]")
    var readLagCheckInterval: String?

    struct Resolved {
        var url: String
        var poolSize: Int
        var routing: ReadStandby.Configuration
    }

    /// nil without `READ_DATABASE_URL`.
    func resolve(_ resolver: SettingResolver) throws -> Resolved? {
        let poolSize = try resolver.required(
            flag: readPoolSize, flagName: "read-pool-size", env: "READ_POOL_SIZE", default: ServeDefaults.readPoolSize,
            parse: SettingParsers.positiveInt, expected: "a positive whole number")
        var routing = ReadStandby.Configuration()
        routing.maxLag = try resolver.required(
            flag: readMaxLag, flagName: "read-max-lag", env: "READ_MAX_LAG", default: routing.maxLag, parse: SettingParsers.duration,
            expected: "a duration such as 1s")
        routing.checkInterval = try resolver.required(
            flag: readLagCheckInterval, flagName: "read-lag-check-interval", env: "READ_LAG_CHECK_INTERVAL", default: routing.checkInterval,
            parse: SettingParsers.duration, expected: "a duration such as 200ms")
        guard routing.checkInterval < routing.maxLag else {
            throw ValidationError(
                "READ_LAG_CHECK_INTERVAL (--read-lag-check-interval, \(SettingFormat.duration(routing.checkInterval))) must be shorter than READ_MAX_LAG (--read-max-lag, \(SettingFormat.duration(routing.maxLag))): the standby is only known to be fresh as of the last check"
            )
        }
        guard
            let url = try resolver.value(
                flag: readDatabaseURL, flagName: "read-database-url", env: "READ_DATABASE_URL", default: nil, parse: { $0 }, expected: "")
        else { return nil }
        return Resolved(url: url, poolSize: poolSize, routing: routing)
    }
}
