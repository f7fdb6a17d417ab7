import Foundation
import Synchronization
import TestSupport
import Testing

@testable import CallbackService

/// The threads that send webhook attempts: bounded, reused, and gone once finished. Jobs here block on
/// a gate instead of sending, so the tests see how many run at once.
@Suite("Webhook sender threads")
struct WebhookSenderThreadsTests {
    /// Counts jobs running and finished, and holds them until opened.
    final class Gate: Sendable {
        private let state = Mutex((running: 0, mostAtOnce: 0, finished: 0, open: false))
        private let opened = DispatchSemaphore(value: 0)

        func pass() {
            state.withLock { state in
                state.running += 1
                state.mostAtOnce = max(state.mostAtOnce, state.running)
            }
            if !state.withLock({ $0.open }) { opened.wait() }
            opened.signal()  // pass the opening on to the next waiter
            state.withLock { state in
                state.running -= 1
                state.finished += 1
            }
        }

        func open() {
            state.withLock { $0.open = true }
            opened.signal()
        }

        var running: Int { state.withLock { $0.running } }
        var mostAtOnce: Int { state.withLock { $0.mostAtOnce } }
        var finished: Int { state.withLock { $0.finished } }
    }

    @Test func senders_MoreAttemptsThanCapacity_RunAtMostCapacityAtOnce_ThenAllFinish() async throws {
        let senders = WebhookSenderThreads(capacity: 3)
        let gate = Gate()
        for _ in 0..<20 { senders.run { _ in gate.pass() } }
        #expect(try await eventually { gate.running == 3 })
        #expect(senders.threadCount == 3)
        gate.open()
        #expect(try await eventually { gate.finished == 20 })
        #expect(gate.mostAtOnce == 3)
        #expect(senders.threadCount == 3, "finished threads wait for the next attempt instead of ending")
        senders.finish()
        #expect(try await eventually { senders.threadCount == 0 })
    }

    @Test func senders_AttemptsWhileAThreadWaits_ReuseThatThreadAndItsSession() async throws {
        let senders = WebhookSenderThreads(capacity: 8)
        let sessions = Mutex<[UInt]>([])
        for index in 0..<5 {
            // A thread that has not yet gone back to waiting counts as busy, and the next attempt may
            // start a thread of its own (up to the capacity): wait for it.
            if index > 0 { #expect(try await eventually { senders.idleThreadCount == 1 }) }
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                senders.run { session in
                    sessions.withLock { $0.append(UInt(bitPattern: session.map { Int(bitPattern: UnsafeRawPointer($0)) } ?? 0)) }
                    done.resume()
                }
            }
        }
        let seen = sessions.withLock { $0 }
        #expect(seen.count == 5)
        #expect(Set(seen).count == 1, "every attempt ran on the one thread, with its one libcurl session: \(seen)")
        #expect(seen.first != 0)
        #expect(senders.threadCount == 1)
        senders.finish()
        #expect(try await eventually { senders.threadCount == 0 })
    }

    @Test func senders_AttemptGivenAfterFinish_StillRuns() async throws {
        let senders = WebhookSenderThreads(capacity: 2)
        senders.finish()
        let ran = await withCheckedContinuation { (done: CheckedContinuation<Bool, Never>) in
            senders.run { _ in done.resume(returning: true) }
        }
        #expect(ran)
        #expect(try await eventually { senders.threadCount == 0 })
    }
}
