"""What scripts/chaos and scripts/fuzz-e2e share: a throwaway PostgreSQL cluster, ci-callbackd processes,
HTTP on fresh connections, a TCP proxy that can blackhole, and the check that acknowledged callbacks are
stored. Python standard library only, so the scripts need nothing beyond python3.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses root: as root, run its tools as `postgres` (what scripts/pg-cluster does)."""
    return ["runuser", "-u", "postgres", "--"] + command if os.geteuid() == 0 else command


def pg_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()])
    if not candidates:
        raise SystemExit("no PostgreSQL under /usr/lib/postgresql (scripts/pg-cluster ensure-packages installs it)")
    return candidates[-1]


class Cluster:
    """A cluster of its own (scripts/pg-cluster start DIR PORT), so restarts never touch the test cluster."""

    def __init__(self, directory: Path, database: str = "ci_callbackd_chaos"):
        self.directory = directory
        self.database = database
        self.port = free_port()

    def start(self) -> str:
        env = dict(os.environ, PGCLUSTER_DB=self.database)
        out = subprocess.run([str(REPO / "scripts/pg-cluster"), "start", str(self.directory), str(self.port)],
                             env=env, check=True, capture_output=True, text=True)
        self.url = out.stdout.strip().splitlines()[-1]
        return self.url

    def pg_ctl(self, *arguments: str) -> None:
        subprocess.run(as_owner([str(pg_bindir() / "pg_ctl"), "-D", str(self.directory / "data"), *arguments]),
                       check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "stop")

    def restart(self, mode: str) -> None:
        """Stops with `mode` (immediate: a crash; fast: a clean shutdown) and starts on the same port."""
        self.stop(mode)
        self.start()

    def shutdown(self) -> None:
        subprocess.run([str(REPO / "scripts/pg-cluster"), "stop", str(self.directory)], capture_output=True)

    def psql(self, sql: str) -> list[str]:
        out = subprocess.run([str(pg_bindir() / "psql"), self.url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             check=True, capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if line]

    def tcp_conninfo(self, port: int | None = None) -> str:
        """A conninfo over TCP (through a proxy when `port` is given)."""
        return f"host=127.0.0.1 port={port or self.port} user=postgres dbname={self.database}"

    def reset(self) -> None:
        self.psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


class Service:
    """One `ci-callbackd serve` process on a port of its own, logging to a file."""

    def __init__(self, binary: Path, database_url: str, log: Path, extra: list[str] | None = None, env: dict | None = None):
        self.binary = binary
        self.database_url = database_url
        self.port = free_port()
        self.log = log
        self.extra = extra or []
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> float:
        """Starts and returns the seconds until /readyz answered 200."""
        env = dict(os.environ, **self.env)
        env.pop("DATABASE_URL", None)
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), "serve", "--database-url", self.database_url, "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning", *self.extra],
                stdout=log, stderr=log, env=env)
        if wait:
            self.wait_ready(started)
        return time.monotonic() - started

    def wait_ready(self, started: float | None = None, deadline: float = 60) -> float:
        started = started or time.monotonic()
        while time.monotonic() - started < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"ci-callbackd exited with {self.process.returncode}; see {self.log}")
            try:
                if request("GET", self.port, "/readyz", timeout=2).status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"ci-callbackd not ready within {deadline} s; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.process
        return self.process.pid

    def kill9(self) -> None:
        assert self.process
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]

    def reset_peak(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self):
        return json.loads(self.body)


