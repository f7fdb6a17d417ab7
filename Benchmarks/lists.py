#!/usr/bin/env python3
"""ci-callbackd large-table benchmark: job lists and job history at millions of jobs, and what listing
does to ingest.

    Benchmarks/lists.py --jobs 5000000                 # load 5 M jobs (once), then measure
    Benchmarks/lists.py --jobs 5000000 --reuse         # measure again on the database already loaded
    Benchmarks/lists.py --binary .build/debug/ci-callbackd --jobs 1000000

The data lives in a scratch database (`ci_lists_bench`, schema `lists_bench`) of the repository's own
cluster (scripts/pg-cluster, port PGCLUSTER_PORT), never in the test database. Loading is one
INSERT … SELECT generate_series into ci_jobs with its secondary indexes dropped and rebuilt afterwards;
the load time and the table's size are reported. The rows are shaped like production: 60 days of first
receipts, states 85 % Success, 8 % Failed, 3 % Running, 2 % Submitted, 1 % Cancel, 1 % Pause; tags 90 %
ExtractDigitalWatermark, 6 % Transcode, 3 % Snapshot, 1 % Animation; 16 queues p00…p15; tag and queue are
hashed from the row number, so they are independent of state and of each other. One job, `jhistory`, has --history-callbacks callbacks.

It then measures, through the service's HTTP API on one keep-alive connection:
  lists    every filter combination (state, tag, queueId, since, until), first page and a page at a
           cursor half-way down the table, --samples requests each: p50 and p99
  history  GET /v1/jobs/jhistory/callbacks: first page, a page at a cursor half-way, and limit=1000
  ingest   wrk posting callbacks (Benchmarks/ingest.lua, -c16) alone and with 8 clients listing in a loop
           (Benchmarks/list.lua, -c8), interleaved --rounds times: requests/s and the ratio with/without

Each run appends one JSON line to Benchmarks/results/lists.jsonl.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BENCH, REPO, log, run, wrk  # noqa: E402
from largetable import MIDDLE_CURSOR_SQL, latencies, prepare, serving, token  # noqa: E402

DATABASE = "ci_lists_bench"
SCHEMA = "lists_bench"

JOBS_SQL = """
WITH digest AS (
    INSERT INTO ci_callback_digests (body_sha256, received_at, last_received_at)
    VALUES (sha256('lists-bench-seed'), now(), now()) ON CONFLICT DO NOTHING
    RETURNING callback_id, body_sha256, received_at
)
INSERT INTO ci_callbacks (callback_id, body_sha256, body, body_size, format, content_type, outcome, source, job_count, received_at)
SELECT callback_id, body_sha256, 'seed', 4, 'JSON', 'application/json', 'accepted', 'callback', 1, received_at FROM digest;
INSERT INTO ci_jobs (job_id, state, state_rank, is_final, code, message, tag, queue_id, queue_type, progress,
    creation_time, start_time, end_time, has_watermark, watermark_type, watermark_version, watermark_message,
    detail, state_callback_id, state_source, first_received_at, last_received_at, state_changed_at, callback_count)
SELECT 'j' || lpad(to_hex(i), 10, '0') || substr(md5(i::text), 1, 22),
       s.state, s.rank, s.final, 'Success', 'Success', t.tag, q.queue, 'Common', 100,
       ts - interval '3 s', ts - interval '2 s', ts, t.tag = 'ExtractDigitalWatermark', 'Text', 'V1', 'wm-' || i,
       jsonb_build_object('JobId', 'j' || i, 'State', s.state, 'Tag', t.tag, 'Code', 'Success', 'Message', 'Success',
           'QueueId', q.queue, 'CreationTime', ts,
           'Input', jsonb_build_object('Bucket', 'examplebucket-1250000000', 'Object', 'videos/' || md5(i::text) || '.mp4',
                                       'Region', 'ap-chongqing'),
           'Operation', jsonb_build_object('ExtractDigitalWatermark',
                                           jsonb_build_object('Type', 'Text', 'Version', 'V1', 'Message', 'wm-' || i))),
       (SELECT callback_id FROM ci_callback_digests WHERE body_sha256 = sha256('lists-bench-seed')), 'callback',
       ts, ts + interval '5 s', ts + interval '5 s', 3
