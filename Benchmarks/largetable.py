"""What the large-table benchmarks (lists.py, capacity.py) share: the release binary they measure, a
service serving the preloaded database, a cursor half-way down the job list, and request latencies on one
keep-alive connection. Imported, never run.
"""

import base64
import contextlib
import http.client
import os
import statistics
import subprocess
import time
from pathlib import Path

from bench import BENCH, REPO, build, ensure_tools, stop_service, wait_ready

# The cursor of the job half-way down GET /v1/jobs (newest first): what page N of a client that kept
# paging sends, so a deep page is measured as well as the first.
MIDDLE_CURSOR_SQL = ("SELECT (extract(epoch FROM first_received_at) * 1000000)::bigint || ':' || job_id FROM ci_jobs "
                     "ORDER BY first_received_at DESC, job_id DESC OFFSET (SELECT count(*) / 2 FROM ci_jobs) LIMIT 1")


def prepare(binary=None):
    """The tools installed and the results folder made; returns the binary to measure: `binary`, else the
    checkout's release build."""
    ensure_tools()
    (BENCH / "results").mkdir(exist_ok=True)
    return Path(binary).resolve() if binary else build()


def token(text):
    """A page cursor as the API hands it out (URL-safe base64 without padding)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@contextlib.contextmanager
def serving(binary, url, port, pool_size, log_name):
    """`ci-callbackd serve` on `url`, ready; stopped (SIGTERM) when the block ends. Its output is appended to
    Benchmarks/results/`log_name`."""
    with open(BENCH / "results" / log_name, "a") as service_log:
        env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"}
        service = subprocess.Popen([str(binary), "serve", "--port", str(port), "--migrations-dir", str(REPO / "migrations"),
                                    "--pool-size", str(pool_size)], env=env, stdout=service_log, stderr=service_log)
        try:
            wait_ready(port, service)
            yield service
        finally:
            stop_service(service)


def latencies(port, path, samples, who="bench"):
    """p50, p99 and max in ms of `samples` GETs of `path` (a string, or a function returning the next path)
    on one keep-alive connection, after 3 unmeasured ones (they prepare the statement on a pool connection).
    Anything but 200 ends the benchmark."""
    next_path = path if callable(path) else (lambda: path)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for index in range(samples + 3):
        target = next_path()
        started = time.perf_counter()
        connection.request("GET", target)
        response = connection.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"{who}: {target} answered {response.status}: {body[:300]!r}")
        if index >= 3:
            times.append(elapsed * 1000)
    connection.close()
    times.sort()
    return {"p50_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
            "max_ms": times[-1], "samples": len(times)}
