import CIModel
import Foundation
import PostgresLibPQ
import TimeUnits

/// One callback ready to be written: the `ci_callbacks` row plus its jobs as JSON records.
struct IngestRecord: Sendable {
    var body: [UInt8]
    var bodySize: Int
    var truncated: Bool
    var format: CallbackFormat?
    var contentType: String?
    var remoteAddress: String?
    var eventName: String?
    var outcome: StoredOutcome
    var rejectionReason: String?
    var source: CallbackSource
    var jobsJSON: String
    var jobCount: Int
    var receivedAt: Date
    /// The smallest JobId among the jobs ("" without jobs): group commit orders a batch by it so that
    /// concurrent transactions lock rows in one order.
    var lockKey: String
    /// The JobIds of the jobs, each once: one batch statement may not carry two records with a JobId in common.
    var jobIDs: [String]

    /// The whole write as ONE statement, so a callback costs one round trip and one commit:
    ///
    /// 1. `cb` inserts the body's digest, or on an identical earlier body (same SHA-256, the primary key
    ///    of `ci_callback_digests`) only bumps its delivery counter; `xmax = 0` tells a fresh insert from
    ///    that update. `body` writes the body into its partition of `ci_callbacks`, only for a fresh digest.
    /// 2. `upserted` applies each job, only for a fresh body. A job's descriptive columns change only when
    ///    the incoming state's precedence is at least the stored one's, so a late `Running` never
    ///    overwrites `Success`; receipt counters change always. A job held for verification (its record's
    ///    `held`, see ``JobStore/jobsJSON(_:holdingFinalStates:)``) is left out: it does not touch `ci_jobs`.
    /// 3. `events` records every job's reported state in the history, applied or not; a held job's event
    ///    is `verification = 'pending'`, for ``JobStore/pendingVerifications(maxJobs:excluding:)``.
    ///
    /// The statement text is a constant built from the column list below; every value is a bind.
    var query: SQLQuery {
        SQLQuery(
            unsafeSQL: Self.sql,
            binds: [
                .bytea(body),
                .text(String(bodySize)),
                .text(truncated ? "true" : "false"),
                format.map { .text($0.rawValue) } ?? .null,
                contentType.map(PostgresValue.text) ?? .null,
                remoteAddress.map(PostgresValue.text) ?? .null,
                eventName.map(PostgresValue.text) ?? .null,
                .text(outcome.rawValue),
                rejectionReason.map(PostgresValue.text) ?? .null,
                .text(source.rawValue),
                .text(String(jobCount)),
                .text(String(receivedAt.microsecondsSince1970)),
                .text(jobsJSON),
            ]
        )
    }

    /// Reads back what ``query`` wrote for this very record, in the rows ``query`` returns: for a retry
    /// after the connection broke with the commit's outcome unknown. The callback row counts as this
    /// record's only when its first receipt is this record's receive instant (taken when the request
    /// arrived, to the microsecond); an earlier delivery of the same body returns no rows.
    var earlierWriteQuery: SQLQuery {
        SQLQuery(
            unsafeSQL: Self.earlierWriteSQL,
            binds: [.bytea(body), .text(String(receivedAt.microsecondsSince1970))]
        )
    }

    static let earlierWriteSQL = """
        SELECT d.callback_id, true AS inserted, e.job_id, e.state AS received_state, j.state AS current_state,
               coalesce(e.applied, false) AS applied, coalesce(e.verification = 'pending', false) AS held
        FROM ci_callback_digests d
        LEFT JOIN ci_job_events e ON e.callback_id = d.callback_id AND e.received_at = d.received_at
        LEFT JOIN ci_jobs j ON j.job_id = e.job_id
        WHERE d.body_sha256 = sha256($1) AND d.received_at = \(JobUpsertSQL.instant("$2"))
        ORDER BY e.job_id
        """

