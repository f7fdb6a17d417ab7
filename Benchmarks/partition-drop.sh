#!/bin/bash
# Ingest while retention drops a filled partition (issue 11 §2: at least 0.9x of steady state, 0 errors).
#
#   Benchmarks/partition-drop.sh BINARY [SERVICE_PORT] [PG_PORT]
#
# A fresh cluster (scripts/pg-cluster, in .build/partition-drop), the service on it, and 200,000 callbacks
# of ~1 KiB (229 MB) loaded into ci_callbacks_legacy, the partition that holds everything received before
# migration 0006 ran. wrk then posts callbacks (Benchmarks/ingest.lua, -c32) for 10 s three times: steady,
# while `ci-callbackd retention` runs, and steady again, each with its latency distribution. Retention runs
# with CALLBACK_RETENTION=1s: on a fresh database the legacy partition ends at the instant the migrations
# ran, so that expires it (and also deletes the events and digests older than a second: more work than a
# real drop does).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
binary=$(realpath "${1:?usage: Benchmarks/partition-drop.sh BINARY [SERVICE_PORT] [PG_PORT]}")
port=${2:-18371}
pgport=${3:-25371}
cluster="$repo/.build/partition-drop"
scripts/pg-cluster stop "$cluster" >/dev/null 2>&1 || true
rm -rf "$cluster"
url=$(PGCLUSTER_DB=bench scripts/pg-cluster start "$cluster" "$pgport")
DATABASE_URL="$url" LOG_LEVEL=warning RETENTION_INTERVAL=24h "$binary" serve --port "$port" > "$cluster/service.log" 2>&1 &
service=$!
trap 'kill $service 2>/dev/null || true; wait $service 2>/dev/null || true; scripts/pg-cluster stop "$cluster" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 150); do curl -sf "localhost:$port/readyz" >/dev/null && break; sleep 0.2; done
psql "$url" -qAt <<'SQL'
INSERT INTO ci_callbacks (body_sha256, body, body_size, format, content_type, outcome, source, job_count, received_at)
SELECT sha256(convert_to('old-' || i, 'UTF8')), convert_to(repeat('x', 1000) || i, 'UTF8'), 1000, 'JSON', 'application/json',
       'accepted', 'callback', 1, date_trunc('day', now() - interval '40 days') + (i || ' ms')::interval
FROM generate_series(1, 200000) AS i;
SELECT 'ci_callbacks_legacy: ' || pg_size_pretty(pg_total_relation_size('ci_callbacks_legacy'));
SQL
ingest() {
    BENCH_RUN_ID=$RANDOM wrk --latency -t2 -c32 -d10s -s Benchmarks/ingest.lua "http://127.0.0.1:$port" \
        | grep -E "Requests/sec|Non-2xx|Socket errors|Latency  |99%"
}
echo "steady:"; ingest
echo "while retention drops the partition:"
( sleep 1; DATABASE_URL="$url" CALLBACK_RETENTION=1s "$binary" retention 2>&1 | tail -1 ) &
retention=$!
ingest
wait $retention
echo "steady after:"; ingest
echo "ci_callbacks_legacy left: $(psql "$url" -qAt -c "SELECT count(*) FROM pg_class WHERE relname = 'ci_callbacks_legacy'")"
