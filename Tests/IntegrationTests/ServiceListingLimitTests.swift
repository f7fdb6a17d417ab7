import Foundation
import JobStore
import PostgresLibPQ
import TestSupport
import Testing

/// Issue 11: one dashboard refresh loop must not take callbacks down. Listings hold at most
/// `LIST_CONCURRENCY` pooled connections; the rest of the pool stays free, and a listing beyond
/// `LIST_QUEUE` waiting ones is refused at once.
@Suite("Listing limit")
struct ServiceListingLimitTests {
    @Test(.timeLimit(.minutes(3)))
    func listings_BlockedInTheDatabase_HoldOnlyTheirSlots_SoOtherRequestsGetConnections_AndOneBeyondTheQueueIs503() async throws {
        // Pool of 4; statements and waiting listings (whose wait is the pool's acquire timeout) may wait on
        // the test's lock longer than the test takes.
        var connection = PostgresConnectionSettings()
        connection.statementTimeout = .seconds(60)
        let service = try await ServiceHarness.start(
            connection: connection, acquireTimeout: .seconds(60), listing: ListingLimit.Configuration(concurrency: 2, maxWaiting: 3))
        let locker = try PostgresConnection.connect(conninfo(testDatabaseURL, searchPath: service.schema))
        do {
            // Every listing now blocks inside PostgreSQL, on the connection it holds.
            try locker.execute(simpleSQL: "BEGIN; LOCK TABLE ci_jobs IN ACCESS EXCLUSIVE MODE")
            let listings = (0..<5).map { index in Task { try await service.get("/v1/jobs?limit=\(index + 1)") } }
            let queued = try await eventually(within: .seconds(60)) { service.store.listings.usage == (active: 2, waiting: 3) }
            #expect(queued, "two listings hold slots and three wait: \(service.store.listings.usage)")
            let metrics = try await service.get("/metrics").text
            #expect(metrics.contains(#"db_listings{state="active"} 2"#), "\(metrics.split(separator: "\n").filter { $0.contains("db_listings") })")
            #expect(metrics.contains(#"db_listings{state="waiting"} 3"#))

            let refused = try await service.get("/v1/jobs?limit=7")
            #expect(refused.status == 503)
            #expect(try refused.json()["Error"].flatMap { ($0 as? [String: Any])?["Code"] as? String } == "TooManyListings")
            #expect(refused.header("Retry-After") == "1")

            // Two of the four connections are free: a request that needs one is answered now, not after the
            // pool's acquire timeout (503) as when the listings held all four.
            let ready = try await service.get("/readyz")
            #expect(ready.status == 200, "\(ready.text)")

            try locker.execute(simpleSQL: "COMMIT")
            for listing in listings {
                #expect(try await listing.value.status == 200)
            }
            #expect(service.store.listings.usage == (active: 0, waiting: 0))
        } catch {
            locker.close()
            await service.stop()
            throw error
        }
        locker.close()
        await service.stop()
    }
}
