import CoreMetrics
import Metrics
import TimeUnits

extension ServiceMetrics {
    /// A job submitted to CI through `POST /v1/watermark-extractions`.
    func recordSubmission() {
        Counter(label: "ci_submissions_total", factory: metricsFactory).increment()
    }

    /// One reconciliation sweep and how it ended.
    func recordSweep(result: SweepResult, duration: Duration) {
        Counter(label: "ci_reconcile_sweeps_total", dimensions: [("result", result.rawValue)], factory: metricsFactory).increment()
        Metrics.Timer(label: "ci_reconcile_sweep_duration_seconds", factory: metricsFactory)
            .recordNanoseconds(duration.inNanoseconds)
    }

    /// Jobs a sweep handled. `outcome`: checked, corrected, discovered or missing.
    func recordReconciledJobs(outcome: String, count: Int) {
        guard count > 0 else { return }
        Counter(label: "ci_reconcile_jobs_total", dimensions: [("outcome", outcome)], factory: metricsFactory).increment(by: count)
    }
}

extension ServiceMetrics {
    /// Held callbacks settled or tried. `result`: confirmed, contradicted, or error (CI or the database
    /// failed; the callback stays pending and is tried again).
    func recordVerifications(result: String, count: Int) {
        guard count > 0 else { return }
        Counter(label: "ci_callback_verifications_total", dimensions: [("result", result)], factory: metricsFactory).increment(by: count)
    }

    /// Time from a held callback's arrival to CI's verdict on it.
    func recordVerificationDelay(_ duration: Duration) {
        Metrics.Timer(label: "ci_callback_verification_delay_seconds", factory: metricsFactory)
            .recordNanoseconds(duration.inNanoseconds)
    }

    /// The verification queue after a pass: callbacks still pending, and the age of the oldest (0 when
    /// none waits). An age that keeps growing means CI is not being reached.
    func recordVerificationBacklog(pending: Int, oldestAgeSeconds: Double) {
        Gauge(label: "ci_callback_verifications_pending", factory: metricsFactory).record(pending)
        Gauge(label: "ci_callback_verification_oldest_pending_seconds", factory: metricsFactory).record(oldestAgeSeconds)
    }
}