    static let sql: String = {
        // $12 is microseconds since the epoch: exact, where a float seconds value would round.
        let now = JobUpsertSQL.instant("$12")
        let upsert = JobUpsertSQL.upsert(
            from: "FROM incoming i CROSS JOIN cb WHERE cb.inserted AND NOT coalesce(i.held, false)",
            callbackID: "cb.callback_id", source: "$10", receivedAt: now, changedAt: now)
        return """
            WITH incoming AS (
                SELECT * FROM \(JobUpsertSQL.recordset("$13"))
            ), \(CallbackInsertSQL.insert(
                    digests: "VALUES (sha256($1), \(now))",
                    bodies: """
                        SELECT cb.callback_id, cb.body_sha256, $1, $2::integer, $3::boolean, $4, $5, $6, $7, $8, $9, $10, $11::integer, cb.received_at
                        FROM cb WHERE cb.inserted
                        """))
            ), upserted AS (
                \(upsert)
            ), events AS (
                INSERT INTO ci_job_events (job_id, callback_id, state, applied, received_at, verification)
                SELECT i.job_id, cb.callback_id, i.state, coalesce(u.state_callback_id = cb.callback_id, false), \(now),
                       CASE WHEN i.held THEN 'pending' END
                FROM incoming i CROSS JOIN cb LEFT JOIN upserted u ON u.job_id = i.job_id
                WHERE cb.inserted
            )
            SELECT cb.callback_id, cb.inserted, i.job_id, i.state AS received_state,
                   coalesce(u.state, (SELECT existing.state FROM ci_jobs existing WHERE existing.job_id = i.job_id)) AS current_state,
                   coalesce(u.state_callback_id = cb.callback_id, false) AS applied,
                   coalesce(i.held, false) AND cb.inserted AS held
            FROM cb
            LEFT JOIN incoming i ON true
            LEFT JOIN upserted u ON u.job_id = i.job_id
            """
    }()
}

/// Several callbacks written by ONE statement: what group commit sends for a batch, so the per-statement
/// costs (executor start-up, the plan's joins and hash tables, trigger queues) are paid once per batch
/// instead of once per callback. Same rules as ``IngestRecord/query``, row for row, including jobs held
/// for verification.
///
/// One statement cannot insert-or-update the same row twice, so the records of one statement must have
/// distinct bodies and distinct JobIds; ``waves(of:record:)`` splits a batch accordingly (order kept per key).
struct IngestBatchStatement {
    /// The records, in statement order; a result row's `ord` is the 1-based position here.
    var records: [IngestRecord]

    /// `$1` the bodies (`bytea[]`, binary), `$2` each callback's other columns as a JSON array, `$3` a JSON
    /// array whose element k is the jobs array of callback k.
    var query: SQLQuery {
        var callbacks = JSONWriter(reservingCapacity: 256 * records.count)
        callbacks.beginArray()
        for (index, record) in records.enumerated() {
            callbacks.beginObject()
            callbacks.member("ord", index + 1)
            callbacks.member("body_size", record.bodySize)
            callbacks.member("body_truncated", record.truncated)
            callbacks.optionalMember("format", record.format?.rawValue)
            callbacks.optionalMember("content_type", record.contentType)
            callbacks.optionalMember("remote_address", record.remoteAddress)
            callbacks.optionalMember("event_name", record.eventName)
            callbacks.member("outcome", record.outcome.rawValue)
            callbacks.optionalMember("rejection_reason", record.rejectionReason)
            callbacks.member("source", record.source.rawValue)
            callbacks.member("job_count", record.jobCount)
            callbacks.member("received_us", Int(record.receivedAt.microsecondsSince1970))
            callbacks.endObject()
        }
        callbacks.endArray()
        var jobs = "["
        jobs.reserveCapacity(records.reduce(2) { $0 + $1.jobsJSON.utf8.count + 1 })
        for (index, record) in records.enumerated() {
            if index > 0 { jobs += "," }
            jobs += record.jobsJSON
        }
        jobs += "]"
        return SQLQuery(unsafeSQL: Self.sql, binds: [.byteaArray(records.map(\.body)), .text(callbacks.string), .text(jobs)])
    }

    /// Splits `elements` into consecutive statements whose records share no body and no JobId. A record
    /// goes into the statement after the last one holding any of its keys, so records with a key in common
    /// keep their order; a batch without such repeats (the usual case) is one statement.
    static func waves<Element>(of elements: [Element], record: (Element) -> IngestRecord) -> [[Element]] {
        var waves: [[Element]] = []
        var lastWaveOfBody: [BodyKey: Int] = [:]
        var lastWaveOfJob: [String: Int] = [:]
        for element in elements {
            let record = record(element)
            var wave = lastWaveOfBody[BodyKey(record.body)].map { $0 + 1 } ?? 0
            for jobID in record.jobIDs {
                if let last = lastWaveOfJob[jobID] { wave = max(wave, last + 1) }
            }
            if wave == waves.count { waves.append([]) }
            waves[wave].append(element)
            lastWaveOfBody[BodyKey(record.body)] = wave
            for jobID in record.jobIDs { lastWaveOfJob[jobID] = wave }
        }
        return waves
    }

    /// A body as a dictionary key, hashed as one run of bytes: `[UInt8]`'s own hashing feeds the hasher a
    /// byte at a time, which took 4 % of the service's CPU at peak ingest (perf).
    struct BodyKey: Hashable {
        let bytes: [UInt8]

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        func hash(into hasher: inout Hasher) {
            bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }

