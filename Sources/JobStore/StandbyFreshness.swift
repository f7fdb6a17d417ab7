/// Where a read goes, and why it does not go to the hot standby when it does not.
public enum ReadRoute: Sendable, Hashable {
    case standby
    case primary(ReadFallback)
}

/// Why a read that could have gone to the standby went to the primary: the `reason` label of
/// `db_reads_total{target="primary"}`.
public enum ReadFallback: String, Sendable, Hashable, CaseIterable {
    /// No standby is configured (`READ_DATABASE_URL` unset), or the read needs the primary (a `?wait=`).
    case primaryOnly = "primary_only"
    /// The last probe could not reach the standby, or found it is not in recovery.
    case standbyDown = "standby_down"
    /// The standby had not replayed the primary's WAL of `READ_MAX_LAG` ago.
    case lagging
    /// This process acknowledged a callback for the job after the last point the standby is known to have replayed.
    case recentWrite = "recent_write"
    /// The standby did not have the job (or the callback, or its body): the primary may.
    case notFound = "not_found"
    /// The standby failed the read (unreachable, a recovery conflict, a timeout).
    case standbyError = "standby_error"
}

/// What is known about the standby's replay, turned into a route for each read: the state machine behind
/// ``ReadStandby``, without I/O or a clock of its own (the instants come from the caller).
///
/// The probe takes an instant `t`, then reads the primary's WAL position `L` (`pg_current_wal_lsn()`): every
/// commit acknowledged before `t` is at or below `L`. Once the standby's replay position reaches `L`, all
/// those commits are visible there, so the standby *covers* `t`. ``coveredThrough`` is the latest instant
/// covered. A read goes to the standby only when
/// - the standby was reachable and in recovery at the last probe,
/// - ``coveredThrough`` is at most ``maxLag`` old (a probe that stalls makes it age too), and
/// - for a read about one job, no callback for that job was acknowledged by this process after
///   ``coveredThrough`` (read-your-writes, ``acknowledged(_:at:)``).
public struct StandbyFreshness: Sendable {
    public typealias Instant = ContinuousClock.Instant

    /// What the last probe found.
    public enum State: Sendable, Hashable {
        /// Not probed yet.
        case unknown
        /// Reachable and replaying.
        case replaying
        /// Unreachable, or not in recovery (promoted, or not a standby at all).
        case down
    }

    public let maxLag: Duration
    /// Most acknowledged JobIds remembered; beyond it the oldest are forgotten, and per-job reads go to the
    /// primary until the standby covers the moment they were forgotten.
    public let recentWriteCapacity: Int
    /// Most primary positions remembered that the standby has not reached yet.
    static let maxSamples = 4096

    public private(set) var state: State = .unknown
    /// Every commit acknowledged before this instant is visible on the standby.
    public private(set) var coveredThrough: Instant?
    /// Primary positions the standby had not reached when last probed, oldest first.
    private var pending: [(takenAt: Instant, primaryLSN: UInt64)] = []
    /// The latest acknowledgement per JobId, for those not yet covered.
    private var recentWrites: [String: Instant] = [:]
    /// `recentWrites` in acknowledgement order (with stale duplicates), from `writeOrderStart`.
    private var writeOrder: [(jobID: String, at: Instant)] = []
    private var writeOrderStart = 0
    /// The latest acknowledgement forgotten for want of room.
    private var forgottenThrough: Instant?

    public init(maxLag: Duration, recentWriteCapacity: Int = 100_000) {
        self.maxLag = maxLag
        self.recentWriteCapacity = max(1, recentWriteCapacity)
    }

    /// A probe's answer: the primary was at `primaryLSN` after `takenAt`, and the standby has replayed up
    /// to `replayLSN` (nil, or `inRecovery` false: not a standby).
    public mutating func probed(primaryLSN: UInt64, takenAt: Instant, replayLSN: UInt64?, inRecovery: Bool) {
        guard inRecovery, let replayLSN else {
            state = .down
            return
        }
        state = .replaying
        pending.append((takenAt, primaryLSN))
        var reached = 0
        while reached < pending.count, pending[reached].primaryLSN <= replayLSN {
            coveredThrough = max(coveredThrough ?? pending[reached].takenAt, pending[reached].takenAt)
            reached += 1
        }
        pending.removeFirst(reached)
        // Forgetting the oldest positions only makes coverage later than it could be, never earlier.
        if pending.count > Self.maxSamples { pending.removeFirst(pending.count - Self.maxSamples) }
        dropCoveredWrites()
    }

    /// The probe could not reach the standby.
    public mutating func probeFailed() {
        state = .down
    }

    /// This process acknowledged callbacks for `jobIDs` at `at` (after their commit).
    public mutating func acknowledged(_ jobIDs: [String], at: Instant) {
        for jobID in jobIDs {
            recentWrites[jobID] = at
            writeOrder.append((jobID, at))
        }
        while recentWrites.count > recentWriteCapacity, writeOrderStart < writeOrder.count {
            let oldest = writeOrder[writeOrderStart]
            writeOrderStart += 1
            if recentWrites[oldest.jobID] == oldest.at {
                recentWrites[oldest.jobID] = nil
                forgottenThrough = max(forgottenThrough ?? oldest.at, oldest.at)
            }
        }
        compactWriteOrder()
    }

    /// Where a read should go at `now`; `jobID` names the job a per-job read is about (nil for a listing).
    public func route(jobID: String?, now: Instant) -> ReadRoute {
        guard state == .replaying else { return .primary(.standbyDown) }
        guard let coveredThrough, now - coveredThrough <= maxLag else { return .primary(.lagging) }
        if let jobID {
            if let forgottenThrough, forgottenThrough > coveredThrough { return .primary(.recentWrite) }
            if let written = recentWrites[jobID], written > coveredThrough { return .primary(.recentWrite) }
        }
        return .standby
    }

    /// How far behind the standby was at the last probe: zero when it had replayed everything the probe saw
    /// on the primary, else the age of the latest covered instant; nil before it was first covered.
    public func lag(now: Instant) -> Duration? {
        guard let coveredThrough else { return nil }
        return pending.isEmpty ? .zero : now - coveredThrough
    }

    /// Acknowledgements the standby covers need no tracking: reads of their jobs may go to the standby.
    private mutating func dropCoveredWrites() {
        guard let coveredThrough else { return }
        while writeOrderStart < writeOrder.count, writeOrder[writeOrderStart].at <= coveredThrough {
            let oldest = writeOrder[writeOrderStart]
            if recentWrites[oldest.jobID] == oldest.at { recentWrites[oldest.jobID] = nil }
            writeOrderStart += 1
        }
        compactWriteOrder()
    }

    private mutating func compactWriteOrder() {
        if writeOrderStart == writeOrder.count {
            writeOrder.removeAll(keepingCapacity: true)
            writeOrderStart = 0
        } else if writeOrderStart > 1024, writeOrderStart * 2 > writeOrder.count {
            writeOrder.removeFirst(writeOrderStart)
            writeOrderStart = 0
        }
    }
}
