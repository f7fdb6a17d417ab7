import Testing

@testable import JobStore

/// Splitting a committed batch statement's rows among its records (by `ord`), without a database.
@Suite("Ingest batch split")
struct IngestBatchSplitTests {
    private struct Row {
        var ord: Int?
        var text: String
    }

    @Test func split_RowsOfSeveralRecords_GroupByOrdInRecordOrder() {
        let rows = [Row(ord: 2, text: "b"), Row(ord: 1, text: "a1"), Row(ord: 1, text: "a2"), Row(ord: 3, text: "c")]
        let groups = IngestBatcher.split(rows, into: 3, ord: \.ord)
        #expect(groups.map { $0.map(\.text) } == [["a1", "a2"], ["b"], ["c"]])
    }

    /// The committed batch must not read as rolled back because one record came back without rows: that
    /// re-ran every member, and each first delivery then answered `Duplicate:true`.
    @Test func split_RecordWithoutRows_KeepsEveryOtherRecordsRows() {
        let rows = [Row(ord: 1, text: "a"), Row(ord: 3, text: "c1"), Row(ord: 3, text: "c2")]
        let groups = IngestBatcher.split(rows, into: 3, ord: \.ord)
        #expect(groups.map { $0.map(\.text) } == [["a"], [], ["c1", "c2"]])
    }

    @Test func split_RowWithoutOrOutOfRangeOrd_IsIgnored() {
        let rows = [Row(ord: nil, text: "x"), Row(ord: 0, text: "y"), Row(ord: 3, text: "z"), Row(ord: 1, text: "a"), Row(ord: 2, text: "b")]
        let groups = IngestBatcher.split(rows, into: 2, ord: \.ord)
        #expect(groups.map { $0.map(\.text) } == [["a"], ["b"]])
    }
}
