import JobStore
import ServiceLifecycle

/// Probes the read standby's replay position every ``ReadStandby/Configuration/checkInterval``, so that
/// reads go there only while it is fresh enough (``StandbyFreshness``).
///
/// Run it only for a store with a ``JobStore/readStandby``: without one it returns at once, which a
/// `ServiceGroup` takes for a failure.
public final class ReadStandbyMonitor: Service, Sendable {
    private let store: JobStore

    public init(store: JobStore) {
        self.store = store
    }

    public func run() async throws {
        guard let standby = store.readStandby else { return }
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.store.checkReadStandby()
                do {
                    try await Task.sleep(for: standby.configuration.checkInterval)
                } catch {
                    break
                }
            }
        }
    }
}
