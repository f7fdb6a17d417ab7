import CIModel
import CoreMetrics
import HTTPListener
import HTTPWire
import JobStore
import Metrics
import Prometheus
import Synchronization
import TimeUnits

/// The service's metrics, recorded through swift-metrics and exposed by swift-prometheus at `/metrics`.
///
/// Metrics are made with an explicit factory rather than the global `MetricsSystem`, so each test can
/// read its own registry; the executable passes the same factory it bootstraps.
public final class ServiceMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    /// Cumulative pool figures seen at the previous scrape, turned into counter increments.
    private let lastPoolTotals = Mutex((acquired: 0, waitSeconds: 0.0, prepared: 0))
    /// The read standby pool's statements prepared at the previous scrape, likewise.
    private let lastReadPrepared = Mutex(0)
    /// `LogOutput.droppedLines` at the last scrape, so the counter grows by the difference.
    private let lastLogLinesDropped = Mutex(0)
    private let buildVersion: String
    /// Handles of the per-request series, made once each: asking the factory on every request (its lock,
    /// and a lookup keyed by label and dimensions) was a visible share of a lookup's CPU. Bounded: routes
    /// and method labels are fixed sets, statuses are the few the service sends.
    private let requestHandles = Mutex<[RequestSeries: (CoreMetrics.Counter, CoreMetrics.Timer)]>([:])
    /// `http_listener_refusals_total` handles, made once each; bounded by the fixed reasons and statuses.
    private let refusalHandles = Mutex<[RefusalSeries: CoreMetrics.Counter]>([:])
    /// `webhook_deliveries_total` by outcome, and `webhook_attempt_duration_seconds`, made once: asked of the
    /// factory for every attempt, they were a share of a delivery's CPU. The outcomes are a fixed set.
    let deliveryAttemptCounters: [DeliveryOutcome: CoreMetrics.Counter]
    let deliveryAttemptDuration: CoreMetrics.Timer
    /// `webhook_deliveries_skipped_total`, made once, like the attempts' counters.
    let deliverySkippedCounter: CoreMetrics.Counter
    /// Subscriptions that have webhook backlog series, so a deleted one's are set to 0 (written by the
    /// delivery worker's refresh, which may run in several tasks over time: hence the lock).
    let webhookSeries = Mutex<Set<String>>([])

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), buildVersion: String = CallbackServiceVersion.current) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        let latencyBuckets: [Duration] = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10),
        ]
        factory.defaultDurationHistogramBuckets = latencyBuckets
        // Callbacks per transaction: powers of two up to the batcher's largest (64).
        factory.valueHistogramBuckets[IngestBatcher.MetricLabel.batchSize] = [1, 2, 4, 8, 16, 32, 64]
        self.factory = factory
        self.buildVersion = buildVersion
        deliveryAttemptCounters = Dictionary(
            uniqueKeysWithValues: DeliveryOutcome.allCases.map { outcome in
                (outcome, Counter(label: "webhook_deliveries_total", dimensions: [("outcome", outcome.rawValue)], factory: factory) as CoreMetrics.Counter)
            })
        deliveryAttemptDuration = Metrics.Timer(label: "webhook_attempt_duration_seconds", factory: factory)
        deliverySkippedCounter = Counter(label: "webhook_deliveries_skipped_total", factory: factory)
        Gauge(label: "ci_callbackd_build_info", dimensions: [("version", buildVersion)], factory: factory).record(1)
        // The capacity series exist from the start, at 0, so an alert on their increase sees the first refusal.
        for (reason, status) in [(HTTPRefusal.Reason.atCapacity, HTTPStatus.serviceUnavailable), (.atCapacityUnanswered, nil)] {
            _ = refusalCounter(RefusalSeries(reason: reason, status: status?.code))
        }
    }

    /// The factory to hand to `MetricsSystem.bootstrap`, so libraries' metrics land in the same registry.
    public var metricsFactory: any MetricsFactory { factory }

    func recordRequest(route: String, method: String, status: Int, duration: Duration) {
        let series = RequestSeries(route: route, method: Self.methodLabel(method), status: status)
        let (counter, timer) = requestHandles.withLock { handles in
            if let known = handles[series] { return known }
            let made = (
                Counter(
                    label: "http_requests_total", dimensions: [("route", route), ("method", series.method), ("status", String(status))],
                    factory: factory),
                Metrics.Timer(label: "http_request_duration_seconds", dimensions: [("route", route)], factory: factory)
            )
            handles[series] = made
            return made
        }
        counter.increment()
        timer.recordNanoseconds(duration.inNanoseconds)
    }

    /// One refusal by the listener itself (``HTTPRefusal``): `reason` is one of a fixed set, `status` the code
    /// answered or `none` when the connection was closed unanswered.
    func recordListenerRefusal(reason: HTTPRefusal.Reason, status: HTTPStatus?) {
        refusalCounter(RefusalSeries(reason: reason, status: status?.code)).increment()
    }

    private func refusalCounter(_ series: RefusalSeries) -> CoreMetrics.Counter {
        refusalHandles.withLock { handles in
            if let known = handles[series] { return known }
            let made = Counter(
                label: "http_listener_refusals_total",
                dimensions: [("reason", series.reason.rawValue), ("status", series.status.map(String.init) ?? "none")], factory: factory)
            handles[series] = made
            return made
        }
    }

    private struct RefusalSeries: Hashable {
        var reason: HTTPRefusal.Reason
        var status: Int?
    }

    /// One `http_requests_total` series.
    private struct RequestSeries: Hashable {
        var route: String
        var method: String
        var status: Int
    }

    /// The method label: the methods HTTP defines, else `OTHER`. A client picks the method token, and a
    /// label taken from it verbatim would let anyone grow the series (and this process's memory) without bound.
    static func methodLabel(_ method: String) -> String {
        switch method {
        case "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT": method
        default: "OTHER"
        }
    }

    /// One callback. Both labels come from fixed sets: `format` is XML, JSON or unknown (a body that is
    /// neither), `outcome` one of ``CallbackOutcome``.
    func recordCallback(format: CallbackFormat?, outcome: CallbackOutcome) {
        Counter(
            label: "ci_callbacks_total", dimensions: [("format", format?.rawValue ?? "unknown"), ("outcome", outcome.rawValue)],
            factory: factory
        )
        .increment()
    }

    /// One job reported by an accepted callback, by the state it reported (``stateLabel(_:)``).
    func recordJobState(_ state: JobState) {
        Counter(label: "ci_callback_jobs_total", dimensions: [("state", Self.stateLabel(state))], factory: factory).increment()
    }

    /// The state label: CI's six states, else `other`. `JobState` keeps any text (CI may add states), and a
    /// label taken from it verbatim would let a sender grow the series without bound, as with methods.
    static func stateLabel(_ state: JobState) -> String {
        switch state {
        case .submitted, .running, .success, .failed, .pause, .cancel: state.rawValue
        default: "other"
        }
    }

    func recordCommit(duration: Duration) {
        Metrics.Timer(label: "db_commit_duration_seconds", factory: factory).recordNanoseconds(duration.inNanoseconds)
    }

    /// Brings the gauges that mirror other components up to date, then renders the Prometheus text.
    func render(store: StoreStatistics, listener: ListenerStatistics?) -> [UInt8] {
        Gauge(label: "db_pool_connections", dimensions: [("state", "size")], factory: factory).record(store.poolSize)
        Gauge(label: "db_pool_connections", dimensions: [("state", "open")], factory: factory).record(store.poolOpen)
        Gauge(label: "db_pool_connections", dimensions: [("state", "in_use")], factory: factory).record(store.poolInUse)
        Gauge(label: "db_pool_connections", dimensions: [("state", "waiting")], factory: factory).record(store.poolWaiting)
        Gauge(label: "db_queue_depth", dimensions: [("queue", "ingest")], factory: factory).record(store.ingestQueued)
        Gauge(label: "db_queue_depth", dimensions: [("queue", "lookup")], factory: factory).record(store.lookupsQueued)
        Gauge(label: "db_listings", dimensions: [("state", "active")], factory: factory).record(store.listingsActive)
        Gauge(label: "db_listings", dimensions: [("state", "waiting")], factory: factory).record(store.listingsWaiting)
        let (acquired, waited, prepared) = lastPoolTotals.withLock { last in
            defer { last = (store.poolAcquired, store.poolWaitSeconds, store.statementsPrepared) }
            return (
                max(0, store.poolAcquired - last.acquired), max(0, store.poolWaitSeconds - last.waitSeconds),
                max(0, store.statementsPrepared - last.prepared)
            )
        }
        Counter(label: "db_pool_acquired_total", factory: factory).increment(by: acquired)
        Counter(label: "db_statements_prepared_total", factory: factory).increment(by: prepared)
        if let read = store.readPool {
            Gauge(label: "db_read_pool_connections", dimensions: [("state", "size")], factory: factory).record(read.poolSize)
            Gauge(label: "db_read_pool_connections", dimensions: [("state", "open")], factory: factory).record(read.poolOpen)
            Gauge(label: "db_read_pool_connections", dimensions: [("state", "in_use")], factory: factory).record(read.poolInUse)
            Gauge(label: "db_read_pool_connections", dimensions: [("state", "waiting")], factory: factory).record(read.poolWaiting)
            for state in [ReadStandby.Status.State.inSync, .lagging, .down] {
                Gauge(label: "db_read_standby_state", dimensions: [("state", state.rawValue)], factory: factory)
                    .record(read.standby.state == state ? 1 : 0)
            }
            if let lag = read.standby.lagSeconds {
                Gauge(label: "db_read_standby_lag_seconds", factory: factory).record(lag)
            }
            let readPrepared = lastReadPrepared.withLock { last in
                defer { last = read.statementsPrepared }
                return max(0, read.statementsPrepared - last)
            }
            Counter(label: "db_read_statements_prepared_total", factory: factory).increment(by: readPrepared)
        }
        FloatingPointCounter(label: "db_pool_wait_seconds_total", factory: factory).increment(by: waited)
        if let listener {
            Gauge(label: "http_open_connections", factory: factory).record(listener.openConnections)
            Gauge(label: "http_inflight_body_bytes", factory: factory).record(listener.bodyBytesInFlight)
        }
        let dropped = LogOutput.standardError.droppedLines
        let newlyDropped = lastLogLinesDropped.withLock { last in
            defer { last = max(last, dropped) }
            return max(0, dropped - last)
        }
        Counter(label: "log_lines_dropped_total", factory: factory).increment(by: newlyDropped)
        return registry.emitToBuffer()
    }
}

/// What became of a callback, the `outcome` label of `ci_callbacks_total`.
enum CallbackOutcome: String {
    /// Stored, with at least one job.
    case accepted
    /// The same bytes were stored before; only the delivery count went up.
    case duplicate
    /// Stored, with no job (WorkflowFinish).
    case noJobs = "no_jobs"
    /// Refused with 400; the body is kept as rejected.
    case rejected
}

/// The version this build reports in `ci_callbackd_build_info` and `--version`.
public enum CallbackServiceVersion {
    public static let current = "0.1.0"
}
