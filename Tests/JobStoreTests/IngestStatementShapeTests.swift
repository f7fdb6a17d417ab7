import CIModel
import Foundation
import PostgresLibPQ
import Testing

@testable import JobStore

/// The ingest statements' text and bind layout, wave splitting and lock ordering, without a database: what
/// the statements' parameters must line up with is fixed by the code that builds them.
@Suite("Ingest statement shape")
struct IngestStatementShapeTests {
    private static func record(
        body: String, jobIDs: [String] = [], outcome: StoredOutcome = .accepted, format: CallbackFormat? = .json,
        source: CallbackSource = .callback
    ) -> IngestRecord {
        IngestRecord(
            body: Array(body.utf8), bodySize: body.utf8.count, truncated: false, format: format, contentType: "application/json",
            remoteAddress: "10.0.0.1", eventName: "TaskFinish", outcome: outcome, rejectionReason: nil, source: source,
            jobsJSON: "[" + jobIDs.map { #"{"job_id":"\#($0)"}"# }.joined(separator: ",") + "]", jobCount: jobIDs.count,
            receivedAt: Date(timeIntervalSince1970: 1_700_000_000), lockKey: jobIDs.min() ?? "", jobIDs: jobIDs)
    }

    /// The highest `$n` a statement names.
    private static func highestParameter(_ sql: String) -> Int {
        var highest = 0
        var rest = Substring(sql)
        while let dollar = rest.firstIndex(of: "$") {
            rest = rest[rest.index(after: dollar)...]
            let digits = rest.prefix(while: \.isNumber)
            if let number = Int(digits) { highest = max(highest, number) }
        }
        return highest
    }

    /// The expressions of the `SELECT` that feeds `INSERT INTO ci_callbacks (…)`, and that column list.
    private static func callbackInsert(_ sql: String) -> (columns: [String], values: [String])? {
        guard let insert = sql.range(of: "INSERT INTO ci_callbacks (") else { return nil }
        let afterInsert = sql[insert.upperBound...]
        guard let close = afterInsert.firstIndex(of: ")"), let select = afterInsert.range(of: "SELECT "),
            let from = afterInsert[select.upperBound...].range(of: "FROM")
        else { return nil }
        let split = { (text: Substring) in
            text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        }
        return (split(afterInsert[..<close]), split(afterInsert[select.upperBound..<from.lowerBound]))
    }

    @Test func singleStatement_bindsEveryColumnInTheOrderTheSQLNumbersThem() {
        let record = Self.record(body: "{}", jobIDs: ["j1"], outcome: .noJobs, format: .xml, source: .reconcile)
        let query = record.query
        #expect(query.binds.count == Self.highestParameter(IngestRecord.sql))
        #expect(query.binds[0] == .bytea(Array("{}".utf8)))
        #expect(query.binds[3] == .text("XML"), "format")
        #expect(query.binds[7] == .text("no_jobs"), "outcome, as the column's raw value")
        #expect(query.binds[9] == .text("reconcile"), "source")
        #expect(query.binds[11] == .text("1700000000000000"), "receive instant in microseconds")
        #expect(query.binds[12] == .text(#"[{"job_id":"j1"}]"#))
    }

    @Test func singleStatement_rejectedBodyWithoutFormat_bindsNull() {
        let query = Self.record(body: "junk", outcome: .rejected, format: nil).query
        #expect(query.binds[3] == .null)
        #expect(query.binds[7] == .text("rejected"))
    }

    @Test func batchStatement_bindsBodiesCallbacksAndJobs_inRecordOrder() throws {
        let records = [
            Self.record(body: "a", jobIDs: ["j2"]), Self.record(body: "b", outcome: .rejected, format: nil, source: .submit),
        ]
        let query = IngestBatchStatement(records: records).query
        #expect(query.binds.count == 3)
        #expect(Self.highestParameter(IngestBatchStatement.sql) == 3)
        #expect(query.binds[0] == .byteaArray([Array("a".utf8), Array("b".utf8)]))
        guard case .text(let callbacksJSON) = query.binds[1], case .text(let jobs) = query.binds[2] else {
            Issue.record("callbacks and jobs travel as JSON text: \(query.binds)")
            return
        }
        let callbacks = try #require(JSONSerialization.jsonObject(with: Data(callbacksJSON.utf8)) as? [[String: Any]])
        #expect(callbacks.map { $0["ord"] as? Int } == [1, 2], "ord is the 1-based position of the body in $1")
        #expect(callbacks.map { $0["outcome"] as? String } == ["accepted", "rejected"])
        #expect(callbacks.map { $0["source"] as? String } == ["callback", "submit"])
        #expect(callbacks[0]["format"] as? String == "JSON")
        #expect(callbacks[1]["format"] == nil, "an absent format is left out and reads as NULL")
        #expect(jobs == #"[[{"job_id":"j2"}],[]]"#, "element k is callback k's jobs")
    }

    @Test func bothStatements_supplyEveryCallbackColumnTheInsertNames() throws {
        for sql in [IngestRecord.sql, IngestBatchStatement.sql] {
            let insert = try #require(Self.callbackInsert(sql))
            #expect(insert.columns.count == 14)
            #expect(insert.values.count == insert.columns.count, "\(insert.values)")
        }
    }

    @Test func callbackInsert_countsARepeatedBodyOnItsDigest_andInsertsOnlyAFreshOne() {
        let sql = CallbackInsertSQL.insert(digests: "VALUES (1)", bodies: "SELECT 2")
        #expect(sql.contains("ON CONFLICT (body_sha256) DO UPDATE"))
        #expect(sql.contains("SET delivery_count = d.delivery_count + 1"))
        #expect(sql.contains("(xmax = 0) AS inserted"), "a fresh insert is told from the conflict's update")
        #expect(sql.hasSuffix("SELECT 2"), "the caller closes the body CTE")
    }

    @Test func jobUpsert_replacesEveryPrecedenceColumnOnlyUnderPrecedence() {
        let sql = JobUpsertSQL.upsert(from: "FROM i", callbackID: "7", source: "'callback'", receivedAt: "now()", changedAt: "now()")
        for column in JobUpsertSQL.precedenceColumns + ["state_callback_id", "state_source"] {
            #expect(sql.contains("\(column) = CASE WHEN EXCLUDED.state_rank >= j.state_rank THEN EXCLUDED.\(column) ELSE j.\(column) END"), "\(column)")
        }
        #expect(sql.contains("callback_count = j.callback_count + 1"), "receipts count whatever the precedence")
        #expect(
            sql.contains("state_changed_at = CASE WHEN EXCLUDED.state_rank >= j.state_rank AND EXCLUDED.state IS DISTINCT FROM j.state"),
            "the change time moves only with the state")
    }

