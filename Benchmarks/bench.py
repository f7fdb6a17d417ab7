#!/usr/bin/env python3
"""ci-callbackd benchmark: ingest and lookup throughput, latency, and CPU per request.

One command from a clean checkout:

    Benchmarks/bench.py                 # one round
    Benchmarks/bench.py --runs 5        # five rounds, medians reported
    Benchmarks/bench.py --runs 5 --baseline-binary /tmp/before/ci-callbackd
                                        # A/B: each round runs both binaries (order alternating), medians per side

Each round starts a throwaway PostgreSQL cluster (.pgdata-bench/, fsync and synchronous_commit on) and
the release build of ci-callbackd, then measures:

  ingest   wrk posting ~1 KiB CI callbacks (half XML, half JSON, a new JobId each), -c32, 15 s
  lookup   wrk GETting /v1/jobs/{JobId} over the ingested ids, -c32, 10 s
  pgbench  the service's own ingest statement under pgbench, -c32, 10 s: PostgreSQL's ceiling

With --read-standby, each round also makes a hot standby of the round's cluster (scripts/pg-cluster
standby) and measures lookups twice more on fresh services, order alternating per round: reads on the
primary, and reads on the standby (READ_DATABASE_URL); PostgreSQL CPU then counts both clusters.

For each phase: requests/s, p50 and p99 latency, non-2xx answers, server CPU ms and PostgreSQL CPU ms
per request (utime+stime deltas from /proc), and peak RSS (VmHWM). Ingest also checks durability: rows
stored >= 2xx answers, or the benchmark fails. Every round appends one JSON line to
Benchmarks/results/results.jsonl. Figures are also printed as ratios to the pgbench ceiling measured
in the same round, because the machine is shared and absolute numbers drift.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "Benchmarks"
CLUSTER = REPO / ".pgdata-bench"
# Another port when two benchmarks (or a benchmark and a test cluster) share the machine.
# Below the kernel's ephemeral range (32768-60999 by default): every round stops the cluster and starts it
# again on this port, and a port in that range may meanwhile be the local port of some outgoing connection.
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "25349"))
TICKS = os.sysconf("SC_CLK_TCK")


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(command, **kwargs):
    return subprocess.run(command, check=True, text=True, **kwargs)


def ensure_tools():
    packages = {"wrk": "wrk", "pgbench": "postgresql", "psql": "postgresql"}
    missing = [package for tool, package in packages.items() if shutil.which(tool) is None]
    # Linking Foundation statically (as deploy/Dockerfile does) still links libcurl dynamically: it needs
    # the development symlink libcurl.so.
    if not any(Path(d, "libcurl.so").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib")):
        missing.append("libcurl4-openssl-dev")
    if missing:
        log(f"installing {' '.join(missing)} from Debian")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        run(sudo + ["apt-get", "update", "-qq"])
        run(sudo + ["apt-get", "install", "-y", "-qq"] + sorted(set(missing)),
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


# The binary we ship: release, with the Swift standard library and Foundation linked statically, exactly
# as deploy/Dockerfile builds it (a dynamically linked build pays ~4 MB more RSS for relocated library pages
# and a little CPU for cross-library calls). Its own build folder, so switching flags never rebuilds the
# developer's .build/release.
BUILD_COMMAND = ["swift", "build", "-c", "release", "--product", "ci-callbackd", "--static-swift-stdlib",
                 "--scratch-path", str(REPO / ".build" / "bench")]


def build():
    log(f"building the release binary: {' '.join(BUILD_COMMAND[:-2])} --scratch-path .build/bench")
    run(BUILD_COMMAND, cwd=REPO, stdout=subprocess.DEVNULL)
    path = run(BUILD_COMMAND + ["--show-bin-path"], cwd=REPO, capture_output=True).stdout.strip()
    return Path(path) / "ci-callbackd"


def proc_cpu_ticks(pid, children=False):
    """utime+stime (and, for a parent, cutime+cstime of reaped children) of one process, in ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def postgres_cpu_ticks(cluster=None):
    """CPU of the whole cluster: the postmaster, its live children, and the children it has reaped; with a
    standby in CLUSTER/standby running, that one's too."""
    cluster = cluster or CLUSTER
    total = 0
    for data in (cluster / "data", cluster / "standby" / "data"):
        if (data / "postmaster.pid").exists():
            total += postmaster_cpu_ticks(int((data / "postmaster.pid").read_text().split()[0]))
    return total


