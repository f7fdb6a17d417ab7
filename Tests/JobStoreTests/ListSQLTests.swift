import CIModel
import Foundation
import PostgresLibPQ
import Testing

@testable import JobStore

@Suite("List SQL")
struct ListSQLTests {
    private static let cursor = JobListCursor(firstReceivedMicros: 1_700_000_000_000_000, jobID: "jcursor")

    /// Every combination of the six list filters, as queries with a value in each filter that is set.
    static var everyShape: [JobListQuery] {
        (0..<64).map { bits in
            JobListQuery(
                state: bits & 1 != 0 ? .failed : nil,
                tag: bits & 2 != 0 ? "Transcode" : nil,
                queueID: bits & 4 != 0 ? "p03" : nil,
                since: bits & 8 != 0 ? Date(timeIntervalSince1970: 1_600_000_000) : nil,
                until: bits & 16 != 0 ? Date(timeIntervalSince1970: 1_800_000_000) : nil,
                limit: 20,
                cursor: bits & 32 != 0 ? cursor : nil)
        }
    }

    @Test func listSQL_ordersByTheTableColumns_notTheTextAliasOfTheSameName() {
        let sql = JobListSQL.query(JobListQuery()).sql
        #expect(sql.contains("ORDER BY j.first_received_at DESC, j.job_id DESC"))
        #expect(sql.contains("AS first_received_at"), "the output column keeps its name")
        #expect(!sql.contains("WHERE"))
    }

    @Test func listSQL_namesOnlyTheFiltersGiven_eachBound() {
        let query = JobListSQL.query(JobListQuery(state: .failed, queueID: "p03", limit: 20))
        #expect(query.sql.contains("j.state = $1"))
        #expect(query.sql.contains("j.queue_id = $2"))
        #expect(!query.sql.contains("j.tag"))
        #expect(!query.sql.contains("IS NULL"), "no catch-all conditions that leave a generic plan nothing to seek on")
        #expect(query.binds == [.text("Failed"), .text("p03"), .text("21")], "one row more than the page tells whether another follows")
    }

    @Test func listSQL_cursorIsARowComparisonOnTheIndexColumns() {
        let query = JobListSQL.query(JobListQuery(cursor: Self.cursor))
        #expect(query.sql.contains("(j.first_received_at, j.job_id) < (('epoch'::timestamptz + $1::bigint * interval '1 microsecond'), $2::text)"))
        #expect(query.binds == [.text("1700000000000000"), .text("jcursor"), .text("51")])
    }

    @Test func listSQL_everyCombinationIsAStatementOfItsOwn() {
        let texts = Set(Self.everyShape.map { JobListSQL.query($0).sql })
        #expect(texts.count == 64)
    }

    @Test func listSQL_limitIsClampedToThePageBounds() {
        #expect(JobListSQL.query(JobListQuery(limit: 0)).binds.last == .text("2"))
        #expect(JobListSQL.query(JobListQuery(limit: 100_000)).binds.last == .text(String(JobListQuery.maximumLimit + 1)))
    }

    @Test func historySQL_pagesAlongTheEventKey() {
        let first = CallbackHistorySQL.query(jobID: "j1", page: CallbackHistoryQuery())
        #expect(first.sql.contains("WHERE e.job_id = $1\n    ORDER BY e.callback_id\n    LIMIT $2"))
        #expect(first.binds == [.text("j1"), .text(String(CallbackHistoryQuery.defaultLimit + 1))])
        let next = CallbackHistorySQL.query(jobID: "j1", page: CallbackHistoryQuery(limit: 5000, cursor: CallbackHistoryCursor(callbackID: 42)))
        #expect(next.sql.contains("AND e.callback_id > $2::bigint"))
        #expect(next.binds == [.text("j1"), .text("42"), .text(String(CallbackHistoryQuery.maximumLimit + 1))])
    }

    @Test func historyCursor_roundTrips_andRefusesAnythingElse() {
        let cursor = CallbackHistoryCursor(callbackID: 9_007_199_254_740_993)
        #expect(CallbackHistoryCursor(token: cursor.token) == cursor)
        #expect(!cursor.token.contains("="))
        #expect(CallbackHistoryCursor(token: Self.cursor.token) == nil, "a job list cursor is not a history cursor")
        #expect(CallbackHistoryCursor(token: "not base64!") == nil)
        #expect(CallbackHistoryCursor(token: Base64URL.encode("c:-1")) == nil)
        #expect(CallbackHistoryCursor(token: Base64URL.encode("c:12x")) == nil)
        #expect(JobListCursor(token: Self.cursor.token) == Self.cursor)
    }
}
