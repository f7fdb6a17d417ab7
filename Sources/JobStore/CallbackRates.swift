import Foundation
import PostgresLibPQ

/// How the per-minute callback counts behind the console's overview are kept (``JobStore/rollUpCallbackRates(now:policy:)``).
public struct CallbackRollupPolicy: Sendable, Hashable {
    /// Minutes before the watermark that each run counts again, so that a callback committed up to this
    /// long after its receive instant (a batch, a retry) is still counted in its minute.
    public var settle: Duration = .seconds(120)
    /// Most of the received range one transaction counts, so that catching up after a pause (the first
    /// run after the migration, a stopped service) is a series of short transactions.
    public var chunk: Duration = .seconds(3600)
    /// How far back minutes are kept and counted: the overview shows one day.
    public var keep: Duration = .seconds(2 * 86400)

    public init() {}
}

/// What one rollup run did.
public struct CallbackRollupReport: Sendable, Hashable {
    /// Another replica was rolling up; this run did nothing.
    public var skipped = false
    /// The watermark afterwards, microseconds since the epoch: minutes before it are counted.
    public var countedBeforeMicros: Int64 = 0
    /// Transactions the run took (one per ``CallbackRollupPolicy/chunk``).
    public var chunks = 0
}

extension JobStore {
    /// Counts the callbacks received since the rollup's watermark (less ``CallbackRollupPolicy/settle``)
    /// into `ci_callback_minutes` and moves the watermark to the start of `now`'s minute. The count reads
    /// the range through the BRIN index on `received_at`; a minute counted again is replaced, so runs are
    /// idempotent, and a replica that finds another one's run under way skips.
    public func rollUpCallbackRates(now: Date = Date(), policy: CallbackRollupPolicy = CallbackRollupPolicy()) async throws -> CallbackRollupReport {
        try await withConnection { connection in
            var report = CallbackRollupReport()
            let end = CallbackRateSQL.minuteFloor(Self.epochMicros(now))
            while true {
                let done: Bool? = try connection.transaction { connection in
                    let locked = try connection.query(CallbackRateSQL.lockWatermark).strict("rollup watermark") { row throws(StoredRowError) in
                        try row.int64("counted_before_micros")
                    }
                    guard let mark = locked.first else { return nil }
                    let (from, to) = CallbackRateSQL.chunk(watermark: mark, end: end, policy: policy)
                    report.countedBeforeMicros = max(mark, to)
                    guard from < to else { return true }
                    try connection.query(CallbackRateSQL.count(fromMicros: from, toMicros: to))
                    try connection.query(CallbackRateSQL.advance(toMicros: to, forgetBeforeMicros: end - policy.keep.microseconds))
                    report.chunks += 1
                    return to >= end
                }
                guard let done else {
                    report.skipped = true
                    return report
                }
                if done { return report }
            }
        }
    }
}

extension Duration {
    /// Whole microseconds, for SQL that counts time in microseconds since the epoch.
    var microseconds: Int64 {
        components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000
    }
}

/// The rollup's statements and the arithmetic of its ranges, pure so that it is unit-tested without a database.
enum CallbackRateSQL {
    static let minuteMicros: Int64 = 60_000_000

    static func minuteFloor(_ micros: Int64) -> Int64 {
        micros - ((micros % minuteMicros) + minuteMicros) % minuteMicros
    }

    /// The range one transaction counts: from the watermark less the settle time (never before what is
    /// kept) to at most a chunk later, and never past `end`.
    static func chunk(watermark: Int64, end: Int64, policy: CallbackRollupPolicy) -> (from: Int64, to: Int64) {
        let from = minuteFloor(max(watermark - policy.settle.microseconds, end - policy.keep.microseconds))
        let to = min(end, max(minuteFloor(from + policy.chunk.microseconds), from + minuteMicros))
        return (from, to)
    }

    static let lockWatermark: SQLQuery = """
        SELECT (extract(epoch FROM counted_before) * 1000000)::bigint AS counted_before_micros
        FROM ci_callback_rollup FOR UPDATE SKIP LOCKED
        """

    /// Counts `[from, to)` per minute and outcome, replacing what an earlier run counted for those minutes.
    static func count(fromMicros: Int64, toMicros: Int64) -> SQLQuery {
        """
        INSERT INTO ci_callback_minutes (minute, outcome, callbacks)
        SELECT date_trunc('minute', received_at, 'UTC'), outcome, count(*)::int
        FROM ci_callbacks
        WHERE received_at >= 'epoch'::timestamptz + \(fromMicros)::bigint * interval '1 microsecond'
          AND received_at < 'epoch'::timestamptz + \(toMicros)::bigint * interval '1 microsecond'
        GROUP BY 1, 2
        ON CONFLICT (minute, outcome) DO UPDATE SET callbacks = EXCLUDED.callbacks
        """
    }

    static func advance(toMicros: Int64, forgetBeforeMicros: Int64) -> SQLQuery {
        """
        WITH forgotten AS (
            DELETE FROM ci_callback_minutes WHERE minute < 'epoch'::timestamptz + \(forgetBeforeMicros)::bigint * interval '1 microsecond'
        )
        UPDATE ci_callback_rollup
        SET counted_before = greatest(counted_before, 'epoch'::timestamptz + \(toMicros)::bigint * interval '1 microsecond')
        """
    }
}
