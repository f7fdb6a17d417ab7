import Foundation
import TimeUnits

/// How long stored data is kept, and how far ahead partitions are made. One value, read by the in-process
/// retention run and the `ci-callbackd retention` command alike.
public struct RetentionPolicy: Sendable, Hashable {
    /// Raw bodies (`ci_callbacks`) and their digests, the deduplication window (`CALLBACK_RETENTION`).
    /// A day's partition is dropped once its last instant is this old, so bodies are kept this long and at
    /// most a day more. nil keeps them forever. Default: 30 days.
    public var callbackRetention: Duration? = .seconds(30 * 86_400)
    /// Jobs (`ci_jobs`, the watermark text) and their history (`ci_job_events`, by month) (`JOB_RETENTION`).
    /// A job goes when its last callback is this old. nil keeps them forever (the default).
    public var jobRetention: Duration?
    /// Day partitions of `ci_callbacks` made ahead of today; month partitions of the history are made for
    /// this month and the next. Default: 7.
    public var daysAhead = 7
    /// Rows deleted per statement when digests or jobs go (each batch its own short transaction). Default: 10,000.
    public var deleteBatch = 10_000
    /// `lock_timeout` of each DDL statement: a partition change stuck behind a long transaction gives up
    /// (and is tried again next run) instead of queueing every insert behind its lock. Default: 5 s.
    public var lockTimeout: Duration = .seconds(5)

    public init() {}
}

/// A range-partitioned table this service manages, and how long its partitions are.
public struct PartitionedTable: Sendable, Hashable {
    public enum Period: Sendable, Hashable {
        case day
        case month
    }

    public var name: String
    public var period: Period

    /// Raw bodies, a partition per UTC day.
    public static let callbacks = PartitionedTable(name: "ci_callbacks", period: .day)
    /// Job history, a partition per UTC month (kept as long as jobs: often forever, so fewer, larger partitions).
    public static let events = PartitionedTable(name: "ci_job_events", period: .month)

    static let utc: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()

    /// The start of the period holding `date`.
    func periodStart(_ date: Date) -> Date {
        let parts: Set<Calendar.Component> = period == .day ? [.year, .month, .day] : [.year, .month]
        return Self.utc.date(from: Self.utc.dateComponents(parts, from: date))!
    }

    /// The start of the period after the one starting at `start`.
    func periodEnd(_ start: Date) -> Date {
        Self.utc.date(byAdding: period == .day ? .day : .month, value: 1, to: start)!
    }

    /// `ci_callbacks_p20261205`, `ci_job_events_p202612`: the table name and the partition's first UTC day or month.
    public func partitionName(startingAt start: Date) -> String {
        let parts = Self.utc.dateComponents([.year, .month, .day], from: start)
        let year = String(format: "%04d", parts.year!)
        let month = String(format: "%02d", parts.month!)
        let day = String(format: "%02d", parts.day!)
        return "\(name)_p\(year)\(month)\(period == .day ? day : "")"
    }
}

/// One partition as the catalog describes it; a bound is nil for MINVALUE/MAXVALUE.
public struct PartitionInfo: Sendable, Hashable {
    public var name: String
    public var lower: Date?
    public var upper: Date?
    /// A `DETACH … CONCURRENTLY` was interrupted: the partition must be finalized before it is dropped.
    public var detachPending: Bool

    public init(name: String, lower: Date?, upper: Date?, detachPending: Bool = false) {
        self.name = name
        self.lower = lower
        self.upper = upper
        self.detachPending = detachPending
    }
}

/// What a retention run does to one partitioned table.
public enum PartitionAction: Sendable, Hashable {
    /// Make the partition `[from, to)`.
    case create(name: String, from: Date, to: Date)
    /// Detach (concurrently, or finish an interrupted detach) and drop the partition: every row is older
    /// than the retention.
    case drop(name: String, detachPending: Bool)
}

/// Decides, without I/O, which partitions a run makes and drops. Pure, with the clock passed in.
public enum RetentionPlan {
    /// The partitions to make so that `ahead` whole periods after the current one are covered (gaps only;
    /// an existing partition, such as the legacy one reaching MINVALUE, is never overlapped), then the
    /// partitions to drop: those whose upper bound is at least `retention` old. A partition that holds
    /// `now` or later is never dropped, whatever the retention; nil retention drops nothing.
    public static func actions(
        for table: PartitionedTable, existing: [PartitionInfo], now: Date, retention: Duration?, ahead: Int
    ) -> [PartitionAction] {
        var actions: [PartitionAction] = []
        var start = table.periodStart(now)
        for _ in 0...max(ahead, 0) {
            let end = table.periodEnd(start)
            if let gap = uncovered(from: start, to: end, by: existing) {
                actions.append(.create(name: table.partitionName(startingAt: gap.lowerBound), from: gap.lowerBound, to: gap.upperBound))
            }
            start = end
        }
        if let retention {
            let cutoff = now.addingTimeInterval(-retention.inSeconds)
            for partition in existing.sorted(by: { ($0.upper ?? .distantFuture) < ($1.upper ?? .distantFuture) }) {
                guard let upper = partition.upper, upper <= min(cutoff, now) else { continue }
                actions.append(.drop(name: partition.name, detachPending: partition.detachPending))
            }
        }
        return actions
    }

    /// The part of `[from, to)` no existing partition covers, when it is one range at the end (a partition
    /// ending inside it, as the legacy one may); nil when it is covered or the gap is not of that shape.
    static func uncovered(from: Date, to: Date, by existing: [PartitionInfo]) -> Range<Date>? {
        var lower = from
        var upper = to
        for partition in existing {
            let partLower = partition.lower ?? .distantPast
            let partUpper = partition.upper ?? .distantFuture
            guard partLower < upper && partUpper > lower else { continue }
            if partLower <= lower {
                lower = max(lower, partUpper)
            } else {
                upper = min(upper, partLower)
            }
            if lower >= upper { return nil }
        }
        return lower..<upper
    }

    /// The receive time below which no body partition remains: digests older than this belong to dropped
    /// bodies. nil while a partition reaches MINVALUE (the legacy one) or none exists.
    public static func digestCutoff(remaining: [PartitionInfo]) -> Date? {
        guard !remaining.isEmpty else { return nil }
        var cutoff = Date.distantFuture
        for partition in remaining {
            guard let lower = partition.lower else { return nil }
            cutoff = min(cutoff, lower)
        }
        return cutoff
    }
}
