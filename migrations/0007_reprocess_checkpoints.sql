-- `ci-callbackd reprocess` (issue 11 §3) walks stored bodies in callback_id order, a page per transaction;
-- each page's transaction also records how far the run has come, so an interrupted run resumes after the
-- last page that committed. One row per set of arguments (`run_key`); a finished run deletes its row.
CREATE TABLE ci_reprocess_checkpoints (
    run_key           text        PRIMARY KEY,
    after_callback_id bigint      NOT NULL,
    updated_at        timestamptz NOT NULL
);
