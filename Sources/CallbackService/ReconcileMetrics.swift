import CoreMetrics
import Metrics

extension ServiceMetrics {
    /// A job submitted to CI through `POST /v1/watermark-extractions`.
    func recordSubmission() {
        Counter(label: "ci_submissions_total", factory: metricsFactory).increment()
    }

    /// One reconciliation sweep. `result`: ok, skipped (another replica held the lock) or error.
    func recordSweep(result: String, duration: Duration) {
        Counter(label: "ci_reconcile_sweeps_total", dimensions: [("result", result)], factory: metricsFactory).increment()
        let (seconds, attoseconds) = duration.components
        Metrics.Timer(label: "ci_reconcile_sweep_duration_seconds", factory: metricsFactory)
            .recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    /// Jobs a sweep handled. `outcome`: checked, corrected, discovered or missing.
    func recordReconciledJobs(outcome: String, count: Int) {
        guard count > 0 else { return }
        Counter(label: "ci_reconcile_jobs_total", dimensions: [("outcome", outcome)], factory: metricsFactory).increment(by: count)
    }
}
