import Synchronization
import TestSupport
import Testing

@testable import JobStore

/// The listing limit without a database: slots, the order of waiting listings, the bounded queue and
/// cancellation.
@Suite("Listing limit (pure)")
struct ListingLimitTests {
    /// A listing that holds its slot until released.
    private final class Gate: Sendable {
        private let opened = Mutex<CheckedContinuation<Void, Never>?>(nil)
        private let isOpen = Mutex(false)

        func wait() async {
            await withCheckedContinuation { continuation in
                let openAlready = isOpen.withLock { open in
                    if !open { opened.withLock { $0 = continuation } }
                    return open
                }
                if openAlready { continuation.resume() }
            }
        }

        func open() {
            isOpen.withLock { $0 = true }
            opened.withLock { continuation in
                continuation?.resume()
                continuation = nil
            }
        }
    }

    /// The order in which listings got their slots.
    private final class Order: Sendable {
        private let entered = Mutex<[Int]>([])
        func append(_ index: Int) { entered.withLock { $0.append(index) } }
        var indices: [Int] { entered.withLock { $0 } }
    }

    @Test(.timeLimit(.minutes(1)))
    func limit_FullSlots_QueueInArrivalOrder_AndRefuseBeyondTheQueue() async throws {
        let limit = ListingLimit(.init(concurrency: 2, maxWaiting: 2))
        let order = Order()
        let gates = (0..<4).map { _ in Gate() }
        var tasks: [Task<Void, any Error>] = []
        for index in 0..<4 {
            tasks.append(Task {
                try await limit.withSlot {
                    order.append(index)
                    await gates[index].wait()
                }
            })
            // Arrival order is the test's: each listing is in (running or waiting) before the next starts.
            #expect(try await eventually { limit.usage.active + limit.usage.waiting == index + 1 })
        }
        #expect(limit.usage == (active: 2, waiting: 2))
        await #expect(throws: TooManyListings.self) { try await limit.withSlot {} }

        gates[1].open()
        #expect(try await eventually { order.indices == [0, 1, 2] }, "the first waiting listing takes the freed slot")
        gates[0].open()
        #expect(try await eventually { order.indices == [0, 1, 2, 3] })
        gates[2].open()
        gates[3].open()
        for task in tasks { try await task.value }
        #expect(limit.usage == (active: 0, waiting: 0))
    }

    @Test(.timeLimit(.minutes(1)))
    func limit_CancelledWhileWaiting_LeavesTheQueue_AndTheSlotsCountStaysRight() async throws {
        let limit = ListingLimit(.init(concurrency: 1, maxWaiting: 4))
        let gate = Gate()
        let holder = Task { try await limit.withSlot { await gate.wait() } }
        #expect(try await eventually { limit.usage == (active: 1, waiting: 0) })
        let waiter = Task { try await limit.withSlot {} }
        #expect(try await eventually { limit.usage == (active: 1, waiting: 1) })
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(limit.usage == (active: 1, waiting: 0))
        gate.open()
        try await holder.value
        #expect(limit.usage == (active: 0, waiting: 0))
        try await limit.withSlot {}
    }

    @Test(.timeLimit(.minutes(1)))
    func limit_WaitingPastMaxWait_IsRefusedAndLeavesTheQueue() async throws {
        let limit = ListingLimit(.init(concurrency: 1, maxWaiting: 4), maxWait: .milliseconds(200))
        let gate = Gate()
        let holder = Task { try await limit.withSlot { await gate.wait() } }
        #expect(try await eventually { limit.usage == (active: 1, waiting: 0) })
        let error = await #expect(throws: TooManyListings.self) { try await limit.withSlot {} }
        #expect(error?.waited == .milliseconds(200))
        #expect(limit.usage == (active: 1, waiting: 0))
        gate.open()
        try await holder.value
        try await limit.withSlot {}
        #expect(limit.usage == (active: 0, waiting: 0))
    }

    // MARK: Yielding to ingest

    @Test func heldUntil_IngestBackedUp_KeepsTheSlotUntilTheYieldAfterTheListingBegan() {
        let began = ContinuousClock.now
        let yield = Duration.milliseconds(100)
        #expect(ListingLimit.heldUntil(began: began, now: began + .milliseconds(3), yield: yield, ingestIsBackedUp: true) == began + yield)
        // A listing that took the whole yield or longer gives its slot back at once.
        #expect(ListingLimit.heldUntil(began: began, now: began + yield, yield: yield, ingestIsBackedUp: true) == nil)
        #expect(ListingLimit.heldUntil(began: began, now: began + .seconds(2), yield: yield, ingestIsBackedUp: true) == nil)
        // Ingest keeping up, or yielding turned off: at once.
        #expect(ListingLimit.heldUntil(began: began, now: began + .milliseconds(3), yield: yield, ingestIsBackedUp: false) == nil)
        #expect(ListingLimit.heldUntil(began: began, now: began + .milliseconds(3), yield: .zero, ingestIsBackedUp: true) == nil)
    }

    @Test(.timeLimit(.minutes(1)))
    func limit_IngestBackedUp_AnsweredListingKeepsItsSlotForTheYield_TheNextWaits_ThenGetsIt() async throws {
        let backedUp = Mutex(true)
        let limit = ListingLimit(
            ListingLimit.Configuration(concurrency: 1, maxWaiting: 4, yieldUnderIngestLoad: .seconds(1)), maxWait: .seconds(30),
            ingestIsBackedUp: { backedUp.withLock { $0 } })
        let answer = try await limit.withSlot { 42 }
        #expect(answer == 42, "the listing answers at once; only its slot waits")
        #expect(limit.usage == (active: 1, waiting: 0))
        let next = Task { try await limit.withSlot { 7 } }
        #expect(try await eventually { limit.usage == (active: 1, waiting: 1) })
        #expect(try await next.value == 7)
        // Ingest keeping up again: the next listing's slot is free as soon as it answers.
        backedUp.withLock { $0 = false }
        #expect(try await eventually { limit.usage == (active: 0, waiting: 0) })
        try await limit.withSlot {}
        #expect(limit.usage == (active: 0, waiting: 0))
    }
}