def request(method: str, port: int, path: str, body: bytes | None = None, timeout: float = 30,
            content_type: str = "application/json", host: str = "127.0.0.1") -> Reply:
    """One request on a fresh connection (what CI does for each callback)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Content-Type": content_type, "Connection": "close"} if body is not None else {"Connection": "close"}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data, time.monotonic() - started)
    finally:
        connection.close()


def new_job_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def callback_body(job_id: str, state: str = "Success", message: str = "chaos") -> bytes:
    return json.dumps({
        "EventName": "TaskFinish",
        "JobsDetail": {
            "JobId": job_id, "State": state, "Code": "Success", "Message": "", "Tag": "ExtractDigitalWatermark",
            "QueueId": "p2242ab62c7c94486915508540933a2c6", "CreationTime": "2026-12-04T16:00:00+0800",
            "Input": {"BucketId": "examplebucket-1250000000", "Object": "input/demo.mp4", "Region": "ap-chongqing"},
            "Operation": {"ExtractDigitalWatermark": {"Type": "Text", "Version": "V1", "Message": message},
                          "UserData": "chaos", "JobLevel": "0"},
        },
    }).encode()


@dataclass
class LoadFigures:
    acknowledged: dict[str, str] = field(default_factory=dict)  # JobId -> state, for every 200
    statuses: dict[int, int] = field(default_factory=dict)
    refused: int = 0  # connection refused or reset: the service was down
    unavailable_without_retry_after: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds of every 200
    problems: list[str] = field(default_factory=list)

    @property
    def unavailable(self) -> int:
        return self.statuses.get(503, 0)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 and status != 503)


class Load:
    """Threads posting small callbacks (a new JobId each) on fresh connections until stopped."""

    def __init__(self, ports: list[int], threads: int, prefix: str, pause: float = 0.0):
        self.ports = ports
        self.threads = threads
        self.prefix = prefix
        self.pause = pause
        self.figures = LoadFigures()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.workers: list[threading.Thread] = []

    def start(self) -> "Load":
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self.workers.append(worker)
        return self

    def stop(self) -> LoadFigures:
        self.stopping.set()
        for worker in self.workers:
            worker.join()
        return self.figures

    def _run(self, index: int) -> None:
        figures = self.figures
        while not self.stopping.is_set():
            port = self.ports[index % len(self.ports)]
            job_id = new_job_id(self.prefix)
            try:
                reply = request("POST", port, "/v1/callbacks", callback_body(job_id), timeout=30)
            except (ConnectionError, socket.timeout, http.client.HTTPException, OSError) as error:
                with self.lock:
                    figures.refused += 1
                    if isinstance(error, socket.timeout):
                        figures.problems.append(f"no answer within 30 s for {job_id}")
                time.sleep(0.02)
                continue
            with self.lock:
                figures.statuses[reply.status] = figures.statuses.get(reply.status, 0) + 1
                if reply.status == 200:
                    figures.acknowledged[job_id] = "Success"
                    figures.latencies.append(reply.seconds)
                elif reply.status == 503:
                    if "retry-after" not in reply.headers:
                        figures.unavailable_without_retry_after += 1
                elif len(figures.problems) < 20:
                    figures.problems.append(f"{reply.status} {reply.body[:200]!r}")
            if reply.status != 200:
                time.sleep(0.02)
            elif self.pause:
                time.sleep(self.pause)


def lost_acknowledgements(cluster: Cluster, acknowledged: dict[str, str] | set[str], prefix: str) -> list[str]:
    """The acknowledged JobIds that are not in ci_jobs (by prefix, one query)."""
    stored = set(cluster.psql(f"SELECT job_id FROM ci_jobs WHERE job_id LIKE '{prefix}%'"))
    return sorted(set(acknowledged) - stored)


class BlackholeProxy:
    """A TCP proxy between the service and PostgreSQL. `blackhole()` stops forwarding in both directions
    without closing anything (packets silently dropped, as across a broken network path); `forward()`
    resumes on every connection, old and new, as when the path heals."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.port = self.listener.getsockname()[1]
        self.blackholed = threading.Event()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def blackhole(self) -> None:
        self.blackholed.set()

    def forward(self) -> None:
        self.blackholed.clear()

    def close(self) -> None:
        self.closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._link, args=(client,), daemon=True).start()

    def _link(self, client: socket.socket) -> None:
        # While blackholed, a new connection is accepted by the kernel and then hears nothing.
        while self.blackholed.is_set() and not self.closed:
            time.sleep(0.05)
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        self._pump(client, server)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sockets = [a, b]
        try:
            while not self.closed:
                if self.blackholed.is_set():
                    time.sleep(0.05)  # read nothing, forward nothing, close nothing
                    continue
                readable, _, _ = select.select(sockets, [], [], 0.1)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            for s in sockets:
                try:
                    s.close()
                except OSError:
                    pass
