/// Whether one event loop admits a new connection, or must first make room by evicting some of its own. Pure.
///
/// Two limits apply: `maxConnections` across the server (the loops share one atomic count), and
/// `maxConnectionsPerPeer` per client IP address, which each loop enforces on its own connections as an
/// even share (rounded up), so that no lock is taken per accept; the loops already hold even shares of
/// the connections (``LoopLoad``). At either limit the new connection is not refused outright: the loop
/// first closes a batch of its idle or slow connections (``EvictionPolicy``; at the peer limit, only that
/// peer's), and refuses with 503 only when none can go. A batch rather than one at a time, because
/// choosing victims scans the loop's connections.
struct ConnectionAdmission: Sendable {
    enum Decision: Sendable, Equatable {
        case admit
        /// Evict up to `count` evictable connections (only `peer`'s, when given), then admit if any went.
        case makeRoom(peer: String?, count: Int)
    }

    let maxConnections: Int
    /// This loop's share of `maxConnectionsPerPeer`.
    let perPeerShare: Int
    let capacityBatch: Int
    let peerBatch: Int
    /// This loop's connections per peer address; absent means none.
    private(set) var connectionsByPeer: [String: Int] = [:]

    init(maxConnections: Int, maxConnectionsPerPeer: Int, loopCount: Int) {
        let loops = max(1, loopCount)
        self.maxConnections = max(1, maxConnections)
        perPeerShare = max(1, LoopLoad.evenShare(total: max(1, maxConnectionsPerPeer), loops: loops))
        capacityBatch = Self.batch(forLimit: LoopLoad.evenShare(total: self.maxConnections, loops: loops))
        peerBatch = Self.batch(forLimit: perPeerShare)
    }

    /// A sixteenth of the limit, between 1 and 64.
    static func batch(forLimit limit: Int) -> Int {
        min(64, max(1, limit / 16))
    }

    /// What to do with a new connection from `peer`, when the server's open connections, the new one
    /// included, number `openConnections`.
    func decide(peer: String, openConnections: Int) -> Decision {
        if connectionsByPeer[peer, default: 0] >= perPeerShare {
            return .makeRoom(peer: peer, count: peerBatch)
        }
        if openConnections > maxConnections {
            return .makeRoom(peer: nil, count: capacityBatch)
        }
        return .admit
    }

    mutating func opened(peer: String) {
        connectionsByPeer[peer, default: 0] += 1
    }

    mutating func closed(peer: String) {
        guard let count = connectionsByPeer[peer] else { return }
        connectionsByPeer[peer] = count > 1 ? count - 1 : nil
    }

    /// This loop's connections from `peer`.
    func connections(from peer: String) -> Int {
        connectionsByPeer[peer, default: 0]
    }
}
