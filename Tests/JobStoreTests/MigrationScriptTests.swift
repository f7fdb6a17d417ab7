import Testing

@testable import JobStore

/// How a migration file's text is run: its first-line marker, its statements, the indexes it builds
/// concurrently. No database.
@Suite("Migration script")
struct MigrationScriptTests {
    @Test func marker_OnTheFirstLine_RunsOutsideATransaction() throws {
        #expect(try !MigrationScript.runsInTransaction("-- ci-callbackd: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n"))
        #expect(try !MigrationScript.runsInTransaction("-- ci-callbackd: no-transaction  \r\nSELECT 1"))
    }

    @Test func marker_AbsentOrBelowTheFirstLine_RunsInOneTransaction() throws {
        #expect(try MigrationScript.runsInTransaction("CREATE TABLE t (a int);"))
        #expect(try MigrationScript.runsInTransaction("-- a comment\n-- ci-callbackd: no-transaction\nSELECT 1"))
        #expect(try MigrationScript.runsInTransaction(""))
    }

    @Test(arguments: ["-- ci-callbackd: notransaction", "-- ci-callbackd: no-transactions", "-- ci-callbackd:"])
    func marker_UnknownDirective_IsRefused(firstLine: String) {
        #expect(throws: MigrationError.self) { try MigrationScript.runsInTransaction(firstLine + "\nSELECT 1") }
    }

    @Test func statements_SplitAtTopLevelSemicolons_Trimmed() {
        let sql = "-- ci-callbackd: no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);\n\n  DROP INDEX CONCURRENTLY IF EXISTS b ;\nSELECT 1"
        #expect(
            MigrationScript.statements(sql) == [
                "-- ci-callbackd: no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x)", "DROP INDEX CONCURRENTLY IF EXISTS b", "SELECT 1",
            ])
    }

    @Test func statements_SemicolonsInLiteralsCommentsAndBodies_DoNotSplit() {
        let sql = """
            SELECT 'a;b', E'c\\';d', "odd;name", $1;
            -- a comment; with a semicolon
            /* block; /* nested; */ still; */ SELECT 2;
            CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM 1; RETURN NULL; END
            $$;
            DO $body$ BEGIN PERFORM 'x$$y;'; END $body$;
            SELECT 'it''s; fine'
            """
        let statements = MigrationScript.statements(sql)
        #expect(statements.count == 5, "\(statements)")
        #expect(statements.first == #"SELECT 'a;b', E'c\';d', "odd;name", $1"#)
        #expect(statements[1].hasSuffix("SELECT 2"))
        #expect(statements[2].hasSuffix("RETURN NULL; END\n$$"))
        #expect(statements[3] == "DO $body$ BEGIN PERFORM 'x$$y;'; END $body$")
        #expect(statements[4] == "SELECT 'it''s; fine'")
    }

    @Test func statements_PiecesOfOnlyCommentsAndWhitespace_AreDropped() {
        #expect(MigrationScript.statements("SELECT 1;\n-- the end;\n/* really */ ;\n  ") == ["SELECT 1"])
        #expect(MigrationScript.statements("-- nothing\n").isEmpty)
    }

    @Test func concurrentIndexName_ReadsTheNameAsWritten() throws {
        #expect(try MigrationScript.concurrentIndexName("CREATE INDEX CONCURRENTLY ci_jobs_x_idx ON ci_jobs (x)") == "ci_jobs_x_idx")
        #expect(try MigrationScript.concurrentIndexName("create unique index concurrently if not exists u_idx on t (x)") == "u_idx")
        #expect(try MigrationScript.concurrentIndexName("-- why\nCREATE INDEX /* c */ CONCURRENTLY \"Odd \"\"Name\" ON t (x)") == #""Odd ""Name""#)
        #expect(try MigrationScript.concurrentIndexName("CREATE INDEX CONCURRENTLY IF NOT EXISTS s.i ON s.t (x)") == "s.i")
    }

    @Test func concurrentIndexName_OtherStatements_AreNil() throws {
        #expect(try MigrationScript.concurrentIndexName("CREATE INDEX i ON t (x)") == nil)
        #expect(try MigrationScript.concurrentIndexName("DROP INDEX CONCURRENTLY i") == nil)
        #expect(try MigrationScript.concurrentIndexName("CREATE TABLE concurrently (a int)") == nil)
        #expect(try MigrationScript.concurrentIndexName("SELECT 1") == nil)
    }

    @Test(arguments: ["CREATE INDEX CONCURRENTLY ON t (x)", "CREATE INDEX CONCURRENTLY IF NOT EXISTS ON t (x)"])
    func concurrentIndexName_Unnamed_IsRefused(statement: String) {
        #expect(throws: MigrationError.self) { try MigrationScript.concurrentIndexName(statement) }
    }

    @Test func migrationSet_NoTransactionFileWithAnUnnamedConcurrentIndex_IsRefusedAtLoad() throws {
        let migration = try Migration(fileName: "0009_index.sql", sql: "-- ci-callbackd: no-transaction\nCREATE INDEX CONCURRENTLY ON t (x);\n")
        #expect(throws: MigrationError.self) { try MigrationSet(migrations: [migration]) }
    }

    @Test func migrationSet_MisspelledMarker_IsRefusedAtLoad() throws {
        let migration = try Migration(fileName: "0009_index.sql", sql: "-- ci-callbackd: no transaction\nCREATE INDEX CONCURRENTLY i ON t (x);\n")
        #expect(throws: MigrationError.self) { try MigrationSet(migrations: [migration]) }
    }
}
