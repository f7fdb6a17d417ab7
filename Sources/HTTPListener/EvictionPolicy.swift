/// Which connections an event loop closes when it must make room for a new one. Pure.
///
/// Only connections with nothing in flight and nothing being written are candidates
/// (``ConnectionStateMachine/isEvictable``): connections lingering after their last answer (a 408, say)
/// until the peer closes, idle keep-alive connections, and connections still sending their request. The
/// lingering go first: they are owed nothing, and at capacity a loop whose every place lingers would
/// otherwise turn new clients away with 503 for up to the linger timeout. Then those quiet the longest
/// (ties: the fewest bytes received), so a slow-loris connection, quiet since it connected while it
/// trickles its head, goes before a client that connected after it. A connection that became quiet at `now` (accepted in the loop's current turn) is never a
/// candidate: its request may already be waiting in the socket, read in the loop's next turn before it
/// accepts again; evicting it would turn away exactly the fresh client that room is being made for.
enum EvictionPolicy {
    struct Candidate: Sendable, Equatable {
        var id: UInt64
        /// Monotonic nanoseconds since which the connection has had nothing in flight.
        var quietSince: UInt64
        /// Bytes received since then.
        var bytesReceived: Int
        /// Lingering after its last answer (``ConnectionStateMachine/isLingering``).
        var lingering = false
    }

    /// The ids of at most `count` candidates to evict, in eviction order.
    static func victims(_ candidates: [Candidate], count: Int, now: UInt64) -> [UInt64] {
        guard count > 0 else { return [] }
        // A lingering connection is never one whose request may be waiting in the socket: it has been answered.
        let ordered = candidates.filter { $0.lingering || $0.quietSince < now }.sorted { a, b in
            if a.lingering != b.lingering { return a.lingering }
            if a.quietSince != b.quietSince { return a.quietSince < b.quietSince }
            if a.bytesReceived != b.bytesReceived { return a.bytesReceived < b.bytesReceived }
            return a.id < b.id
        }
        return ordered.prefix(count).map(\.id)
    }
}
