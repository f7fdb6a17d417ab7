/// Which connections an event loop closes when it must make room for a new one. Pure.
///
/// Only connections with nothing in flight and nothing being written are candidates
/// (``ConnectionStateMachine/isEvictable``): idle keep-alive connections, and connections still sending
/// their request. Those quiet the longest go first (ties: the fewest bytes received), so a slow-loris
/// connection, quiet since it connected while it trickles its head, goes before a client that connected
/// after it. A connection that became quiet at `now` (accepted in the loop's current turn) is never a
/// candidate: its request may already be waiting in the socket, read in the loop's next turn before it
/// accepts again; evicting it would turn away exactly the fresh client that room is being made for.
enum EvictionPolicy {
    struct Candidate: Sendable, Equatable {
        var id: UInt64
        /// Monotonic nanoseconds since which the connection has had nothing in flight.
        var quietSince: UInt64
        /// Bytes received since then.
        var bytesReceived: Int
    }

    /// The ids of at most `count` candidates to evict, in eviction order.
    static func victims(_ candidates: [Candidate], count: Int, now: UInt64) -> [UInt64] {
        guard count > 0 else { return [] }
        let ordered = candidates.filter { $0.quietSince < now }.sorted { a, b in
            if a.quietSince != b.quietSince { return a.quietSince < b.quietSince }
            if a.bytesReceived != b.bytesReceived { return a.bytesReceived < b.bytesReceived }
            return a.id < b.id
        }
        return ordered.prefix(count).map(\.id)
    }
}
