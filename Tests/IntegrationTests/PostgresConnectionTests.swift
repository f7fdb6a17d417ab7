import Foundation
import PostgresLibPQ
import Testing

/// The test cluster: `DATABASE_URL`, or the project-local cluster under `<repo>/.pgdata/run`.
private let databaseURL: String = {
    if let url = ProcessInfo.processInfo.environment["DATABASE_URL"], !url.isEmpty { return url }
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    return "postgresql://postgres@/ci_callbackd?host=\(repo)/.pgdata/run&port=54329"
}()

private func connect() throws -> PostgresConnection {
    try PostgresConnection.connect(databaseURL)
}

private func uniqueSuffix() -> String {
    String(UInt64.random(in: 0...UInt64.max), radix: 36)
}

private struct BodyFailure: Error, Equatable {
    var marker: Int
}

/// Blocking libpq calls run directly in these tests; `.serialized` keeps them to one cooperative thread.
@Suite(.serialized)
struct PostgresConnectionTests {
    // MARK: Connecting

    @Test func connect_SucceedsAndIsHealthy() throws {
        let connection = try connect()
        #expect(connection.isHealthy)
        #expect(connection.backendPID > 0)
        let rows = try connection.query("SELECT current_setting('client_encoding') AS encoding, pg_backend_pid() AS pid")
        #expect(rows.first?["encoding"].string == "UTF8")
        #expect(rows.first?["pid"].int == Int(connection.backendPID))
    }