    static let sql: String = {
        let receivedAt = JobUpsertSQL.instant("o.received_us")
        let digestRows = "SELECT body_sha256, \(JobUpsertSQL.instant("received_us")) FROM input ORDER BY ord"
        let bodyRows = """
            SELECT cb.callback_id, cb.body_sha256, input.body, input.body_size, input.body_truncated, input.format, input.content_type,
                   input.remote_address, input.event_name, input.outcome, input.rejection_reason, input.source, input.job_count, cb.received_at
            FROM input JOIN cb USING (body_sha256) WHERE cb.inserted
            """
        let upsert = JobUpsertSQL.upsert(
            from: "FROM incoming i JOIN o USING (ord) WHERE o.inserted AND NOT coalesce(i.held, false) ORDER BY i.job_id",
            callbackID: "o.callback_id", source: "o.source", receivedAt: receivedAt, changedAt: receivedAt)
        return """
            WITH input AS (
                SELECT ord, b.body, sha256(b.body) AS body_sha256, c.body_size, c.body_truncated, c.format, c.content_type,
                       c.remote_address, c.event_name, c.outcome, c.rejection_reason, c.source, c.job_count, c.received_us
                FROM unnest($1::bytea[]) WITH ORDINALITY AS b(body, ord)
                JOIN jsonb_to_recordset($2::jsonb) AS c(ord bigint, body_size integer, body_truncated boolean, format text,
                     content_type text, remote_address text, event_name text, outcome text, rejection_reason text, source text,
                     job_count integer, received_us bigint) USING (ord)
            ), \(CallbackInsertSQL.insert(digests: digestRows, bodies: bodyRows))
            ), o AS (
                SELECT input.ord, input.source, input.received_us, cb.callback_id, cb.inserted
                FROM input JOIN cb USING (body_sha256)
            ), incoming AS (
                SELECT e.ord, t.*
                FROM jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(jobs, ord)
                CROSS JOIN LATERAL \(JobUpsertSQL.recordset("e.jobs"))
            ), upserted AS (
                \(upsert)
            ), events AS (
                INSERT INTO ci_job_events (job_id, callback_id, state, applied, received_at, verification)
                SELECT i.job_id, o.callback_id, i.state, coalesce(u.state_callback_id = o.callback_id, false), \(receivedAt),
                       CASE WHEN i.held THEN 'pending' END
                FROM incoming i JOIN o USING (ord) LEFT JOIN upserted u ON u.job_id = i.job_id
                WHERE o.inserted
            )
            SELECT o.ord, o.callback_id, o.inserted, i.job_id, i.state AS received_state,
                   coalesce(u.state, (SELECT existing.state FROM ci_jobs existing WHERE existing.job_id = i.job_id)) AS current_state,
                   coalesce(u.state_callback_id = o.callback_id, false) AS applied,
                   coalesce(i.held, false) AND o.inserted AS held
            FROM o
            LEFT JOIN incoming i ON i.ord = o.ord
            LEFT JOIN upserted u ON u.job_id = i.job_id
            ORDER BY o.ord
            """
    }()
}

/// The callback insert, shared by the single-callback and the batch statement, so both follow one
/// deduplication rule: a body whose digest is already stored (same SHA-256, the primary key of
/// `ci_callback_digests`) only counts one more delivery, and `xmax = 0` tells a fresh digest from that update.
///
/// The digest table, not `ci_callbacks`, holds the rule because `ci_callbacks` is partitioned by receive
/// time and a unique constraint there would have to include it (the same body on two days would be two
/// rows). The body is written only with a fresh digest, with the digest's callback id and receive time.
enum CallbackInsertSQL {
    /// Two CTEs, `cb AS (…), body AS (…` without the closing parenthesis. `cb` returns `callback_id`,
    /// `body_sha256`, `received_at` (the stored body's, earlier for a duplicate) and `inserted`.
    /// - Parameters:
    ///   - digests: A `VALUES` list or `SELECT` giving body_sha256 and received_at.
    ///   - bodies: A `SELECT` over `cb` giving the `ci_callbacks` columns in this order: callback_id,
    ///     body_sha256, body, body_size, body_truncated, format, content_type, remote_address, event_name,
    ///     outcome, rejection_reason, source, job_count, received_at.
    static func insert(digests: String, bodies: String) -> String {
        """
        cb AS (
            INSERT INTO ci_callback_digests AS d (body_sha256, received_at, last_received_at)
            SELECT v.sha, v.at, v.at FROM (\(digests)) AS v(sha, at)
            ON CONFLICT (body_sha256) DO UPDATE
                SET delivery_count = d.delivery_count + 1,
                    last_received_at = greatest(d.last_received_at, EXCLUDED.last_received_at)
            RETURNING d.callback_id, d.body_sha256, d.received_at, (xmax = 0) AS inserted
        ), body AS (
            INSERT INTO ci_callbacks (callback_id, body_sha256, body, body_size, body_truncated, format, content_type, remote_address,
                                      event_name, outcome, rejection_reason, source, job_count, received_at)
            \(bodies)
        """
    }
}

/// The `ci_jobs` upsert, shared by the ingest statement and the statement that applies a confirmed
/// callback (``JobStore/confirmVerification(_:verifiedAt:)``), so both follow exactly one precedence rule.
enum JobUpsertSQL {
    /// Columns that follow precedence: replaced together, or not at all.
    static let precedenceColumns = [
        "state", "state_rank", "is_final", "code", "message", "tag", "sub_tag", "queue_id", "queue_type", "progress",
        "creation_time", "start_time", "end_time", "input_bucket", "input_object", "input_region", "user_data",
        "job_level", "has_watermark", "watermark_type", "watermark_version", "watermark_message", "workflow_id",
        "workflow_run_id", "detail",
    ]

