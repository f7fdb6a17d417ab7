#!/usr/bin/env python3
"""Slowloris against a running ci-callbackd, then its listener refusal counters from /metrics.

    Benchmarks/slowloris.py --port 8080 --connections 1500 --seconds 20

Opens --connections sockets that each trickle one header byte every --interval seconds (a request that
never completes), while a normal client makes --probes requests to /healthz, each on a fresh
connection. Then the slow sockets close and the script prints how the probes fared and every
`http_listener_refusals_total` series (and `http_open_connections`) from /metrics. Start the service
with a low MAX_CONNECTIONS to see refusals at capacity; HEADER_TIMEOUT bounds how long one slow
request holds its slot (408). Standard library only.
"""

import argparse
import asyncio
import resource
import time
import urllib.request


async def slow_client(host, port, interval, stop, stats):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        stats["connect_failed"] += 1
        return
    stats["connected"] += 1
    head = b"GET /healthz HTTP/1.1\r\nHost: slowloris\r\nX-Slow: " + b"a" * 4096
    try:
        for byte in head:
            if stop.is_set() or reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
            if reader.at_eof() or len(reader._buffer) > 0:
                stats["answered"] += 1
                break
    except (ConnectionError, OSError):
        stats["reset"] += 1
    finally:
        writer.close()


async def probe(host, port, count, stats):
    latencies = []
    for _ in range(count):
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            status = status_line.split(b" ")[1].decode() if status_line else "closed"
        except (OSError, asyncio.TimeoutError, IndexError):
            status = "error"
        latencies.append(time.monotonic() - started)
        stats[status] = stats.get(status, 0) + 1
        await asyncio.sleep(0.05)
    return latencies


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--connections", type=int, default=1500)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between two header bytes")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the slow connections stay")
    parser.add_argument("--probes", type=int, default=200)
    args = parser.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, args.connections + 256)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    stop = asyncio.Event()
    slow_stats = {"connected": 0, "connect_failed": 0, "answered": 0, "reset": 0}
    slow = [asyncio.create_task(slow_client(args.host, args.port, args.interval, stop, slow_stats)) for _ in range(args.connections)]
    await asyncio.sleep(2)
    probe_stats = {}
    latencies = await probe(args.host, args.port, args.probes, probe_stats)
    remaining = args.seconds - 2
    if remaining > 0:
        await asyncio.sleep(remaining)
    stop.set()
    await asyncio.gather(*slow, return_exceptions=True)

    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else 0
    print(f"slow connections: {slow_stats}")
    print(f"probes (fresh connection each): {dict(sorted(probe_stats.items()))}, p99 {p99:.1f} ms")
    await asyncio.sleep(1)
    with urllib.request.urlopen(f"http://{args.host}:{args.port}/metrics", timeout=10) as response:
        page = response.read().decode()
    for line in page.splitlines():
        if line.startswith("http_listener_refusals_total") or line.startswith("http_open_connections"):
            print(line)


if __name__ == "__main__":
    asyncio.run(main())
