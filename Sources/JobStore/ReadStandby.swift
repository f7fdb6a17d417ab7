import CoreMetrics
import PostgresLibPQ
import Synchronization

/// A PostgreSQL hot standby (`READ_DATABASE_URL`) that answers lookups and listings when it is fresh enough,
/// with a pool of its own: what ``JobStore`` routes reads through (see ``StandbyFreshness`` for the rule).
///
/// Ingest, `?wait=` (LISTEN does not work on a standby), the event feed, webhooks and every sweep stay on
/// the primary; only the store's lookups, listings, histories and bodies come here.
public final class ReadStandby: Sendable {
    /// Read routing settings.
    public struct Configuration: Sendable {
        /// The longest the standby may be behind the primary and still answer (`READ_MAX_LAG`). Default 1 s.
        public var maxLag: Duration = .seconds(1)
        /// Pause between two probes of the standby's replay position (`READ_LAG_CHECK_INTERVAL`); must be
        /// well under ``maxLag``, since coverage is only as recent as the last probe. Default 200 ms.
        public var checkInterval: Duration = .milliseconds(200)
        /// JobIds acknowledged by this process remembered until the standby has replayed them. Default 100,000.
        public var recentWriteCapacity: Int = 100_000

        public init() {}
    }

    /// The standby as `/readyz` and `/metrics` show it.
    public struct Status: Sendable, Hashable {
        public enum State: String, Sendable, Hashable {
            /// Replaying, and within ``Configuration/maxLag``: reads go there.
            case inSync = "in_sync"
            /// Replaying, but further behind than ``Configuration/maxLag``: reads go to the primary.
            case lagging
            /// Unreachable or not a standby (or not probed yet): reads go to the primary.
            case down
        }

        public var state: State
        /// How far behind the standby was at the last probe; nil before it was first measured.
        public var lagSeconds: Double?
    }

    public let pool: PostgresPool
    public let configuration: Configuration
    /// Shared by every request task (routes, acknowledgements) and the probe; held only for the
    /// bookkeeping, never across I/O.
    private let freshness: Mutex<StandbyFreshness>
    /// Lookups by JobId on the standby, batched as on the primary.
    let lookups: PoolBatcher<String, StoredJob?>
    private let readCounters: [ReadRoute: Counter]

    init(pool: PostgresPool, configuration: Configuration, metricsFactory: any MetricsFactory) {
        self.pool = pool
        self.configuration = configuration
        self.freshness = Mutex(StandbyFreshness(maxLag: configuration.maxLag, recentWriteCapacity: configuration.recentWriteCapacity))
        self.lookups = PoolBatcher(pool: pool, maxBatchSize: JobStore.maxLookupBatch, maxConcurrentBatches: 1, process: JobStore.lookUpJobs)
        var counters: [ReadRoute: Counter] = [:]
        counters[.standby] = Counter(label: Self.readsMetric, dimensions: [("target", "standby")], factory: metricsFactory)
        for reason in ReadFallback.allCases {
            counters[.primary(reason)] = Counter(
                label: Self.readsMetric, dimensions: [("target", "primary"), ("reason", reason.rawValue)], factory: metricsFactory)
        }
        self.readCounters = counters
    }

    /// Reads answered, by where (`target`) and, for the primary, why (`reason`).
    public static let readsMetric = "db_reads_total"

    func route(jobID: String?) -> ReadRoute {
        let now = ContinuousClock.now
        return freshness.withLock { $0.route(jobID: jobID, now: now) }
    }

    func count(_ route: ReadRoute) {
        readCounters[route]?.increment()
    }

    func acknowledged(_ jobIDs: [String]) {
        guard !jobIDs.isEmpty else { return }
        let now = ContinuousClock.now
        freshness.withLock { $0.acknowledged(jobIDs, at: now) }
    }

    func probed(primaryLSN: UInt64, takenAt: ContinuousClock.Instant, replayLSN: UInt64?, inRecovery: Bool) {
        freshness.withLock { $0.probed(primaryLSN: primaryLSN, takenAt: takenAt, replayLSN: replayLSN, inRecovery: inRecovery) }
    }

    func probeFailed() {
        freshness.withLock { $0.probeFailed() }
    }

    /// Where the standby stands now.
    public var status: Status {
        let now = ContinuousClock.now
        return freshness.withLock { freshness in
            let lag = freshness.lag(now: now).map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
            let state: Status.State =
                switch freshness.route(jobID: nil, now: now) {
                case .standby: .inSync
                case .primary(.lagging): .lagging
                default: .down
                }
            return Status(state: state, lagSeconds: lag)
        }
    }
}

extension JobStore {
    /// A read on the standby when ``ReadStandby`` routes it there and its answer is `complete`; on the
    /// primary otherwise, and whenever the standby fails (a standby that is gone costs a fallback, not a 503).
    func routedRead<T: Sendable>(
        jobID: String?, requirePrimary: Bool = false,
        primary: () async throws -> T, standby: (ReadStandby) async throws -> T, complete: (T) -> Bool
    ) async throws -> T {
        guard let readStandby else { return try await primary() }
        let route = requirePrimary ? .primary(.primaryOnly) : readStandby.route(jobID: jobID)
        guard route == .standby else {
            readStandby.count(route)
            return try await primary()
        }
        let fallback: ReadFallback
        do {
            let answer = try await standby(readStandby)
            if complete(answer) {
                readStandby.count(.standby)
                return answer
            }
            fallback = .notFound
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            fallback = .standbyError
        }
        readStandby.count(.primary(fallback))
        return try await primary()
    }

    /// ``routedRead(jobID:requirePrimary:primary:standby:complete:)`` of one query, run on either pool.
    func routedRead<T: Sendable>(
        jobID: String?, _ body: @escaping @Sendable (PostgresConnection) throws -> T, complete: (T) -> Bool
    ) async throws -> T {
        try await routedRead(
            jobID: jobID,
            primary: { try await withConnection(body) },
            standby: { standby in try await translatingErrors { try await standby.pool.withConnection(body) } },
            complete: complete)
    }

    /// Measures how far the standby is behind: the primary's WAL position, then the standby's replay
    /// position (see ``StandbyFreshness``). Two one-row queries; ``ReadStandby/Configuration/checkInterval``
    /// apart in the service. Without a standby, does nothing.
    public func checkReadStandby() async {
        guard let readStandby else { return }
        let takenAt = ContinuousClock.now
        let primaryLSN: UInt64
        do {
            primaryLSN = try await pool.withConnection { connection in
                let rows = try connection.query("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::text AS lsn")
                return try UInt64(StrictRow(rows[0], read: "WAL position").string("lsn")) ?? 0
            }
        } catch {
            // The primary did not answer: coverage ages, and reads go to the primary once it is too old.
            return
        }
        do {
            let (inRecovery, replayLSN) = try await readStandby.pool.withConnection { connection in
                let rows = try connection.query(
                    "SELECT pg_is_in_recovery() AS in_recovery, (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::text AS lsn")
                let row = StrictRow(rows[0], read: "standby replay position")
                return (try row.bool("in_recovery"), try row.optionalString("lsn").flatMap { UInt64($0) })
            }
            readStandby.probed(primaryLSN: primaryLSN, takenAt: takenAt, replayLSN: replayLSN, inRecovery: inRecovery)
        } catch {
            readStandby.probeFailed()
        }
    }
}
