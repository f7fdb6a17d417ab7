import CIClient
import CIModel
import Foundation
import Logging
import TimeUnits

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

extension CISimulator {
    /// Runs one child task per scheduled job callback until cancelled. Each child waits for its due time
    /// and then sends its bodies in order (final, its duplicate, the late `Running`), so a late `Running`
    /// really arrives after the final state.
    func runDeliveries(_ deliveries: AsyncStream<ScheduledDelivery>) async {
        await withDiscardingTaskGroup { group in
            for await delivery in deliveries {
                group.addTask { await self.carryOut(delivery) }
            }
        }
    }

    private func carryOut(_ delivery: ScheduledDelivery) async {
        do {
            try await Task.sleep(until: delivery.due, clock: .continuous)
            if let body = delivery.finalBody {
                try await deliver(body, of: delivery, kind: "final")
                if delivery.duplicate { try await deliver(body, of: delivery, kind: "duplicate") }
            } else {
                logger.info("ci simulator dropped callback", metadata: ["job.id": "\(delivery.jobID)"])
            }
            if let body = delivery.lateRunningBody {
                try await deliver(body, of: delivery, kind: "late-running")
            }
        } catch {
            // Only cancellation ends a delivery early: the simulator is stopping.
        }
    }

    /// Posts `body`, retrying non-2xx answers and connection errors with doubling backoff.
    /// - Throws: `CancellationError` only.
    private func deliver(_ body: [UInt8], of delivery: ScheduledDelivery, kind: String) async throws {
        guard let url = URL(string: delivery.url) else { return }
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.httpBody = Data(body)
        request.setValue(delivery.format == .json ? "application/json" : "application/xml", forHTTPHeaderField: "Content-Type")
        request.timeoutInterval = configuration.deliveryTimeout.inSeconds
        let attempts = max(1, configuration.maxDeliveryAttempts)
        for attempt in 1...attempts {
            try Task.checkCancellation()
            var outcome: String
            do {
                let (_, response) = try await deliverySession.exchange(request)
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                if (200..<300).contains(status) {
                    updateStatistics { $0.delivered += 1 }
                    logger.debug(
                        "ci simulator delivered callback",
                        metadata: ["job.id": "\(delivery.jobID)", "sim.kind": "\(kind)", "sim.attempt": "\(attempt)"])
                    return
                }
                outcome = "status \(status)"
            } catch {
                try Task.checkCancellation()
                outcome = (error as? URLError).map { "URLError \($0.code.rawValue)" } ?? "\(type(of: error))"
            }
            guard attempt < attempts else {
                updateStatistics { $0.failures += 1 }
                logger.warning(
                    "ci simulator gave up on callback",
                    metadata: ["job.id": "\(delivery.jobID)", "sim.kind": "\(kind)", "sim.outcome": "\(outcome)", "sim.attempts": "\(attempts)"])
                return
            }
            logger.info(
                "ci simulator callback failed, retrying",
                metadata: ["job.id": "\(delivery.jobID)", "sim.kind": "\(kind)", "sim.outcome": "\(outcome)", "sim.attempt": "\(attempt)"])
            try await Task.sleep(for: configuration.deliveryBackoff * (1 << min(attempt - 1, 16)))
            updateStatistics { $0.retries += 1 }
        }
    }
}