FROM generate_series(1::bigint, :n) AS i
CROSS JOIN LATERAL (SELECT now() - interval '60 days' * (1 - i::float8 / :n) AS ts) AS tt
CROSS JOIN LATERAL (SELECT CASE WHEN i % 100 < 85 THEN 'Success' WHEN i % 100 < 93 THEN 'Failed' WHEN i % 100 < 96 THEN 'Running'
                                WHEN i % 100 < 98 THEN 'Submitted' WHEN i % 100 < 99 THEN 'Cancel' ELSE 'Pause' END AS state) AS s0
CROSS JOIN LATERAL (SELECT s0.state, (CASE WHEN s0.state IN ('Success', 'Failed', 'Cancel') THEN 3 ELSE 1 END)::smallint AS rank,
                           s0.state IN ('Success', 'Failed', 'Cancel') AS final) AS s
CROSS JOIN LATERAL (SELECT abs(hashint8(i)) % 100 AS h) AS th
CROSS JOIN LATERAL (SELECT CASE WHEN th.h < 90 THEN 'ExtractDigitalWatermark' WHEN th.h < 96 THEN 'Transcode'
                                WHEN th.h < 99 THEN 'Snapshot' ELSE 'Animation' END AS tag) AS t
CROSS JOIN LATERAL (SELECT 'p' || lpad((abs(hashint8(i + 1000000007)) % 16)::text, 2, '0') AS queue) AS q;
"""

HISTORY_SQL = """
WITH digest AS (
    INSERT INTO ci_callback_digests (body_sha256, received_at, last_received_at)
    SELECT sha256(convert_to('jhistory-' || i, 'UTF8')), now() - interval '1 day' + i * interval '1 ms',
           now() - interval '1 day' + i * interval '1 ms'
    FROM generate_series(1, :h) AS i
    RETURNING callback_id, body_sha256, received_at
), cb AS (
    INSERT INTO ci_callbacks (callback_id, body_sha256, body, body_size, format, content_type, outcome, source, job_count, received_at)
    SELECT callback_id, body_sha256, convert_to(repeat('x', 900) || callback_id, 'UTF8'), 901, 'JSON', 'application/json',
           'accepted', 'callback', 1, received_at
    FROM digest
    RETURNING callback_id, received_at
)
INSERT INTO ci_job_events (job_id, callback_id, state, applied, received_at)
SELECT 'jhistory', callback_id, 'Running', false, received_at FROM cb;
INSERT INTO ci_jobs (job_id, state, state_rank, is_final, has_watermark, detail, state_callback_id, state_source,
                     first_received_at, last_received_at, state_changed_at, callback_count)
SELECT 'jhistory', 'Running', 1, false, false, '{"JobId":"jhistory","State":"Running"}', max(callback_id), 'callback',
       now() - interval '1 day', now(), now(), count(*)
