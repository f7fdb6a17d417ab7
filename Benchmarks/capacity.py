#!/usr/bin/env python3
"""ci-callbackd at size (issue 11 §5): preload N jobs and their callbacks with COPY, then measure lookups,
lists, histories and ingest through the service, and what each stored callback costs in bytes and WAL.

    Benchmarks/capacity.py --jobs 1000000              # load (once), then measure
    Benchmarks/capacity.py --jobs 1000000 --reuse      # measure again the database already loaded
    Benchmarks/capacity.py --jobs 0                    # the same measurements on an empty database

The data lives in a cluster of its own, `.pgdata-capacity/` (port --pg-port, default CAPACITY_PG_PORT or
25369; fsync and synchronous_commit on), kept on disk between runs and stopped at the end of each. Loading: a fresh `public` schema, `ci-callbackd migrate`, then one `COPY … FROM STDIN`
per table (ci_jobs, ci_callback_digests, ci_callbacks, ci_job_events), generated here and streamed to
psql, with `SET session_replication_role = replica` so that no trigger fires: the ci_jobs triggers that
write the state-event outbox (webhooks, event feed) and NOTIFY final states would otherwise add a row per
job that live ingest adds only as jobs change. Indexes stay in place (every row pays its index entries,
as in production). Each job gets --callbacks-per-job callbacks (default 2: Running, then Success), each
body the ~1 KiB JSON callback of Benchmarks/ingest.lua with its own JobId and state, receive times spread
evenly over the last --days days (default 30); states 85 % Success, 8 % Failed, 3 % Running, 2 %
Submitted, 1 % Cancel, 1 % Pause; tags and queues as in lists.py. The preloaded rows go to the legacy
partitions (everything before the migration's instant): for sizes and plans that does not matter.

Then, with the release build serving the database:
  sizes    heap (with TOAST) and index bytes of each table, per stored callback and per job
  lookup   wrk GET /v1/jobs/{JobId} over 20,000 random preloaded jobs, -c32: req/s, p50/p99, CPU ms/req
           of the service and of PostgreSQL
  lists    GET /v1/jobs with each filter, first page and a page at a cursor half-way: p50/p99
  history  GET /v1/jobs/{JobId}/callbacks of random jobs: p50/p99
  ingest   wrk posting callbacks (Benchmarks/ingest.lua), -c32: req/s, p50/p99, CPU ms/req, and WAL bytes
           per callback (pg_current_wal_lsn before and after, over the callbacks acknowledged)

Each run appends one JSON line to Benchmarks/results/capacity.jsonl.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BENCH, REPO, log, measured, peak_rss_kib, run, wrk  # noqa: E402
from largetable import MIDDLE_CURSOR_SQL, latencies, prepare, serving, token  # noqa: E402

CLUSTER = REPO / ".pgdata-capacity"
# Below the kernel's ephemeral range (32768-60999), as bench.py's.
PG_PORT = int(os.environ.get("CAPACITY_PG_PORT", "25369"))
DATABASE = "capacity"
DAY = 86400

STATES = [(85, "Success", 3, True), (93, "Failed", 3, True), (96, "Running", 1, False), (98, "Submitted", 0, False),
          (99, "Cancel", 3, True), (100, "Pause", 1, False)]
TAGS = [(90, "ExtractDigitalWatermark"), (96, "Transcode"), (99, "Snapshot"), (100, "Animation")]


def job_id(i):
    return "j" + hashlib.md5(str(i).encode()).hexdigest()


def state_of(i):
    for bound, state, rank, final in STATES:
        if i % 100 < bound:
            return state, rank, final


def tag_of(i):
    h = (i * 2654435761) % 100
    for bound, tag in TAGS:
        if h < bound:
            return tag


def queue_of(i):
    return "p%02d" % ((i * 40503) % 16)


def timestamp(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + ".%06d+00" % int((seconds % 1) * 1e6)


def body_template():
    """The JSON body of ingest.lua, with %s for the JobId and STATE for the state."""
    return (BENCH / "ingest.lua").read_text().split("[[", 2)[2].split("]]")[0].replace('"State": "Success"', '"State": "STATE"')


def copy(url, table, columns, rows):
    """Streams `rows` (lines in COPY text format) into `table` with triggers off."""
    command = ["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", "SET session_replication_role = replica",
               "-c", f"COPY {table} ({', '.join(columns)}) FROM STDIN"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, text=True)
    batch = []
    for line in rows:
        batch.append(line)
        if len(batch) >= 5000:
            process.stdin.write("".join(batch))
            batch = []
    process.stdin.write("".join(batch))
    process.stdin.close()
    if process.wait() != 0:
        raise SystemExit(f"capacity: COPY into {table} failed")


def load(binary, url, jobs, per_job, days):
    run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;"])
    run([str(binary), "migrate", "--migrations-dir", str(REPO / "migrations")], env={**os.environ, "DATABASE_URL": url},
        capture_output=True)
    template = body_template()
    now = time.time() - 60
    span = days * DAY
    states_for = (lambda final: [final]) if per_job == 1 else (lambda final: ["Running"] * (per_job - 1) + [final])

    def callbacks():
        """(callback_id, job index, state, received_at seconds, body bytes) in callback_id order."""
        callback_id = 0
        for i in range(1, jobs + 1):
            first = now - span * (1 - (i - 1) / jobs)
            state = state_of(i)[0]
            for k, reported in enumerate(states_for(state)):
                callback_id += 1
                body = template.replace("%s", job_id(i)).replace("STATE", reported)
                if k < per_job - 1:  # an earlier callback differs from the last even when both say Running
                    body = body.replace('"EventName": "TaskFinish"', f'"EventName": "TaskFinish", "Progress": "{k}"')
                yield callback_id, i, reported, first + 5 * k, body.encode()

    started = time.monotonic()
    log(f"COPY ci_callbacks + ci_callback_digests + ci_job_events: {jobs * per_job} callbacks")

    def callback_rows():
        for callback_id, _, _, received, body in callbacks():
            yield (f"{callback_id}\t\\\\x{hashlib.sha256(body).hexdigest()}\t\\\\x{body.hex()}\t{len(body)}\tJSON\t"
                   f"application/json\t127.0.0.1\tTaskFinish\taccepted\tcallback\t1\t{timestamp(received)}\n")

    copy(url, "ci_callbacks", ["callback_id", "body_sha256", "body", "body_size", "format", "content_type", "remote_address",
                               "event_name", "outcome", "source", "job_count", "received_at"], callback_rows())
    copy(url, "ci_callback_digests", ["body_sha256", "callback_id", "received_at", "last_received_at"],
         (f"\\\\x{hashlib.sha256(body).hexdigest()}\t{callback_id}\t{timestamp(received)}\t{timestamp(received)}\n"
          for callback_id, _, _, received, body in callbacks()))
    copy(url, "ci_job_events", ["job_id", "callback_id", "state", "applied", "received_at"],
         (f"{job_id(i)}\t{callback_id}\t{reported}\tt\t{timestamp(received)}\n" for callback_id, i, reported, received, _ in callbacks()))
    bodies_done = time.monotonic()
    log(f"callbacks loaded in {bodies_done - started:.0f} s; COPY ci_jobs: {jobs} jobs")

    def job_rows():
        for i in range(1, jobs + 1):
            first = now - span * (1 - (i - 1) / jobs)
            last = first + 5 * (per_job - 1)
            state, rank, final = state_of(i)
            tag, queue = tag_of(i), queue_of(i)
            detail = json.dumps({"JobId": job_id(i), "State": state, "Tag": tag, "Code": "Success", "Message": "done",
                                 "QueueId": queue, "Input": {"BucketId": "test-123456789", "Object": f"output/{i}.mp4",
                                                             "Region": "ap-chongqing"},
                                 "Operation": {"ExtractDigitalWatermark": {"Type": "Text", "Version": "V1", "Message": f"wm-{i}"}}},
                                separators=(",", ":"))
            yield (f"{job_id(i)}\t{state}\t{rank}\t{'t' if final else 'f'}\tSuccess\tdone\t{tag}\t{queue}\tCommon\t100\t"
                   f"{'t' if tag == 'ExtractDigitalWatermark' else 'f'}\tText\tV1\twm-{i}\t{detail}\t{i * per_job}\tcallback\t"
                   f"{timestamp(first)}\t{timestamp(last)}\t{timestamp(last)}\t{per_job}\n")

    copy(url, "ci_jobs", ["job_id", "state", "state_rank", "is_final", "code", "message", "tag", "queue_id", "queue_type", "progress",
                          "has_watermark", "watermark_type", "watermark_version", "watermark_message", "detail", "state_callback_id",
                          "state_source", "first_received_at", "last_received_at", "state_changed_at", "callback_count"], job_rows())
    jobs_done = time.monotonic()
    # Two commands: VACUUM cannot run inside the transaction a multi-statement -c makes.
    run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c", f"SELECT setval('ci_callback_id_seq', {jobs * per_job + 1}, false)",
         "-c", "VACUUM ANALYZE"], capture_output=True)
    done = time.monotonic()
    figures = {"callbacks_s": bodies_done - started, "jobs_s": jobs_done - bodies_done, "vacuum_analyze_s": done - jobs_done,
               "total_s": done - started}
    log(f"loaded in {figures['total_s']:.0f} s (callbacks {figures['callbacks_s']:.0f}, jobs {figures['jobs_s']:.0f}, "
        f"vacuum analyze {figures['vacuum_analyze_s']:.0f})")
    return figures


SIZE_SQL = """
SELECT t.name,
       coalesce(sum(pg_relation_size(p.relid) + pg_relation_size(p.relid, 'fsm') + pg_relation_size(p.relid, 'vm')
                    + coalesce(pg_total_relation_size(c.reltoastrelid), 0)), 0),
       coalesce(sum(pg_indexes_size(p.relid)), 0)
