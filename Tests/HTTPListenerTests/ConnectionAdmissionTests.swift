import Testing

@testable import HTTPListener

private let second: UInt64 = 1_000_000_000

private func candidate(_ id: UInt64, quietSince: UInt64, bytes: Int) -> EvictionPolicy.Candidate {
    EvictionPolicy.Candidate(id: id, quietSince: quietSince, bytesReceived: bytes)
}

@Test func eviction_LongestQuietGoFirst() {
    let candidates = [
        candidate(1, quietSince: 50 * second, bytes: 0),
        candidate(2, quietSince: 3 * second, bytes: 900),
        candidate(3, quietSince: 20 * second, bytes: 10),
    ]
    #expect(EvictionPolicy.victims(candidates, count: 2, now: 60 * second) == [2, 3])
    #expect(EvictionPolicy.victims(candidates, count: 5, now: 60 * second) == [2, 3, 1])
}

@Test func eviction_QuietEquallyLong_FewestBytesGoFirst() {
    let candidates = [
        candidate(1, quietSince: 7 * second, bytes: 40),
        candidate(2, quietSince: 7 * second, bytes: 3),
        candidate(3, quietSince: 7 * second, bytes: 40),
    ]
    #expect(EvictionPolicy.victims(candidates, count: 3, now: 8 * second) == [2, 1, 3])
}

@Test func eviction_FreshClientThatHasSentNothingYet_GoesAfterEveryOlderSlowConnection() {
    // A slow connection that trickled 500 bytes over 9 s, and a client that connected 1 ms ago.
    let candidates = [candidate(1, quietSince: 9 * second - 1_000_000, bytes: 0), candidate(2, quietSince: 0, bytes: 500)]
    #expect(EvictionPolicy.victims(candidates, count: 1, now: 9 * second) == [2])
}

@Test func eviction_LingeringAfterTheirAnswer_GoFirstEvenWhenTheyBeganLingeringThisTurn() {
    var lingering = candidate(3, quietSince: 9 * second, bytes: 0)
    lingering.lingering = true
    let candidates = [candidate(1, quietSince: 1 * second, bytes: 0), candidate(2, quietSince: 2 * second, bytes: 0), lingering]
    #expect(EvictionPolicy.victims(candidates, count: 2, now: 9 * second) == [3, 1])
}

@Test func eviction_ConnectionAcceptedThisTurn_IsNeverChosen() {
    let candidates = [candidate(1, quietSince: 5 * second, bytes: 0), candidate(2, quietSince: 4 * second, bytes: 0)]
    #expect(EvictionPolicy.victims(candidates, count: 2, now: 5 * second) == [2])
    #expect(EvictionPolicy.victims([candidate(1, quietSince: 5 * second, bytes: 0)], count: 1, now: 5 * second).isEmpty)
}

@Test func eviction_NothingToChooseOrNoneWanted_ChoosesNone() {
    #expect(EvictionPolicy.victims([], count: 3, now: second).isEmpty)
    #expect(EvictionPolicy.victims([candidate(1, quietSince: 0, bytes: 0)], count: 0, now: second).isEmpty)
}

@Test func admission_UnderBothLimits_Admits() {
    var admission = ConnectionAdmission(maxConnections: 100, maxConnectionsPerPeer: 10, loopCount: 2)
    for _ in 0..<4 { admission.opened(peer: "10.0.0.1") }
    #expect(admission.decide(peer: "10.0.0.1", openConnections: 100) == .admit)
    #expect(admission.decide(peer: "10.0.0.2", openConnections: 1) == .admit)
}

@Test func admission_PeerAtItsShareOfThisLoop_MakesRoomAmongItsOwnConnections() {
    // 10 per peer over 2 loops: 5 on this loop.
    var admission = ConnectionAdmission(maxConnections: 100, maxConnectionsPerPeer: 10, loopCount: 2)
    for _ in 0..<5 { admission.opened(peer: "10.0.0.1") }
    #expect(admission.decide(peer: "10.0.0.1", openConnections: 6) == .makeRoom(peer: "10.0.0.1", count: 1))
    #expect(admission.decide(peer: "10.0.0.2", openConnections: 6) == .admit)
    admission.closed(peer: "10.0.0.1")
    #expect(admission.decide(peer: "10.0.0.1", openConnections: 5) == .admit)
}

@Test func admission_OverCapacity_MakesRoomInABatch() {
    let admission = ConnectionAdmission(maxConnections: 4096, maxConnectionsPerPeer: 4096, loopCount: 2)
    // A sixteenth of this loop's share of 2,048, at most 64.
    #expect(admission.decide(peer: "10.0.0.3", openConnections: 4097) == .makeRoom(peer: nil, count: 64))
    #expect(admission.decide(peer: "10.0.0.3", openConnections: 4096) == .admit)
    let small = ConnectionAdmission(maxConnections: 8, maxConnectionsPerPeer: 8, loopCount: 2)
    #expect(small.decide(peer: "10.0.0.3", openConnections: 9) == .makeRoom(peer: nil, count: 1))
}

@Test func admission_ClosedConnections_ReleaseTheirPeer() {
    var admission = ConnectionAdmission(maxConnections: 10, maxConnectionsPerPeer: 10, loopCount: 1)
    admission.opened(peer: "a")
    admission.opened(peer: "a")
    admission.closed(peer: "a")
    #expect(admission.connections(from: "a") == 1)
    admission.closed(peer: "a")
    admission.closed(peer: "a")
    #expect(admission.connections(from: "a") == 0)
    #expect(admission.connectionsByPeer.isEmpty)
}

@Test func openFileLimit_ConnectionsBeyondTheLimit_AreLoweredToFitAfterTheReserve() {
    let reserved = OpenFileLimit.reservedDescriptors(eventLoops: 2, otherDescriptors: 64)
    #expect(reserved == 580)
    #expect(OpenFileLimit.connections(requested: 8192, limit: 1_048_576, reserved: reserved) == 8192)
    #expect(OpenFileLimit.connections(requested: 8192, limit: 1024, reserved: reserved) == 444)
    #expect(OpenFileLimit.connections(requested: 8192, limit: 100, reserved: reserved) == 1)
    #expect(OpenFileLimit.connections(requested: 10, limit: .max, reserved: reserved) == 10)
}

@Test func openFileLimit_Raise_LeavesSoftAtHard() throws {
    let outcome = try #require(OpenFileLimit.raiseToHardLimit())
    #expect(outcome.after == outcome.hard)
    #expect(outcome.before <= outcome.after)
}