FROM ci_job_events WHERE job_id = 'jhistory';
"""


def cluster_url():
    env = {**os.environ, "PGCLUSTER_DB": DATABASE}
    return run([str(REPO / "scripts/pg-cluster"), "start"], capture_output=True, env=env).stdout.strip()


def schema_url(url):
    return url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{SCHEMA}"


def psql(url, sql, variables=None):
    command = ["psql", url, "-v", "ON_ERROR_STOP=1", "-Atq"]
    for name, value in (variables or {}).items():
        command += ["-v", f"{name}={value}"]
    return run(command, input=sql, capture_output=True).stdout.strip()


def load(binary, url, jobs, history):
    """A fresh schema with `jobs` jobs and one job of `history` callbacks; returns the load figures."""
    psql(url, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};")
    surl = schema_url(url)
    run([str(binary), "migrate", "--migrations-dir", str(REPO / "migrations")], env={**os.environ, "DATABASE_URL": surl},
        capture_output=True)
    indexes = psql(surl, f"SELECT indexname || '|' || indexdef FROM pg_indexes WHERE schemaname = '{SCHEMA}' "
                         "AND tablename = 'ci_jobs' AND indexname <> 'ci_jobs_pkey'").splitlines()
    names = [line.split("|", 1)[0] for line in indexes]
    log(f"loading {jobs} jobs (secondary indexes dropped: {', '.join(names)})")
    started = time.monotonic()
    psql(surl, "".join(f"DROP INDEX {name};\n" for name in names))
    psql(surl, JOBS_SQL, {"n": jobs})
    inserted = time.monotonic()
    for line in indexes:
        psql(surl, "SET maintenance_work_mem = '256MB';\n" + line.split("|", 1)[1] + ";")
    indexed = time.monotonic()
    psql(surl, HISTORY_SQL, {"h": history})
    psql(surl, "VACUUM ANALYZE ci_jobs; VACUUM ANALYZE ci_callbacks; VACUUM ANALYZE ci_job_events;")
    done = time.monotonic()
    figures = {"insert_s": inserted - started, "index_s": indexed - inserted, "history_and_analyze_s": done - indexed,
               "total_s": done - started}
    log(f"loaded: insert {figures['insert_s']:.0f} s, indexes {figures['index_s']:.0f} s, "
        f"history + analyze {figures['history_and_analyze_s']:.0f} s")
    return figures


def sizes(url):
    surl = schema_url(url)
    row = psql(surl, "SELECT (SELECT count(*) FROM ci_jobs), pg_total_relation_size('ci_jobs'), pg_relation_size('ci_jobs'), "
                     "(SELECT count(*) FROM ci_job_events WHERE job_id = 'jhistory')")
    jobs, total, heap, history = (int(v) for v in row.split("|"))
    return {"jobs": jobs, "ci_jobs_total_bytes": total, "ci_jobs_heap_bytes": heap, "history_callbacks": history}


def list_paths(url):
    """Every filter combination measured, each as (label, path of the first page, path of a deep page)."""
    surl = schema_url(url)
    now = time.time()

    def iso(seconds_ago):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - seconds_ago))

    day = 86400
    filters = [
        ("none", ""),
        ("state=Success", "state=Success"),
        ("state=Failed", "state=Failed"),
        ("state=Pause", "state=Pause"),
        ("tag=ExtractDigitalWatermark", "tag=ExtractDigitalWatermark"),
        ("tag=Animation", "tag=Animation"),
        ("tag=NoSuchTag", "tag=NoSuchTag"),
        ("queueId=p03", "queueId=p03"),
        ("queueId=NoSuchQueue", "queueId=NoSuchQueue"),
        ("state+tag", "state=Failed&tag=Transcode"),
        ("state+tag rare", "state=Pause&tag=Animation"),
        ("state+queueId", "state=Success&queueId=p05"),
        ("tag+queueId", "tag=Snapshot&queueId=p07"),
        ("state+tag+queueId", "state=Pause&tag=Animation&queueId=p11"),
        ("since 1d", f"since={iso(day)}"),
        ("until 30d ago", f"until={iso(30 * day)}"),
        ("since+until 1d window", f"since={iso(21 * day)}&until={iso(20 * day)}"),
        ("state+since", f"state=Failed&since={iso(7 * day)}"),
        ("tag+until", f"tag=Animation&until={iso(30 * day)}"),
        ("queueId+since+until", f"queueId=p03&since={iso(40 * day)}&until={iso(39 * day)}"),
        ("state+tag+queueId+since+until", f"state=Failed&tag=ExtractDigitalWatermark&queueId=p09&since={iso(50 * day)}&until={iso(10 * day)}"),
        ("since+until empty", f"since={iso(-day)}&until={iso(-2 * day)}"),
    ]
    cursor = token(psql(surl, MIDDLE_CURSOR_SQL))
    paths = []
    for label, query in filters:
        base = "/v1/jobs?" + (query + "&" if query else "") + "limit=20"
        paths.append((label, base, base + "&cursor=" + cursor))
    paths.append(("none limit=500", "/v1/jobs?limit=500", "/v1/jobs?limit=500&cursor=" + cursor))
    mid_callback = psql(surl, "SELECT callback_id FROM ci_job_events WHERE job_id = 'jhistory' ORDER BY callback_id "
                              "OFFSET (SELECT count(*) / 2 FROM ci_job_events WHERE job_id = 'jhistory') LIMIT 1")
    history = [
        ("history default limit", "/v1/jobs/jhistory/callbacks", "/v1/jobs/jhistory/callbacks?cursor=" + token(f"c:{mid_callback}")),
        ("history limit=20", "/v1/jobs/jhistory/callbacks?limit=20",
         "/v1/jobs/jhistory/callbacks?limit=20&cursor=" + token(f"c:{mid_callback}")),
        ("history limit=1000", "/v1/jobs/jhistory/callbacks?limit=1000",
         "/v1/jobs/jhistory/callbacks?limit=1000&cursor=" + token(f"c:{mid_callback}")),
    ]
    return paths, history


def measure_lists(port, entries, samples):
    results = {}
    for label, first, deep in entries:
        for page, path in (("first", first), ("deep", deep)):
            figures = latencies(port, path, samples, "lists")
            results[f"{label} [{page}]"] = {**figures, "path": path}
            log(f"{label:32s} {page:5s} p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms  max {figures['max_ms']:7.2f} ms")
    return results


def interference(port, entries, rounds, seconds, run_id):
    """Ingest alone and with 8 list clients, interleaved; requests/s of ingest in each."""
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as paths:
        for _, first, deep in entries:
            paths.write(first + "\n" + deep + "\n")
    alone, together, listed = [], [], []
    try:
        for index in range(rounds):
            for with_lists in ((False, True) if index % 2 == 0 else (True, False)):
                lister = None
                list_result = {}
                if with_lists:
                    def list_loop():
                        list_result.update(wrk(BENCH / "list.lua", port, seconds + 2, 8, {"BENCH_PATHS": paths.name}))
                    lister = threading.Thread(target=list_loop)
                    lister.start()
                    time.sleep(1)
                ingest = wrk(BENCH / "ingest.lua", port, seconds, 16, {"BENCH_RUN_ID": f"{run_id}{index}{int(with_lists)}"})
                rps = ingest["requests"] / (ingest["duration_us"] / 1e6)
                if lister:
                    lister.join()
                    list_rps = list_result["requests"] / (list_result["duration_us"] / 1e6)
                    listed.append(list_rps)
                    together.append(rps)
                    log(f"round {index + 1}: ingest with 8 listing clients {rps:.0f} req/s (non-2xx {ingest['non2xx']}); "
                        f"lists {list_rps:.0f} req/s, p99 {list_result['p99_us'] / 1000:.1f} ms, non-2xx {list_result['non2xx']}")
                else:
                    alone.append(rps)
                    log(f"round {index + 1}: ingest alone {rps:.0f} req/s (non-2xx {ingest['non2xx']})")
    finally:
        os.unlink(paths.name)
    ratios = [t / a for a, t in zip(alone, together)]
    summary = {"ingest_alone_rps": alone, "ingest_with_lists_rps": together, "lists_rps": listed, "ratios": ratios,
               "median_ratio": statistics.median(ratios)}
    log(f"ingest with lists / alone, per round: {', '.join(f'{r:.3f}' for r in ratios)}; median {summary['median_ratio']:.3f}")
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5_000_000, help="jobs to load (default 5000000)")
    parser.add_argument("--history-callbacks", type=int, default=10_000, help="callbacks of the job jhistory (default 10000)")
    parser.add_argument("--reuse", action="store_true", help="measure the data already loaded instead of loading afresh")
    parser.add_argument("--samples", type=int, default=200, help="requests per list combination and page (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved ingest rounds with and without lists (default 3)")
    parser.add_argument("--ingest-seconds", type=int, default=15)
    parser.add_argument("--skip-ingest", action="store_true", help="measure lists and history only")
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--binary", help="this ci-callbackd instead of the checkout's release build")
    args = parser.parse_args()

    binary = prepare(args.binary)
    url = cluster_url()
    loaded = None
    if not args.reuse:
        loaded = load(binary, url, args.jobs, args.history_callbacks)
    size = sizes(url)
    log(f"ci_jobs: {size['jobs']} rows, {size['ci_jobs_total_bytes'] / 2**30:.2f} GiB with indexes "
        f"({size['ci_jobs_heap_bytes'] / 2**30:.2f} GiB heap); jhistory: {size['history_callbacks']} callbacks")
    with serving(binary, schema_url(url), args.port, args.pool_size, "lists-service.log"):
        paths, history = list_paths(url)
        lists = measure_lists(args.port, paths, args.samples)
        histories = measure_lists(args.port, history, args.samples)
        ingest = None if args.skip_ingest else interference(args.port, paths, args.rounds, args.ingest_seconds, str(int(time.time())))
    worst = max(lists.values(), key=lambda figures: figures["p99_ms"])
    log(f"worst list p99: {worst['p99_ms']:.2f} ms ({worst['path']})")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": commit, "binary": str(binary),
              "load": loaded, "size": size, "lists": lists, "history": histories, "ingest": ingest}
    with open(BENCH / "results" / "lists.jsonl", "a") as results:
        results.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