FROM unnest(ARRAY['ci_jobs', 'ci_callbacks', 'ci_callback_digests', 'ci_job_events', 'ci_job_state_events', 'ci_event_feed']) AS t(name)
-- pg_partition_tree gives no rows for a table that is not partitioned: such a table is its own one leaf.
CROSS JOIN LATERAL (SELECT relid FROM pg_partition_tree(t.name::regclass) WHERE isleaf
                    UNION ALL
                    SELECT t.name::regclass WHERE NOT EXISTS (SELECT FROM pg_partition_tree(t.name::regclass))) AS p
JOIN pg_class c ON c.oid = p.relid
GROUP BY t.name ORDER BY t.name
"""


def sizes(url):
    psql = lambda sql: run(["psql", url, "-Atqc", sql], capture_output=True).stdout.strip()
    tables = {}
    for line in psql(SIZE_SQL).splitlines():
        name, heap, index = line.split("|")
        tables[name] = {"heap_bytes": int(heap), "index_bytes": int(index)}
    counts = psql("SELECT (SELECT count(*) FROM ci_jobs), (SELECT count(*) FROM ci_callbacks)").split("|")
    return {"jobs": int(counts[0]), "callbacks": int(counts[1]), "tables": tables}


def wal_lsn(url):
    return int(run(["psql", url, "-Atqc", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"], capture_output=True).stdout.strip().split(".")[0])


def list_paths(url, jobs):
    now = time.time()
    iso = lambda ago: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - ago))
    filters = [("none", ""), ("state=Failed", "state=Failed"), ("tag=Animation", "tag=Animation"), ("queueId=p03", "queueId=p03"),
               ("state+tag", "state=Failed&tag=Transcode"), ("since 1d", f"since={iso(DAY)}"),
               ("since+until 1d window", f"since={iso(15 * DAY)}&until={iso(14 * DAY)}")]
    middle = run(["psql", url, "-Atqc", MIDDLE_CURSOR_SQL], capture_output=True).stdout.strip()
    paths = []
    for label, query in filters:
        base = "/v1/jobs?" + (query + "&" if query else "") + "limit=20"
        paths.append((label + " [first]", base))
        if middle:
            paths.append((label + " [deep]", base + "&cursor=" + token(middle)))
    return paths


def measure(binary, url, args):
    """Loads (unless --reuse), then measures sizes, lookups, lists, histories and ingest; returns the result."""
    loaded = None if args.reuse else load(binary, url, args.jobs, args.callbacks_per_job, args.days)
    size = sizes(url)
    for name, figures in size["tables"].items():
        log(f"{name:22s} heap {figures['heap_bytes'] / 2**20:9.1f} MiB  indexes {figures['index_bytes'] / 2**20:9.1f} MiB")
    jobs = size["jobs"]
    ids = [job_id(random.randint(1, jobs)) for _ in range(20_000)] if jobs else []
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "binary": str(binary), "load": loaded, "size": size,
              "connections": args.connections, "pool_size": args.pool_size, "load_average": os.getloadavg()}
    with serving(binary, url, args.port, args.pool_size, "capacity-service.log") as service:
        if ids:
            with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as file:
                file.write("\n".join(ids) + "\n")
            result["lookup"] = measured("lookup", service.pid, lambda: wrk(BENCH / "lookup.lua", args.port, args.lookup_seconds,
                                                                           args.connections, {"BENCH_IDS": file.name}), CLUSTER)
            os.unlink(file.name)
            result["lists"] = {}
            for label, path in list_paths(url, jobs):
                figures = latencies(args.port, path, args.samples, "capacity")
                result["lists"][label] = {**figures, "path": path}
                log(f"list {label:30s} p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms")
            result["history"] = latencies(args.port, lambda: f"/v1/jobs/{random.choice(ids)}/callbacks", args.samples, "capacity")
            log(f"history p50 {result['history']['p50_ms']:.2f} ms  p99 {result['history']['p99_ms']:.2f} ms")
        before = wal_lsn(url)
        ingest = measured("ingest", service.pid, lambda: wrk(BENCH / "ingest.lua", args.port, args.ingest_seconds, args.connections,
                                                             {"BENCH_RUN_ID": str(int(time.time()))}), CLUSTER)
        ingest["wal_bytes_per_callback"] = (wal_lsn(url) - before) / max(ingest["ok"], 1)
        log(f"ingest WAL {ingest['wal_bytes_per_callback']:.0f} bytes per callback")
        result["ingest"] = ingest
        result["peak_rss_mb"] = peak_rss_kib(service.pid) / 1024
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to preload (default 1000000)")
    parser.add_argument("--callbacks-per-job", type=int, default=2)
    parser.add_argument("--days", type=int, default=30, help="receive times spread over this many days (default 30)")
    parser.add_argument("--reuse", action="store_true", help="measure the data already loaded instead of loading afresh")
    parser.add_argument("--samples", type=int, default=200, help="requests per list path and for the history (default 200)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--lookup-seconds", type=int, default=15)
    parser.add_argument("--ingest-seconds", type=int, default=20)
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--port", type=int, default=18095)
    parser.add_argument("--binary", help="this ci-callbackd instead of the checkout's release build")
    parser.add_argument("--pg-port", type=int, default=PG_PORT, help=f"the cluster's port (default CAPACITY_PG_PORT or {PG_PORT})")
    args = parser.parse_args()

    binary = prepare(args.binary)
    url = run([str(REPO / "scripts/pg-cluster"), "start", str(CLUSTER), str(args.pg_port)], capture_output=True,
              env={**os.environ, "PGCLUSTER_DB": DATABASE}).stdout.strip()
    try:
        result = measure(binary, url, args)
    finally:
        subprocess.run([str(REPO / "scripts/pg-cluster"), "stop", str(CLUSTER)], check=False)
    if result.get("lists"):
        worst = max(result["lists"].values(), key=lambda figures: figures["p99_ms"])
        log(f"worst list p99: {worst['p99_ms']:.2f} ms ({worst['path']})")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result["commit"] = commit
    with open(BENCH / "results" / "capacity.jsonl", "a") as results:
        results.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