    @Test func connect_BadPortFailsQuicklyWithConnectionFailed() throws {
        let started = ContinuousClock.now
        let error = #expect(throws: PostgresError.self) {
            _ = try PostgresConnection.connect("postgresql://postgres@127.0.0.1:1/ci_callbackd?connect_timeout=2")
        }
        #expect(error?.code == .connectionFailed)
        #expect(error?.isConnectionProblem == true)
        #expect(error?.serverMessage?.isEmpty == false)
        #expect(ContinuousClock.now - started < .seconds(3))
    }

    @Test(arguments: [
        "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/ci_callbackd",
        "host=127.0.0.1 port=1 dbname=ci_callbackd user=postgres password=s3cr3t-pw",
        "host=127.0.0.1 port=1 password=s3cr3t-pw junk",
        "postgresql://postgres@127.0.0.1:1/ci_callbackd?password=s3cr3t-pw&bogus_option=s3cr3t-pw",
    ])
    func connect_FailureDescriptionNeverShowsThePassword(conninfo: String) throws {
        let error = #expect(throws: PostgresError.self) {
            _ = try PostgresConnection.connect(conninfo)
        }
        let error_ = try #require(error)
        #expect(error_.code == .connectionFailed)
        #expect(!error_.description.contains("s3cr3t"))
        #expect(!error_.debugDescription.contains("s3cr3t"))
        #expect(error_.description.hasPrefix("PostgresError(connectionFailed): "))
    }

    @Test func redaction_HidesPasswordsInURIsAndKeyValueStrings() {
        #expect(
            PostgresConnInfo.redacted("postgresql://app:hunter2@db:5432/x?sslmode=require")
                == "postgresql://app:***@db:5432/x?sslmode=require"
        )
        #expect(PostgresConnInfo.redacted("host=db password=hunter2 user=app") == "host=db password=*** user=app")
        #expect(PostgresConnInfo.redacted("host=db PASSWORD = 'hun ter\\'2' user=app") == "host=db PASSWORD = *** user=app")
        #expect(PostgresConnInfo.redacted("postgres://db/x?user=a&password=hunter2&port=1") == "postgres://db/x?user=a&password=***&port=1")
        #expect(PostgresConnInfo.redacted("postgresql://app@db/x") == "postgresql://app@db/x")
        #expect(PostgresConnInfo.redacted("passwordless host=db") == "passwordless host=db")
    }

    @Test func close_IsIdempotentAndLaterQueriesFailAsConnectionLost() throws {
        let connection = try connect()
        connection.close()
        connection.close()
        #expect(!connection.isHealthy)
        let error = #expect(throws: PostgresError.self) { try connection.query("SELECT 1") }
        #expect(error?.code == .connectionLost)
    }

    @Test func query_TerminatedBackendReportsConnectionLost() throws {
        let victim = try connect()
        let killer = try connect()
        try killer.query("SELECT pg_terminate_backend(\(victim.backendPID))")
        let error = #expect(throws: PostgresError.self) { try victim.query("SELECT 1") }
        #expect(error?.code == .connectionLost)
        #expect(error?.isConnectionProblem == true)
        #expect(!victim.isHealthy)
    }

    // MARK: Binds and decoding

    @Test func query_RoundTripsEveryBindType() throws {
        let connection = try connect()
        let bytes: [UInt8] = [0x00, 0x01, 0xFF, 0x00, 0x5C, 0x78, 0x00]
        let chinese = "回调任务 \"引号\" 'single' \\ 反斜杠 🎬"
        let noText: String? = nil
        let noInt: Int? = nil
        let someInt64: Int64? = 5
        let noBool: Bool? = nil
        let someDouble: Double? = 2.5
        let noBytes: [UInt8]? = nil
        let query: SQLQuery = """
            SELECT \(chinese)::text AS t, \(noText)::text AS nt, \("")::text AS empty_text,
                   \(42)::int8 AS i, \(noInt)::int8 AS ni, \(Int32(-7))::int4 AS i32, \(Int64.max)::int8 AS i64,
                   \(someInt64)::int8 AS oi64, \(true)::bool AS b, \(false)::bool AS f, \(noBool)::bool AS nb,
                   \(someDouble)::float8 AS d, \(1e-300)::float8 AS tiny, \(Double.infinity)::float8 AS inf,
                   \(bytes)::bytea AS bytes, \([UInt8]())::bytea AS empty_bytes, \(noBytes)::bytea AS nbytes,
                   \(PostgresValue.text("pv"))::text AS pv, \(PostgresValue.null)::text AS pvnull,
                   \(["a", "b"])::text[] AS arr
            """
        #expect(query.binds.count == 20)
        #expect(!query.sql.contains("回调"))
        let rows = try connection.query(query)
        #expect(rows.count == 1)
        let row = try #require(rows.first)
        #expect(row["t"].string == chinese)
        #expect(row["nt"].isNull)
        #expect(row["nt"].string == nil)
        #expect(row["empty_text"].string == "")
        #expect(!row["empty_text"].isNull)
        #expect(row["i"].int == 42)
        #expect(row["ni"].isNull && row["ni"].int == nil)
        #expect(row["i32"].int == -7)
        #expect(row["i64"].int == Int(Int64.max))
        #expect(row["oi64"].int == 5)
        #expect(row["b"].bool == true)
        #expect(row["f"].bool == false)
        #expect(row["nb"].isNull)
        #expect(row["d"].double == 2.5)
        #expect(row["tiny"].double == 1e-300)
        #expect(row["inf"].double == .infinity)
        #expect(row["bytes"].bytes == bytes)
        #expect(row["bytes"].string == "\\x0001ff005c7800")
        #expect(row["empty_bytes"].bytes == [])
        #expect(!row["empty_bytes"].isNull)
        #expect(row["nbytes"].isNull && row["nbytes"].bytes == nil)
        #expect(row["pv"].string == "pv")
        #expect(row["pvnull"].isNull)
        #expect(row["arr"].strings == ["a", "b"])
        #expect(row[0].columnName == "t")
        #expect(rows.columns.count == 20)
    }

    @Test func query_TextArrayQuotingSurvivesSpecialElements() throws {
        let connection = try connect()
        let elements = ["a,b", "{x}", "\"q\"", "back\\slash", "", "NULL", " spaced ", "中文", "x\"}\\{,y"]
        let rows = try connection.query(
            "SELECT \(elements)::text[] AS arr, cardinality(\(elements)::text[]) AS n, (\(elements)::text[])[6] IS NULL AS sixth_is_null"
        )
        let row = try #require(rows.first)
        #expect(row["n"].int == elements.count)
        #expect(row["sixth_is_null"].bool == false)
        #expect(row["arr"].strings == elements)
        let unnested = try connection.query("SELECT e FROM unnest(\(elements)::text[]) WITH ORDINALITY AS u(e, i) ORDER BY i")
        #expect(unnested.map { $0["e"].string } == elements)
        let empty = try connection.query("SELECT \([String]())::text[] AS arr")
        #expect(empty.first?["arr"].strings == [])
    }

    @Test func query_ByteaArrayRoundTripsBinaryElementsInOrder() throws {
        let connection = try connect()
        let elements: [[UInt8]] = [[0x00, 0x01, 0xFF], [], Array("{\"quoted\",\\}".utf8), [UInt8](repeating: 0x5C, count: 3000)]
        let rows = try connection.query(
            """
            SELECT i, encode(e, 'hex') AS hex, length(e) AS n
            FROM unnest(\(PostgresValue.byteaArray(elements))::bytea[]) WITH ORDINALITY AS u(e, i) ORDER BY i
            """
        )
        #expect(rows.map { $0["n"].int } == elements.map(\.count))
        #expect(rows.map { $0["hex"].string } == elements.map { $0.map { String(format: "%02x", $0) }.joined() })
        let empty = try connection.query("SELECT cardinality(\(PostgresValue.byteaArray([]))::bytea[]) AS n")
        #expect(empty.first?["n"].int == 0)
    }

    @Test func query_DecodesServerSideTypesAndNullArrayElements() throws {
        let connection = try connect()
        let row = try #require(
            try connection.query(
                """
                SELECT 7::int2 AS small, 1.5::numeric AS num, 'NaN'::float8 AS nan, '-Infinity'::float8 AS ninf,
                       ARRAY['x', NULL]::text[] AS with_null, '\\x00ff'::bytea AS hex, 'plain' AS word
                """
            ).first
        )
        #expect(row["small"].int == 7)
        #expect(row["num"].double == 1.5)
        #expect(row["num"].int == nil)
        #expect(row["nan"].double?.isNaN == true)
        #expect(row["ninf"].double == -.infinity)
        #expect(row["with_null"].strings == nil)
        #expect(row["hex"].bytes == [0x00, 0xFF])
        #expect(row["word"].bytes == Array("plain".utf8))
        #expect(row["word"].bool == nil)
        #expect(row.contains("word") && !row.contains("missing"))
    }

    @Test func query_InjectionAttemptStaysData() throws {
        let connection = try connect()
        let table = "pg_inject_\(uniqueSuffix())"
        try connection.execute(simpleSQL: "CREATE TEMP TABLE \(table) (v text)")
        let attack = "x'); DROP TABLE \(table); --"
        let insert: SQLQuery = "INSERT INTO \(unsafeRaw: table) (v) VALUES (\(attack))"
        #expect(insert.sql == "INSERT INTO \(table) (v) VALUES ($1)")
        #expect(insert.binds == [.text(attack)])
        let inserted = try connection.query(insert)
        #expect(inserted.affectedRows == 1)
        let rows = try connection.query("SELECT v FROM \(unsafeRaw: table) WHERE v = \(attack)")
        #expect(rows.map { $0["v"].string } == [attack])
        let quoteAttack = "' OR '1'='1"
        #expect(try connection.query("SELECT v FROM \(unsafeRaw: table) WHERE v = \(quoteAttack)").isEmpty)
    }

    @Test func query_NULInTextParameterIsRejectedBeforeSending() throws {
        let connection = try connect()
        let error = #expect(throws: PostgresError.self) { try connection.query("SELECT \("a\u{0}b")::text") }
        #expect(error?.code == .queryFailed)
        #expect(error?.sqlState == "22021")
        #expect(connection.isHealthy)
    }

    @Test func query_PreparesEachStatementOncePerConnection() throws {
        let connection = try connect()
        let marker = uniqueSuffix()
        let sql = "SELECT $1::int + 1 AS v /* reuse \(marker) */"
        #expect(try connection.query(SQLQuery(unsafeSQL: sql, binds: [.text("1")])).first?["v"].int == 2)
        #expect(try connection.query(SQLQuery(unsafeSQL: sql, binds: [.text("41")])).first?["v"].int == 42)
        let stats = try connection.query(
            """
            SELECT count(*)::int AS statements, coalesce(sum(generic_plans + custom_plans), 0)::int AS runs
            FROM pg_prepared_statements WHERE statement = \(sql)
            """
        )
        #expect(stats.first?["statements"].int == 1)
        #expect(stats.first?["runs"].int == 2)
    }

    // MARK: Errors

    @Test func query_UniqueViolationCarriesSQLState23505() throws {
        let connection = try connect()
        let table = "pg_unique_\(uniqueSuffix())"
        try connection.execute(simpleSQL: "CREATE TEMP TABLE \(table) (id text PRIMARY KEY)")
        try connection.query("INSERT INTO \(unsafeRaw: table) (id) VALUES (\("job-1"))")
        let error = #expect(throws: PostgresError.self) {
            try connection.query("INSERT INTO \(unsafeRaw: table) (id) VALUES (\("job-1"))")
        }
        #expect(error?.code == .queryFailed)
        #expect(error?.sqlState == "23505")
        #expect(error?.isConnectionProblem == false)
        #expect(error?.serverMessage?.contains("duplicate key value") == true)
        #expect(error?.description.hasPrefix("PostgresError(queryFailed, sqlState: 23505): duplicate key value") == true)
        #expect(error?.description.contains("job-1") == false)
        #expect(connection.isHealthy)
    }

    @Test func query_SyntaxErrorCarriesSQLState42601AndConnectionStaysUsable() throws {
        let connection = try connect()
        let error = #expect(throws: PostgresError.self) { try connection.query("SELEKT \("secret-value")") }
        #expect(error?.sqlState == "42601")
        #expect(error?.description.contains("secret-value") == false)
        #expect(try connection.query("SELECT 1 AS one").first?["one"].int == 1)
        let again = #expect(throws: PostgresError.self) { try connection.query("SELEKT \("secret-value")") }
        #expect(again?.sqlState == "42601")
    }

    @Test func query_DataExceptionMessageHidesTheBindValue() throws {
        let connection = try connect()
        let error = #expect(throws: PostgresError.self) { try connection.query("SELECT \("card-4111-secret")::int") }
        #expect(error?.sqlState == "22P02")
        #expect(error?.serverMessage == "invalid input syntax for type integer: \"***\"")
        #expect(error?.description.contains("card-4111") == false)
        #expect(error?.debugDescription.contains("card-4111") == false)
    }

    // MARK: Transactions

    @Test func transaction_CommitsOnSuccess() throws {
        let connection = try connect()
        let table = "pg_tx_\(uniqueSuffix())"
        try connection.execute(simpleSQL: "CREATE TEMP TABLE \(table) (v int)")
        let returned = try connection.transaction { tx in
            try tx.query("INSERT INTO \(unsafeRaw: table) VALUES (\(1)), (\(2))").affectedRows
        }
        #expect(returned == 2)
        #expect(try connection.query("SELECT count(*)::int AS n FROM \(unsafeRaw: table)").first?["n"].int == 2)
    }

    @Test func transaction_RollsBackAndRethrowsTheBodyErrorUnchanged() throws {
        let connection = try connect()
        let table = "pg_tx_\(uniqueSuffix())"
        try connection.execute(simpleSQL: "CREATE TEMP TABLE \(table) (v int)")
        #expect(throws: BodyFailure(marker: 7)) {
            try connection.transaction { tx in
                try tx.query("INSERT INTO \(unsafeRaw: table) VALUES (\(1))")
                throw BodyFailure(marker: 7)
            }
        }
        #expect(try connection.query("SELECT count(*)::int AS n FROM \(unsafeRaw: table)").first?["n"].int == 0)
        #expect(connection.isHealthy)
    }

    @Test func transaction_NestedCallUsesASavepoint() throws {
        let connection = try connect()
        let table = "pg_tx_\(uniqueSuffix())"
        try connection.execute(simpleSQL: "CREATE TEMP TABLE \(table) (v int)")
        try connection.transaction { tx in
            try tx.query("INSERT INTO \(unsafeRaw: table) VALUES (\(1))")
            #expect(throws: BodyFailure(marker: 2)) {
                try tx.transaction { inner in
                    try inner.query("INSERT INTO \(unsafeRaw: table) VALUES (\(2))")
                    throw BodyFailure(marker: 2)
                }
            }
            try tx.query("INSERT INTO \(unsafeRaw: table) VALUES (\(3))")
        }
        let values = try connection.query("SELECT v FROM \(unsafeRaw: table) ORDER BY v").map { $0["v"].int }
        #expect(values == [1, 3])
    }

    @Test func transaction_SwallowedStatementErrorMakesCommitThrow25P02() throws {
        let connection = try connect()
        let error = #expect(throws: PostgresError.self) {
            try connection.transaction { tx in
                _ = try? tx.query("SELECT 1/0")
            }
        }
        #expect(error?.sqlState == "25P02")
        #expect(connection.isHealthy)
    }

    // MARK: Pipeline

    @Test func pipeline_ThreeInsertsCommitInOneTransaction() throws {
        let connection = try connect()
        let table = "pg_pipe_\(uniqueSuffix())"
        try connection.execute(simpleSQL: "CREATE TEMP TABLE \(table) (id text PRIMARY KEY)")
        let results = try connection.pipeline(
            ["a", "b", "c"].map { "INSERT INTO \(unsafeRaw: table) (id) VALUES (\($0)) RETURNING txid_current() AS xid" }
        )
        #expect(results.count == 3)
        let xids = try results.map { try $0.get().first?["xid"].int }
        #expect(Set(xids).count == 1)
        #expect(xids.allSatisfy { $0 != nil })
        #expect(try results.map { try $0.get().affectedRows } == [1, 1, 1])
        #expect(try connection.query("SELECT count(*)::int AS n FROM \(unsafeRaw: table)").first?["n"].int == 3)
        #expect(connection.isHealthy)
    }

    @Test func pipeline_FailingMiddleQueryCommitsNothing() throws {
        let connection = try connect()
        let table = "pg_pipe_\(uniqueSuffix())"
        try connection.execute(simpleSQL: "CREATE TEMP TABLE \(table) (id text PRIMARY KEY)")
        try connection.query("INSERT INTO \(unsafeRaw: table) (id) VALUES (\("dup"))")
        let results = try connection.pipeline([
            "INSERT INTO \(unsafeRaw: table) (id) VALUES (\("first"))",
            "INSERT INTO \(unsafeRaw: table) (id) VALUES (\("dup"))",
            "INSERT INTO \(unsafeRaw: table) (id) VALUES (\("third"))",
        ])
        #expect(results.count == 3)
        #expect((try? results[0].get()) != nil)
        guard case .failure(let middle) = results[1], case .failure(let aborted) = results[2] else {
            Issue.record("expected the 2nd and 3rd queries to fail: \(results)")
            return
        }
        #expect(middle.sqlState == "23505")
        #expect(aborted.code == .queryFailed)
        #expect(aborted.sqlState == nil)
        #expect(aborted.serverMessage?.contains("aborted") == true)
        let ids = try connection.query("SELECT id FROM \(unsafeRaw: table) ORDER BY id").map { $0["id"].string }
        #expect(ids == ["dup"])
        #expect(connection.isHealthy)
        #expect(try connection.query("SELECT 1 AS one").first?["one"].int == 1)
    }

    @Test func pipeline_SyntaxErrorInANewStatementFailsThatQueryAndLater() throws {
        let connection = try connect()
        let results = try connection.pipeline(["SELECT \(1)::int AS a", "SELEKT \(2)", "SELECT \(3)::int AS c"])
        #expect(try results[0].get().first?["a"].int == 1)
        guard case .failure(let syntax) = results[1], case .failure(let aborted) = results[2] else {
            Issue.record("expected failures: \(results)")
            return
        }
        #expect(syntax.sqlState == "42601")
        #expect(aborted.sqlState == nil)
        let rerun = try connection.pipeline(["SELECT \(3)::int AS c"])
        #expect(try rerun[0].get().first?["c"].int == 3)
    }

    @Test func pipeline_LargeBatchDoesNotDeadlock() throws {
        let connection = try connect()
        let payload = String(repeating: "x", count: 2_000)
        let count = 3_000
        let queries: [SQLQuery] = (0..<count).map { "SELECT \($0)::int AS i, \(payload)::text || repeat('y', 2000) AS body" }
        let results = try connection.pipeline(queries)
        #expect(results.count == count)
        let indexes = try results.map { try $0.get().first?["i"].int }
        #expect(indexes == Array(0..<count))
        #expect(try results[count - 1].get().first?["body"].string?.utf8.count == 4_000)
        #expect(connection.isHealthy)
    }

    @Test func pipeline_PreparesARepeatedNewStatementOnce() throws {
        let connection = try connect()
        let marker = uniqueSuffix()
        let sql = "SELECT $1::int * 2 AS v /* pipe \(marker) */"
        let results = try connection.pipeline((1...4).map { SQLQuery(unsafeSQL: sql, binds: [.text(String($0))]) })
        #expect(try results.map { try $0.get().first?["v"].int } == [2, 4, 6, 8])
        #expect(try connection.query(SQLQuery(unsafeSQL: sql, binds: [.text("5")])).first?["v"].int == 10)
        let stats = try connection.query(
            "SELECT count(*)::int AS statements, sum(generic_plans + custom_plans)::int AS runs FROM pg_prepared_statements WHERE statement = \(sql)"
        )
        #expect(stats.first?["statements"].int == 1)
        #expect(stats.first?["runs"].int == 5)
        #expect(try connection.pipeline([]).isEmpty)
    }

    // MARK: LISTEN / NOTIFY

    @Test func listen_NotifyRoundTripBetweenTwoConnections() throws {
        let listener = try connect()
        let sender = try connect()
        let channel = "ci \"jobs\" \(uniqueSuffix())"
        try listener.listen(channel)
        #expect(try listener.waitForNotifications(timeout: .milliseconds(50)).isEmpty)
        try sender.notify(channel, payload: "任务 done")
        let received = try listener.waitForNotifications(timeout: .seconds(5))
        #expect(received == [PostgresNotification(channel: channel, payload: "任务 done", backendPID: sender.backendPID)])
        try listener.unlisten(channel)
        try sender.notify(channel, payload: "ignored")
        #expect(try listener.waitForNotifications(timeout: .milliseconds(200)).isEmpty)
    }

    @Test func waitForNotifications_TimesOutWithoutBusyWaiting() throws {
        let connection = try connect()
        try connection.listen("quiet_\(uniqueSuffix())")
        let started = ContinuousClock.now
        #expect(try connection.waitForNotifications(timeout: .milliseconds(300)).isEmpty)
        let elapsed = ContinuousClock.now - started
        #expect(elapsed >= .milliseconds(290))
        #expect(elapsed < .seconds(2))
    }
}
