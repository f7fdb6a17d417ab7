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
    ///    overwrites `Success`; receipt counters change always.
    /// 3. `events` records every job's reported state in the history, applied or not.
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

    /// Columns that follow precedence: replaced together, or not at all.
    static let precedenceColumns = [
        "state", "state_rank", "is_final", "code", "message", "tag", "sub_tag", "queue_id", "queue_type", "progress",
        "creation_time", "start_time", "end_time", "input_bucket", "input_object", "input_region", "user_data",
        "job_level", "has_watermark", "watermark_type", "watermark_version", "watermark_message", "workflow_id",
        "workflow_run_id", "detail",
    ]

    static let recordTypes = [
        "job_id text", "state text", "state_rank smallint", "is_final boolean", "code text", "message text", "tag text",
        "sub_tag text", "queue_id text", "queue_type text", "progress integer", "creation_time timestamptz",
        "start_time timestamptz", "end_time timestamptz", "input_bucket text", "input_object text", "input_region text",
        "user_data text", "job_level integer", "has_watermark boolean", "watermark_type text", "watermark_version text",
        "watermark_message text", "workflow_id text", "workflow_run_id text", "detail jsonb",
    ]

    static let sql: String = {
        let precedes = "EXCLUDED.state_rank >= j.state_rank"
        let conditional = (precedenceColumns + ["state_callback_id", "state_source", "state_changed_at"])
            .map { "\($0) = CASE WHEN \(precedes) THEN EXCLUDED.\($0) ELSE j.\($0) END" }
            .joined(separator: ",\n            ")
        // $12 is microseconds since the epoch: exact, where a float seconds value would round.
        let now = "('epoch'::timestamptz + $12::bigint * interval '1 microsecond')"
        let insertColumns = (["job_id"] + precedenceColumns).joined(separator: ", ")
        let selectColumns = (["job_id"] + precedenceColumns).map { "i.\($0)" }.joined(separator: ", ")
        return """
            WITH incoming AS (
                SELECT * FROM jsonb_to_recordset($13::jsonb) AS t(\(recordTypes.joined(separator: ", ")))
            ), cb AS (
                INSERT INTO ci_callbacks (body_sha256, body, body_size, body_truncated, format, content_type, remote_address,
                                          event_name, outcome, rejection_reason, source, job_count, received_at, last_received_at)
                VALUES (sha256($1), $1, $2::integer, $3::boolean, $4, $5, $6, $7, $8, $9, $10, $11::integer, \(now), \(now))
                ON CONFLICT (body_sha256) DO UPDATE
                    SET delivery_count = ci_callbacks.delivery_count + 1,
                        last_received_at = greatest(ci_callbacks.last_received_at, EXCLUDED.last_received_at)
                RETURNING callback_id, (xmax = 0) AS inserted
            ), upserted AS (
                INSERT INTO ci_jobs AS j (\(insertColumns), state_callback_id, state_source,
                                          first_received_at, last_received_at, state_changed_at, callback_count)
                SELECT \(selectColumns), cb.callback_id, $10, \(now), \(now), \(now), 1
                FROM incoming i CROSS JOIN cb
                WHERE cb.inserted
                ON CONFLICT (job_id) DO UPDATE SET
                    \(conditional),
                    callback_count = j.callback_count + 1,
                    last_received_at = greatest(j.last_received_at, EXCLUDED.last_received_at)
                RETURNING j.job_id, j.state, j.state_callback_id
            ), events AS (
                INSERT INTO ci_job_events (job_id, callback_id, state, applied, received_at)
                SELECT i.job_id, cb.callback_id, i.state, coalesce(u.state_callback_id = cb.callback_id, false), \(now)
                FROM incoming i CROSS JOIN cb LEFT JOIN upserted u ON u.job_id = i.job_id
                WHERE cb.inserted
            )
            SELECT cb.callback_id, cb.inserted, i.job_id, i.state AS received_state,
                   coalesce(u.state, (SELECT existing.state FROM ci_jobs existing WHERE existing.job_id = i.job_id)) AS current_state,
                   coalesce(u.state_callback_id = cb.callback_id, false) AS applied
            FROM cb
            LEFT JOIN incoming i ON true
            LEFT JOIN upserted u ON u.job_id = i.job_id
            """
    }()
}
