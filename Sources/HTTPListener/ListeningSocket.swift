import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The server's one listening socket, which every event loop watches in its own epoll set.
///
/// Shared between loop threads, hence the atomics: the first loop to shut down stops the socket
/// listening for all of them at once, and the last loop to let go of it closes the descriptor. Closing
/// earlier could let the number be reused by a new descriptor while another loop still calls `accept`
/// on it; `shutdown(2)` on a listening socket stops it listening (new connections are refused, `accept`
/// fails with `EINVAL`) without freeing the number.
final class ListeningSocket: Sendable {
    let fd: Int32
    private let holders: Atomic<Int>
    private let stopped = Atomic<Bool>(false)

    /// Takes ownership of `fd`, to be released by `holders` loops.
    init(fd: Int32, holders: Int) {
        self.fd = fd
        self.holders = Atomic(holders)
    }

    /// Stops listening for every loop; idempotent.
    func stopListening() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Whether ``stopListening()`` has run: an `accept` failure is then expected, not an error.
    var isStopped: Bool { stopped.load(ordering: .acquiring) }

    /// One holder is done with the socket (it has removed it from its epoll set); the last one closes it.
    func release() {
        if holders.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            closeDescriptor(fd)
        }
    }
}

/// Open connections per event loop, so a loop that holds more than its share lets the others accept.
///
/// With one shared listening socket the loops race to accept, and the loop that happens to be awake
/// takes most of a burst; without this, one loop could end up holding nearly every connection of a
/// keep-alive client pool (a benchmark, a proxy) while the others idle.
final class LoopLoad: Sendable {
    private final class Count: Sendable {
        let value = Atomic<Int>(0)
    }

    private let counts: [Count]

    init(loopCount: Int) {
        counts = (0..<loopCount).map { _ in Count() }
    }

    var loopCount: Int { counts.count }

    func add(_ delta: Int, loop: Int) {
        counts[loop].value.add(delta, ordering: .relaxed)
    }

    func connections(loop: Int) -> Int { counts[loop].value.load(ordering: .relaxed) }

    /// Whether `loop` holds more than `slack` connections above an even share of `total`.
    func isOverShare(loop: Int, total: Int, slack: Int) -> Bool {
        guard counts.count > 1 else { return false }
        return connections(loop: loop) > Self.evenShare(total: total, loops: counts.count) + slack
    }

    /// `total` divided over `loops`, rounded up.
    static func evenShare(total: Int, loops: Int) -> Int {
        (total + loops - 1) / loops
    }
}
