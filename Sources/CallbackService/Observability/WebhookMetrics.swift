import JobStore
import Metrics
import Synchronization
import TimeUnits

extension ServiceMetrics {
    /// A sequencer round: events given feed positions.
    func recordSequencerRound(_ round: SequencerRound) {
        guard round.sequenced > 0 else { return }
        Counter(label: "ci_events_sequenced_total", factory: metricsFactory).increment(by: round.sequenced)
    }

    /// Deliveries a walk of the subscriptions' cursors took to send.
    func recordWalkedDeliveries(_ count: Int) {
        guard count > 0 else { return }
        Counter(label: "webhook_deliveries_queued_total", factory: metricsFactory).increment(by: count)
    }
}

extension ServiceMetrics {
    /// What became of a recorded attempt's delivery: the `outcome` label of `webhook_deliveries_total`.
    enum DeliveryOutcome: String, CaseIterable, Sendable {
        case succeeded, retried, held, failed, gone
    }

    /// One recorded delivery attempt: its outcome and how long it took.
    func recordDeliveryAttempt(outcome: DeliveryOutcome, duration: Duration) {
        // Every outcome's counter is made in `init`.
        deliveryAttemptCounters[outcome]?.increment()
        deliveryAttemptDuration.recordNanoseconds(duration.inNanoseconds)
    }

    /// Walked deliveries given up on unsent: an earlier POST of their walk to the same endpoint ended with no
    /// answer (``WebhookHTTPClient/Response/skipped``). Not attempts: they wait, pending, with none of their
    /// retry schedule used, so `webhook_deliveries_total` leaves them out.
    func recordSkippedDeliveries(_ count: Int) {
        guard count > 0 else { return }
        deliverySkippedCounter.increment(by: count)
    }

    /// A step of the delivery worker that failed against the database. The worker tries it again on its own
    /// schedule; what it held meanwhile is reclaimed once its lease runs out, and sent again.
    func recordWorkerFailure(_ step: WebhookDeliveryWorker.Step) {
        Counter(label: "webhook_worker_errors_total", dimensions: [("step", step.rawValue)], factory: metricsFactory).increment()
    }

    /// A subscription's circuit breaker opened or closed.
    func recordBreakerTransition(_ transition: String) {
        Counter(label: "webhook_breaker_transitions_total", dimensions: [("transition", transition)], factory: metricsFactory).increment()
    }

    /// Pending deliveries and the oldest one's age per subscription, and which subscriptions are failing or
    /// disabled. Subscription ids are bounded by `MAX_SUBSCRIPTIONS`; a deleted subscription's series drop to 0.
    func recordWebhookBacklog(_ backlog: [WebhookBacklog]) {
        let current = Set(backlog.map(\.subscriptionID))
        let gone = webhookSeries.withLock { known in
            let gone = known.subtracting(current)
            known = current
            return gone
        }
        for subscription in gone {
            record(WebhookBacklog(subscriptionID: subscription, pending: 0, oldestPendingSeconds: 0, failing: false, disabled: false))
        }
        for entry in backlog { record(entry) }
        Gauge(label: "webhook_pending_deliveries_total", factory: metricsFactory).record(backlog.reduce(0) { $0 + $1.pending })
    }

    private func record(_ entry: WebhookBacklog) {
        let dimensions = [("subscription", entry.subscriptionID)]
        Gauge(label: "webhook_pending_deliveries", dimensions: dimensions, factory: metricsFactory).record(entry.pending)
        Gauge(label: "webhook_oldest_pending_seconds", dimensions: dimensions, factory: metricsFactory).record(entry.oldestPendingSeconds)
        Gauge(label: "webhook_subscription_failing", dimensions: dimensions, factory: metricsFactory).record(entry.failing ? 1 : 0)
        Gauge(label: "webhook_subscription_disabled", dimensions: dimensions, factory: metricsFactory).record(entry.disabled ? 1 : 0)
        // 0 closed, 1 open, 2 half-open (a probe in flight).
        let breaker = switch entry.breaker {
        case .closed: 0
        case .open: 1
        case .halfOpen: 2
        }
        Gauge(label: "webhook_subscription_breaker", dimensions: dimensions, factory: metricsFactory).record(breaker)
    }
}
