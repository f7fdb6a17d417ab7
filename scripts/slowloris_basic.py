#!/usr/bin/env python3
"""A basic slowloris driver, standalone (python3 standard library only), used by scripts/chaos.

Holds CONNECTIONS connections that each send a request head one header byte every INTERVAL seconds
(never finishing it; a connection the server closes is opened again), spread over PEERS loopback source
addresses (127.0.0.2, 127.0.0.3, …; 1 = all from 127.0.0.1). Meanwhile a normal client posts PROBES
callbacks, each on a fresh connection, and the script prints one JSON line:

    {"connections": held, "opened": total opens, "probes": n, "ok": 200s, "statuses": {...},
     "errors": n, "p50_ms": …, "p99_ms": …, "max_ms": …}

    scripts/slowloris_basic.py --port 8080 [--connections 5000] [--peers 1] [--interval 5] [--probes 200]
        [--warmup 10] [--probe-path /v1/callbacks]

Exits 0 after the probes, whatever they got: the caller judges the figures.
"""

import argparse
import http.client
import json
import resource
import socket
import threading
import time
import uuid


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Slow:
    HEAD = b"POST /v1/callbacks HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\nX-Slow: "

    def __init__(self, port, connections, peers, interval):
        self.port = port
        self.wanted = connections
        self.peers = peers
        self.interval = interval
        self.sockets = []
        self.opened = 0
        self.stopping = threading.Event()

    def open_one(self, index):
        source = f"127.0.0.{2 + index % self.peers}" if self.peers > 1 else "127.0.0.1"
        s = socket.socket()
        s.settimeout(2)
        try:
            s.bind((source, 0))
            s.connect(("127.0.0.1", self.port))
            s.send(self.HEAD)
            s.setblocking(False)
        except OSError:
            s.close()
            return None
        self.opened += 1
        return s

    def run(self):
        self.sockets = [None] * self.wanted
        while not self.stopping.is_set():
            started = time.monotonic()
            for index in range(self.wanted):
                if self.stopping.is_set():
                    return
                s = self.sockets[index]
                if s is not None:
                    try:
                        s.send(b"a")
                        continue
                    except BlockingIOError:
                        continue
                    except OSError:
                        s.close()
                self.sockets[index] = self.open_one(index)
            rest = self.interval - (time.monotonic() - started)
            if rest > 0:
                self.stopping.wait(rest)

    def held(self):
        return sum(1 for s in self.sockets if s is not None)

    def close(self):
        self.stopping.set()
        for s in self.sockets:
            if s is not None:
                s.close()


def probe(port, path):
    job_id = "jslowloris" + uuid.uuid4().hex
    body = json.dumps({"JobsDetail": {"JobId": job_id, "State": "Success", "Tag": "ExtractDigitalWatermark"}}).encode()
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", "Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of slow connections before the probes")
    parser.add_argument("--probe-path", default="/v1/callbacks")
    arguments = parser.parse_args()

    raise_fd_limit(arguments.connections + 256)
    slow = Slow(arguments.port, arguments.connections, arguments.peers, arguments.interval)
    thread = threading.Thread(target=slow.run, daemon=True)
    thread.start()
    time.sleep(arguments.warmup)
    statuses, latencies, errors = {}, [], 0
    for _ in range(arguments.probes):
        try:
            status, seconds = probe(arguments.port, arguments.probe_path)
        except OSError:
            errors += 1
            continue
        statuses[status] = statuses.get(status, 0) + 1
        latencies.append(seconds)
        time.sleep(0.02)
    held = slow.held()
    slow.close()
    print(json.dumps({
        "connections": held, "opened": slow.opened, "probes": arguments.probes, "ok": statuses.get(200, 0),
        "statuses": statuses, "errors": errors, "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1), "max_ms": round(max(latencies or [float("nan")]) * 1000, 1),
    }))


if __name__ == "__main__":
    main()