    @Test func jobUpsert_recordTypesDeclareEveryColumnTheUpsertReads() {
        let declared = Set(JobUpsertSQL.recordTypes.map { String($0.prefix { $0 != " " }) })
        for column in ["job_id"] + JobUpsertSQL.precedenceColumns {
            #expect(declared.contains(column), "\(column) is selected as i.\(column)")
        }
        #expect(declared.contains("held"))
    }

    @Test func waves_distinctBodiesAndJobs_areOneStatement() {
        let records = [Self.record(body: "a", jobIDs: ["j1"]), Self.record(body: "b", jobIDs: ["j2"]), Self.record(body: "c")]
        let waves = IngestBatchStatement.waves(of: records, record: { $0 })
        #expect(waves.map { $0.map(\.body) } == [records.map(\.body)])
    }

    @Test func waves_repeatedBody_goesToTheNextStatement() {
        let records = [Self.record(body: "a"), Self.record(body: "b"), Self.record(body: "a"), Self.record(body: "a")]
        let waves = IngestBatchStatement.waves(of: records, record: { $0 })
        #expect(waves.map { $0.map { String(decoding: $0.body, as: UTF8.self) } } == [["a", "b"], ["a"], ["a"]])
    }

    @Test func waves_sharedJobID_keepsArrivalOrderPerJob() {
        let records = [
            Self.record(body: "1", jobIDs: ["j1", "j2"]), Self.record(body: "2", jobIDs: ["j3"]),
            Self.record(body: "3", jobIDs: ["j2"]), Self.record(body: "4", jobIDs: ["j3", "j4"]), Self.record(body: "5", jobIDs: ["j5"]),
        ]
        let waves = IngestBatchStatement.waves(of: records, record: { $0 })
        #expect(waves.map { $0.map { String(decoding: $0.body, as: UTF8.self) } } == [["1", "2", "5"], ["3", "4"]])
    }

    @Test func waves_recordSharingKeysWithSeveralWaves_followsTheLatest() {
        // The last record shares j1 with wave 0 and its body with wave 1: it must come after both.
        let records = [
            Self.record(body: "a", jobIDs: ["j1"]), Self.record(body: "b"), Self.record(body: "b"), Self.record(body: "b", jobIDs: ["j1"]),
        ]
        let waves = IngestBatchStatement.waves(of: records, record: { $0 })
        #expect(waves.map { $0.map { String(decoding: $0.body, as: UTF8.self) } } == [["a", "b"], ["b"], ["b"]])
        #expect(waves[2][0].jobIDs == ["j1"])
    }

    @Test func lockOrdered_sortsByLockKey_keepingArrivalOrderAmongEquals() {
        let batch = [("j3", 0), ("j1", 1), ("", 2), ("j3", 3), ("j1", 4), ("j2", 5)]
        let ordered = IngestBatcher.lockOrdered(batch, lockKey: \.0)
        #expect(ordered.map(\.1) == [2, 1, 4, 5, 0, 3])
    }
}
