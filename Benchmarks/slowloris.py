#!/usr/bin/env python3
"""Slow-loris scenario against a release build of ci-callbackd (issue 10, section 1).

    Benchmarks/slowloris.py                        # 5,000 slow connections from one address, then from eight
    Benchmarks/slowloris.py --slow 5000 --sources one --serve-arg=--max-connections=2048
    Benchmarks/slowloris.py --binary /tmp/main/ci-callbackd   # the same against another build

For each scenario it starts the service (the release binary; built with `swift build -c release` when
missing) on a scratch database, opens --slow connections that send part of a request head and then one
byte every --trickle seconds, never finishing it (a connection the server drops is opened again, so the
pressure lasts), waits until every one has been opened and the pressure has held for --settle seconds, and
then posts --requests callbacks, each on a fresh connection from 127.0.0.1, as CI does. It prints how
many were answered 200, the latency percentiles (connect to last byte) and the service's listener
refusal counters (`http_listener_refusals_total` from /metrics: evictions, refusals at capacity or at a
peer's limit, 408s), and exits non-zero when any request failed or p99 exceeds --p99-goal-ms.

Sources: `one` puts every slow connection on 127.0.0.2; `many` spreads them over 127.0.0.2-127.0.0.9.
The database: DATABASE_URL when set, else this checkout's cluster (scripts/pg-cluster, PGCLUSTER_PORT)
with a database of its own, ci_callbackd_slowloris. Standalone: only the Python standard library.
scripts/chaos's slowloris scenario imports this file and calls ``measure`` against its own service.
"""

import argparse
import errno
import http.client
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import wait_ready  # noqa: E402  (one readiness wait for every benchmark)

REPO = Path(__file__).resolve().parent.parent


def log(message):
    print(f"slowloris: {message}", file=sys.stderr, flush=True)


def raise_open_file_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def attack(port, sources, count, trickle, opened, dropped, stop):
    """Holds `count` slow connections until `stop` is set. Runs in its own process."""
    raise_open_file_limit()
    head = b"POST /v1/callbacks HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\nX-Slow: "
    sockets = [None] * count
    sent_head = [False] * count
    next_send = [0.0] * count
    while not stop.is_set():
        now = time.monotonic()
        for index in range(count):
            if sockets[index] is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    sock.bind((sources[index % len(sources)], 0))
                    sock.connect_ex(("127.0.0.1", port))
                except OSError:
                    sock.close()
                    continue
                sockets[index] = sock
                sent_head[index] = False
                next_send[index] = now
                with opened.get_lock():
                    opened.value += 1
                continue
            if now < next_send[index]:
                continue
            sock = sockets[index]
            gone = False
            try:
                if sock.recv(4096, socket.MSG_DONTWAIT) is not None:
                    gone = True  # an answer (503, 408) or EOF: the server let go of it
            except BlockingIOError:
                pass
            except OSError as error:
                gone = error.errno != errno.ENOTCONN
            if not gone:
                try:
                    sock.send(b"x" if sent_head[index] else head, socket.MSG_DONTWAIT)
                    sent_head[index] = True
                    next_send[index] = now + trickle
                except BlockingIOError:
                    next_send[index] = now + 0.05
                except OSError:
                    gone = True
            if gone:
                sock.close()
                sockets[index] = None
                with dropped.get_lock():
                    dropped.value += 1
        time.sleep(0.01)
    for sock in sockets:
        if sock is not None:
            sock.close()


def fresh_request(port, timeout):
    """One callback on a fresh connection; (status, seconds). Status 0: no answer."""
    job_id = "j" + uuid.uuid4().hex
    body = json.dumps({"EventName": "TaskFinish", "JobsDetail": {
        "JobId": job_id, "State": "Success", "Tag": "ExtractDigitalWatermark",
        "Operation": {"ExtractDigitalWatermark": {"Type": "Text", "Version": "V1", "Message": "slowloris"}}}})
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=("127.0.0.1", 0))
    try:
        connection.request("POST", "/v1/callbacks", body=body,
                            headers={"Content-Type": "application/json", "Connection": "close"})
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0
    finally:
        connection.close()
    return status, time.monotonic() - started


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def database_url():
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    env = {**os.environ, "PGCLUSTER_DB": "ci_callbackd_slowloris"}
    return subprocess.run([str(REPO / "scripts/pg-cluster"), "start"], check=True, text=True, capture_output=True,
                          env=env).stdout.strip()