    /// The job records' columns as ``JobStore/jobsJSON(_:holdingFinalStates:)`` writes them; `held` is no
    /// `ci_jobs` column but tells the ingest statement to leave the job for the verifier.
    static let recordTypes = [
        "job_id text", "state text", "state_rank smallint", "is_final boolean", "code text", "message text", "tag text",
        "sub_tag text", "queue_id text", "queue_type text", "progress integer", "creation_time timestamptz",
        "start_time timestamptz", "end_time timestamptz", "input_bucket text", "input_object text", "input_region text",
        "user_data text", "job_level integer", "has_watermark boolean", "watermark_type text", "watermark_version text",
        "watermark_message text", "workflow_id text", "workflow_run_id text", "detail jsonb", "held boolean",
    ]

    /// The job records of a jobs parameter as a relation `t` with ``recordTypes``' columns.
    static func recordset(_ parameter: String) -> String {
        "jsonb_to_recordset(\(parameter)::jsonb) AS t(\(recordTypes.joined(separator: ", ")))"
    }

    /// A `timestamptz` from a bind holding microseconds since the epoch.
    static func instant(_ parameter: String) -> String {
        "('epoch'::timestamptz + \(parameter)::bigint * interval '1 microsecond')"
    }

    /// `INSERT INTO ci_jobs … ON CONFLICT DO UPDATE`, returning `job_id, state, state_callback_id` of every
    /// job it wrote. `from` supplies the rows as `i` (``recordTypes``' columns); the other arguments are
    /// SQL expressions for the columns the records do not carry. The descriptive columns and the state's
    /// origin change only when the incoming state's precedence is at least the stored one's;
    /// `state_changed_at` only when, in addition, the state differs from the stored one.
    static func upsert(from: String, callbackID: String, source: String, receivedAt: String, changedAt: String) -> String {
        let precedes = "EXCLUDED.state_rank >= j.state_rank"
        // The change time moves only when the state itself changes: a re-reported state (a new body with
        // more progress, a repeated Success) updates the detail but is no change of state.
        let changes = "\(precedes) AND EXCLUDED.state IS DISTINCT FROM j.state"
        let conditional =
            ((precedenceColumns + ["state_callback_id", "state_source"])
            .map { "\($0) = CASE WHEN \(precedes) THEN EXCLUDED.\($0) ELSE j.\($0) END" }
            + ["state_changed_at = CASE WHEN \(changes) THEN EXCLUDED.state_changed_at ELSE j.state_changed_at END"])
            .joined(separator: ",\n            ")
        let insertColumns = (["job_id"] + precedenceColumns).joined(separator: ", ")
        let selectColumns = (["job_id"] + precedenceColumns).map { "i.\($0)" }.joined(separator: ", ")
        return """
            INSERT INTO ci_jobs AS j (\(insertColumns), state_callback_id, state_source,
                                      first_received_at, last_received_at, state_changed_at, callback_count)
            SELECT \(selectColumns), \(callbackID), \(source), \(receivedAt), \(receivedAt), \(changedAt), 1
            \(from)
            ON CONFLICT (job_id) DO UPDATE SET
                \(conditional),
                callback_count = j.callback_count + 1,
                last_received_at = greatest(j.last_received_at, EXCLUDED.last_received_at)
            RETURNING j.job_id, j.state, j.state_callback_id
            """
    }
}