def postmaster_cpu_ticks(postmaster):
    total = proc_cpu_ticks(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total


def peak_rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def start_cluster():
    if CLUSTER.exists():
        subprocess.run([str(REPO / "scripts/pg-cluster"), "stop", str(CLUSTER / "standby")], check=False)
        subprocess.run([str(REPO / "scripts/pg-cluster"), "stop", str(CLUSTER), str(PG_PORT)], check=False)
        shutil.rmtree(CLUSTER)
    url = run([str(REPO / "scripts/pg-cluster"), "start", str(CLUSTER), str(PG_PORT)],
              capture_output=True, env={**os.environ, "PGCLUSTER_DB": "bench"}).stdout.strip()
    return url


def stop_cluster():
    subprocess.run([str(REPO / "scripts/pg-cluster"), "stop", str(CLUSTER / "standby")], check=False)
    subprocess.run([str(REPO / "scripts/pg-cluster"), "stop", str(CLUSTER), str(PG_PORT)], check=False)


def psql(url, sql):
    return run(["psql", url, "-Atqc", sql], capture_output=True).stdout.strip()


def wait_ready(port, process, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit("bench: ci-callbackd exited during start; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("bench: ci-callbackd did not become ready")


def stop_service(service):
    """SIGTERM, then SIGKILL when the service has not exited within 30 s."""
    service.send_signal(signal.SIGTERM)
    try:
        service.wait(timeout=30)
    except subprocess.TimeoutExpired:
        service.kill()


def wrk(script, port, seconds, connections, env):
    output = run(["wrk", f"-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                  f"http://127.0.0.1:{port}"], capture_output=True, env={**os.environ, **env}).stdout
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise SystemExit(f"bench: wrk printed no summary:\n{output}")


def measured(label, service_pid, action, cluster=None):
    """Runs `action`, returning its result with CPU deltas of the service and of PostgreSQL."""
    service_before, pg_before = proc_cpu_ticks(service_pid), postgres_cpu_ticks(cluster)
    result = action()
    service_after, pg_after = proc_cpu_ticks(service_pid), postgres_cpu_ticks(cluster)
    requests = max(result["requests"], 1)
    result["server_cpu_ms_per_req"] = (service_after - service_before) * 1000 / TICKS / requests
    result["pg_cpu_ms_per_req"] = (pg_after - pg_before) * 1000 / TICKS / requests
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    log(f"{label}: {result['rps']:.0f} req/s, p50 {result['p50_us'] / 1000:.2f} ms, p99 {result['p99_us'] / 1000:.2f} ms, "
        f"non-2xx {result['non2xx']}, server {result['server_cpu_ms_per_req']:.3f} ms CPU/req, "
        f"PostgreSQL {result['pg_cpu_ms_per_req']:.3f} ms CPU/req")
    return result


def pgbench_ceiling(binary, url, seconds, clients):
    """The service's ingest statement, one callback per transaction, driven by pgbench."""
    sql = run([str(binary), "ingest-sql"], capture_output=True).stdout.strip()
    body = (BENCH / "ingest.lua").read_text().split("[[", 2)[2].split("]]")[0].replace("%s", "JOBID")  # the JSON template
    # The jobs parameter exactly as the service binds it for this body.
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as sample:
        sample.write(body)
    jobs = run([str(binary), "ingest-sql", "--jobs-for", sample.name], capture_output=True).stdout.strip()
    os.unlink(sample.name)
    substitutions = {
        "$13::jsonb": "replace(:jobs, 'JOBID', :jobid)::jsonb",
        "$12": ":now", "$11": "1", "$10": "'callback'", "$9": "NULL", "$8": "'accepted'", "$7": "'TaskFinish'",
        "$6": "'127.0.0.1'", "$5": "'application/json'", "$4": "'JSON'", "$3": "false", "$2": str(len(body)),
        "$1": "convert_to(replace(:body, 'JOBID', :jobid), 'UTF8')",
    }
    for placeholder, value in substitutions.items():
        sql = sql.replace(placeholder, value)
    # pgbench cannot build strings in \set, so the statement makes each JobId (and so each body's
    # SHA-256) unique from the client number and a random number.
    sql = sql.replace(":jobid", "('j' || :client_id || 'x' || :n)")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write("\\set n random(1, 2000000000)\n")
        script.write(" ".join(sql.split()) + ";\n")
        path = script.name
    now = str(int(time.time() * 1_000_000))
    output = run(["pgbench", "-n", "-M", "prepared", f"-c{clients}", "-j2", f"-T{seconds}", "-f", path,
                  "-D", f"body={body}", "-D", f"jobs={jobs}", "-D", f"now={now}", url], capture_output=True).stdout
    os.unlink(path)
    for line in output.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise SystemExit(f"bench: pgbench printed no tps:\n{output}")


def one_round(binary, migrations, args, round_index):
    """One full round (fresh cluster, ingest, lookup, pgbench) of one binary on the schema in `migrations`."""
    url = start_cluster()
    service_log = open(BENCH / "results" / "service.log", "a")
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": args.log_level}
    service = subprocess.Popen([str(binary), "serve", "--port", str(args.port), "--migrations-dir", str(migrations),
                                "--pool-size", str(args.pool_size)], env=env, stdout=service_log, stderr=service_log)
    try:
        wait_ready(args.port, service)
        run_id = str(int(time.time()) + round_index)
        ingest = measured("ingest", service.pid, lambda: wrk(BENCH / "ingest.lua", args.port, args.ingest_seconds, args.connections,
                                                             {"BENCH_RUN_ID": run_id}))
        stored = int(psql(url, "SELECT count(*) FROM ci_callbacks"))
        ingest["stored_rows"] = stored
        if stored < ingest["ok"]:
            raise SystemExit(f"bench: DURABILITY FAILURE: {ingest['ok']} callbacks answered 2xx but only {stored} rows stored")
        with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as ids:
            ids.write(psql(url, "SELECT job_id FROM ci_jobs ORDER BY random() LIMIT 20000") + "\n")
        lookup = measured("lookup", service.pid, lambda: wrk(BENCH / "lookup.lua", args.port, args.lookup_seconds, args.connections,
                                                             {"BENCH_IDS": ids.name}))
        rss = peak_rss_kib(service.pid)
    finally:
        stop_service(service)
        service_log.close()
    reads = {}
    if args.read_standby:
        reads = standby_lookups(binary, migrations, args, url, ids.name, round_index)
    os.unlink(ids.name)
    ceiling = pgbench_ceiling(binary, url, args.pgbench_seconds, args.connections)
    stop_cluster()
    log(f"pgbench ceiling: {ceiling:.0f} tps; peak RSS {rss / 1024:.1f} MB")
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ingest": ingest, "lookup": lookup,
            "pgbench_tps": ceiling, "peak_rss_mb": rss / 1024, "connections": args.connections, "pool_size": args.pool_size,
            **reads}


def metric(port, name, labels):
    """The value of one series on /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + labels + " "):
                return float(line.split()[-1])
    return 0.0


def standby_lookups(binary, migrations, args, url, ids_path, round_index):
    """Lookups on fresh services reading the primary and reading a hot standby, order alternating per round.
    The standby's share of reads (db_reads_total) is recorded: a run where it did not serve is void."""
    standby_url = run([str(REPO / "scripts/pg-cluster"), "standby", str(CLUSTER)], capture_output=True,
                      env={**os.environ, "PGCLUSTER_DB": "bench"}).stdout.strip()
    results = {}
    variants = [("lookup_primary", None), ("lookup_standby", standby_url)]
    for name, read_url in (variants if round_index % 2 == 0 else list(reversed(variants))):
        service_log = open(BENCH / "results" / "service.log", "a")
        env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": args.log_level}
        if read_url:
            env["READ_DATABASE_URL"] = read_url
            env["READ_POOL_SIZE"] = str(args.pool_size)
        service = subprocess.Popen([str(binary), "serve", "--port", str(args.port), "--migrations-dir", str(migrations),
                                    "--pool-size", str(args.pool_size)], env=env, stdout=service_log, stderr=service_log)
        try:
            wait_ready(args.port, service)
            if read_url:
                deadline = time.time() + 60
                while metric(args.port, "db_read_standby_state", '{state="in_sync"}') != 1:
                    if time.time() > deadline:
                        raise SystemExit("bench: the standby never came in sync")
                    time.sleep(0.2)
            result = measured(name, service.pid, lambda: wrk(BENCH / "lookup.lua", args.port, args.lookup_seconds, args.connections,
                                                             {"BENCH_IDS": ids_path}))
            result["standby_reads"] = metric(args.port, "db_reads_total", '{target="standby"}')
            log(f"{name}: {result['standby_reads']:.0f} reads answered by the standby")
            results[name] = result
        finally:
            stop_service(service)
            service_log.close()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="interleaved rounds; medians are reported (default 1)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ingest-seconds", type=int, default=15)
    parser.add_argument("--lookup-seconds", type=int, default=10)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--read-standby", action="store_true",
                        help="also measure lookups reading a hot standby against reading the primary (see the docstring)")
    parser.add_argument("--log-level", default="info", help="the service's LOG_LEVEL (default info: one line per request)")
    parser.add_argument("--label", default="", help="a note stored with each result line")
    parser.add_argument("--binary", help="benchmark this ci-callbackd instead of building the checkout's release binary")
    parser.add_argument("--baseline-binary",
                        help="A/B mode: a second ci-callbackd (for example the previous release) measured in the same rounds, "
                             "interleaved with --binary/the checkout, order alternating per round")
    parser.add_argument("--migrations", default=str(REPO / "migrations"),
                        help="the migrations directory the candidate runs (default: the checkout's)")
    parser.add_argument("--baseline-migrations",
                        help="A/B mode: the baseline's migrations directory (default: --migrations), to compare schema changes")
    args = parser.parse_args()

    ensure_tools()
    binary = Path(args.binary) if args.binary else build()
    (BENCH / "results").mkdir(exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    sides = [("candidate", binary, Path(args.migrations))]
    if args.baseline_binary or args.baseline_migrations:
        sides = [("baseline", Path(args.baseline_binary or binary), Path(args.baseline_migrations or args.migrations)),
                 ("candidate", binary, Path(args.migrations))]
    rounds = {name: [] for name, _, _ in sides}
    for index in range(args.runs):
        # Alternate which side goes first so neither always meets a warmer (or busier) machine.
        order = sides if index % 2 == 0 else list(reversed(sides))
        for name, path, migrations in order:
            log(f"round {index + 1} of {args.runs}: {name} ({path}, {migrations})")
            result = one_round(path, migrations, args, index)
            result["label"] = args.label
            result["side"] = name
            result["binary"] = str(path)
            result["migrations"] = str(migrations)
            result["commit"] = commit if name == "candidate" else ""
            with open(BENCH / "results" / "results.jsonl", "a") as results:
                results.write(json.dumps(result) + "\n")
            rounds[name].append(result)
    for name, _, _ in sides:
        report(name, rounds[name], args)


def report(name, rounds, args):
    def median(path):
        values = []
        for result in rounds:
            value = result
            for key in path:
                value = value[key]
            values.append(value)
        return statistics.median(values)

    ceiling = median(["pgbench_tps"])
    rows = [
        ("ingest req/s", median(["ingest", "rps"]), f"{median(['ingest', 'rps']) / ceiling:.2f}x pgbench"),
        ("ingest p50 ms", median(["ingest", "p50_us"]) / 1000, ""),
        ("ingest p99 ms", median(["ingest", "p99_us"]) / 1000, ""),
        ("ingest non-2xx", median(["ingest", "non2xx"]), ""),
        ("ingest server CPU ms/req", median(["ingest", "server_cpu_ms_per_req"]), ""),
        ("ingest PostgreSQL CPU ms/req", median(["ingest", "pg_cpu_ms_per_req"]), ""),
        ("lookup req/s", median(["lookup", "rps"]), f"{median(['lookup', 'rps']) / ceiling:.2f}x pgbench"),
        ("lookup p50 ms", median(["lookup", "p50_us"]) / 1000, ""),
        ("lookup p99 ms", median(["lookup", "p99_us"]) / 1000, ""),
        ("lookup non-2xx", median(["lookup", "non2xx"]), ""),
        ("lookup server CPU ms/req", median(["lookup", "server_cpu_ms_per_req"]), ""),
        ("lookup PostgreSQL CPU ms/req", median(["lookup", "pg_cpu_ms_per_req"]), ""),
        ("pgbench ingest-statement tps", ceiling, "1.00x"),
    ] + ([
        ("lookup on primary req/s", median(["lookup_primary", "rps"]), ""),
        ("lookup on standby req/s", median(["lookup_standby", "rps"]),
         f"{median(['lookup_standby', 'rps']) / median(['lookup_primary', 'rps']):.2f}x primary"),
        ("lookup on primary p99 ms", median(["lookup_primary", "p99_us"]) / 1000, ""),
        ("lookup on standby p99 ms", median(["lookup_standby", "p99_us"]) / 1000, ""),
        ("lookup on standby PG CPU ms/req", median(["lookup_standby", "pg_cpu_ms_per_req"]), "both clusters"),
        ("lookup on primary PG CPU ms/req", median(["lookup_primary", "pg_cpu_ms_per_req"]), "both clusters"),
    ] if args.read_standby else []) + [
        ("peak RSS MB", median(["peak_rss_mb"]), ""),
    ]
    print(f"\n{name}: medians of {len(rounds)} round(s), -c{args.connections}, pool {args.pool_size}:")
    for name, value, ratio in rows:
        print(f"  {name:32s} {value:12.3f}  {ratio}")


if __name__ == "__main__":
    main()
