import Testing

@testable import PostgresLibPQ

/// Where a batch ends: by count, and by weight (the ingest batcher's bytes), so that large callbacks are
/// not gathered into one statement whose parameters are copied several times on the way to the socket.
@Suite("BatchCut")
struct BatchCutTests {
    @Test func batchCut_LightItems_TakesUpToTheCount() {
        #expect(BatchCut.length(weights: Array(repeating: 1_000, count: 100), maxCount: 64, maxWeight: 1 << 20) == 64)
        #expect(BatchCut.length(weights: [1, 2, 3], maxCount: 64, maxWeight: 1 << 20) == 3)
    }

    @Test func batchCut_HeavyItems_StopBeforeTheWeightIsExceeded() {
        #expect(BatchCut.length(weights: [400, 400, 400, 1], maxCount: 64, maxWeight: 1_000) == 2)
        #expect(BatchCut.length(weights: [400, 600, 1], maxCount: 64, maxWeight: 1_000) == 2)
    }

    @Test func batchCut_AnItemHeavierThanTheLimit_GoesAlone() {
        #expect(BatchCut.length(weights: [5_000, 1, 1], maxCount: 64, maxWeight: 1_000) == 1)
        #expect(BatchCut.length(weights: [1, 5_000, 1], maxCount: 64, maxWeight: 1_000) == 1)
    }

    @Test func batchCut_NoWeightLimit_CountsOnly() {
        #expect(BatchCut.length(weights: [Int.max / 2, Int.max / 2, Int.max / 2], maxCount: 2, maxWeight: .max) == 2)
        #expect(BatchCut.length(weights: [Int](), maxCount: 64, maxWeight: .max) == 0)
    }
}
