import Foundation
import PostgresLibPQ

/// One callback ready to be written: the `ci_callbacks` row plus its jobs as JSON records.
struct IngestRecord: Sendable {
    var body: [UInt8]
    var bodySize: Int
    var truncated: Bool
    var format: String?
    var contentType: String?
    var remoteAddress: String?
    var eventName: String?
    var outcome: String
    var rejectionReason: String?
    var source: CallbackSource
    var jobsJSON: String
    var jobCount: Int
    var receivedAt: Date
    /// The smallest JobId among the jobs ("" without jobs): group commit orders a batch by it so that
    /// concurrent transactions lock rows in one order.
    var lockKey: String

    /// The whole write as ONE statement, so a callback costs one round trip and one commit:
    ///
    /// 1. `cb` inserts the body, or on an identical earlier body (same SHA-256, enforced by a UNIQUE
    ///    constraint) only bumps its delivery counter; `xmax = 0` tells a fresh insert from that update.
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
                format.map(PostgresValue.text) ?? .null,
                contentType.map(PostgresValue.text) ?? .null,
                remoteAddress.map(PostgresValue.text) ?? .null,
                eventName.map(PostgresValue.text) ?? .null,
                .text(outcome),
                rejectionReason.map(PostgresValue.text) ?? .null,
                .text(source.rawValue),
                .text(String(jobCount)),
                .text(String(Int64((receivedAt.timeIntervalSince1970 * 1_000_000).rounded()))),
                .text(jobsJSON),
            ]
        )
    }

    static let sql: String = {
        // $12 is microseconds since the epoch: exact, where a float seconds value would round.
        let now = JobUpsertSQL.instant("$12")
        let upsert = JobUpsertSQL.upsert(
            from: "FROM incoming i CROSS JOIN cb WHERE cb.inserted AND NOT coalesce(i.held, false)",
            callbackID: "cb.callback_id", source: "$10", receivedAt: now, changedAt: now)
        return """
            WITH incoming AS (
                SELECT * FROM \(JobUpsertSQL.recordset("$13"))
            ), cb AS (
                INSERT INTO ci_callbacks (body_sha256, body, body_size, body_truncated, format, content_type, remote_address,
                                          event_name, outcome, rejection_reason, source, job_count, received_at, last_received_at)
                VALUES (sha256($1), $1, $2::integer, $3::boolean, $4, $5, $6, $7, $8, $9, $10, $11::integer, \(now), \(now))
                ON CONFLICT (body_sha256) DO UPDATE
                    SET delivery_count = ci_callbacks.delivery_count + 1,
                        last_received_at = greatest(ci_callbacks.last_received_at, EXCLUDED.last_received_at)
                RETURNING callback_id, (xmax = 0) AS inserted
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
    /// origin change only when the incoming state's precedence is at least the stored one's.
    static func upsert(from: String, callbackID: String, source: String, receivedAt: String, changedAt: String) -> String {
        let precedes = "EXCLUDED.state_rank >= j.state_rank"
        let conditional = (precedenceColumns + ["state_callback_id", "state_source", "state_changed_at"])
            .map { "\($0) = CASE WHEN \(precedes) THEN EXCLUDED.\($0) ELSE j.\($0) END" }
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