def refusal_counters(port):
    """`http_listener_refusals_total` series from /metrics, as {"reason/status": count}."""
    counters = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            page = response.read().decode()
    except OSError:
        return counters
    for line in page.splitlines():
        if line.startswith("http_listener_refusals_total{"):
            labels, value = line.rsplit(" ", 1)
            fields = dict(part.split("=", 1) for part in labels[labels.index("{") + 1:-1].split(","))
            counters[f"{fields['reason'].strip(chr(34))}/{fields['status'].strip(chr(34))}"] = int(float(value))
    return counters


def measure(port, sources, slow, requests=200, trickle=1.0, settle=3.0, timeout=10.0):
    """Against a service already listening on `port`: holds `slow` slow connections from `sources` until
    every one has been opened and `settle` seconds have passed, posts `requests` callbacks on fresh
    connections from 127.0.0.1, and returns the figures (a dict, as printed). `slow` 0 measures the same
    client without pressure. Also what scripts/chaos's slowloris scenario runs."""
    stop = multiprocessing.Event()
    opened = multiprocessing.Value("l", 0)
    dropped = multiprocessing.Value("l", 0)
    attacker = None
    try:
        if slow > 0:
            attacker = multiprocessing.Process(target=attack, args=(port, sources, slow, trickle, opened, dropped, stop))
            attacker.start()
            deadline = time.monotonic() + 120
            while opened.value < slow:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {opened.value} of {slow} slow connections opened in 120 s")
                time.sleep(0.1)
            time.sleep(settle)
        results = [fresh_request(port, timeout) for _ in range(requests)]
        refusals = refusal_counters(port)
    finally:
        stop.set()
        if attacker is not None:
            attacker.join(timeout=30)
            if attacker.is_alive():
                attacker.kill()
    latencies = [seconds * 1000 for _, seconds in results]
    statuses = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "slow_connections": slow, "sources": sources, "requests": requests,
        "answered_200": statuses.get(200, 0), "statuses": statuses,
        "p50_ms": round(percentile(latencies, 0.50), 1), "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1), "slow_opened": opened.value, "slow_dropped_by_server": dropped.value,
        "refusals": refusals,
    }


def scenario(name, sources, args, binary, url, log_file):
    service = subprocess.Popen([str(binary), "serve", "--host", "127.0.0.1", "--port", str(args.port), *args.serve_arg],
                               env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "info"},
                               stdout=log_file, stderr=log_file)
    try:
        wait_ready(args.port, service)
        try:
            summary = measure(args.port, sources, args.slow, args.requests, args.trickle, args.settle, args.timeout)
        except RuntimeError as error:
            raise SystemExit(f"slowloris: {error}")
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
    summary = {"scenario": name, **summary}
    print(json.dumps(summary), flush=True)
    return summary["answered_200"] == args.requests and summary["p99_ms"] <= args.p99_goal_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, default=REPO / ".build/release/ci-callbackd")
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--slow", type=int, default=5000, help="slow connections (default 5000)")
    parser.add_argument("--sources", choices=["one", "many", "both"], default="both")
    parser.add_argument("--requests", type=int, default=200, help="fresh-connection callbacks (default 200)")
    parser.add_argument("--trickle", type=float, default=1.0, help="seconds between a slow connection's bytes (default 1)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of pressure before the requests (default 3)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (default 10)")
    parser.add_argument("--p99-goal-ms", type=float, default=100.0)
    parser.add_argument("--serve-arg", action="append", default=[], help="extra argument for ci-callbackd serve (repeatable)")
    args = parser.parse_args()

    limit = raise_open_file_limit()
    if limit < args.slow + 256:
        raise SystemExit(f"slowloris: the open-file hard limit ({limit}) is below {args.slow + 256}; raise it (ulimit -Hn)")
    binary = args.binary
    if not binary.exists():
        log("building the release binary (swift build -c release --product ci-callbackd)")
        subprocess.run(["swift", "build", "-c", "release", "--product", "ci-callbackd"], cwd=REPO, check=True)
    url = database_url()
    scenarios = {"one": ["127.0.0.2"], "many": [f"127.0.0.{n}" for n in range(2, 10)]}
    chosen = ["one", "many"] if args.sources == "both" else [args.sources]
    log_path = REPO / ".build" / "slowloris-service.log"
    log_path.parent.mkdir(exist_ok=True)
    passed = True
    with open(log_path, "a") as log_file:
        for name in chosen:
            log(f"scenario {name}: {args.slow} slow connections from {', '.join(scenarios[name])}; service log {log_path}")
            passed = scenario(name, scenarios[name], args, binary, url, log_file) and passed
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
