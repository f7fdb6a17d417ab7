#!/usr/bin/env python3
"""End-to-end mutation fuzzer (issue 10 §4): mutates the CI sample bodies (Tests/Fixtures/ci-vectors),
posts them through a running ci-callbackd into PostgreSQL, and fails on any 5xx or lost acknowledged
data: a 200 whose JobId then cannot be looked up (GET /v1/jobs/{JobId}). The bugs a pure parser fuzzer
cannot see live here: values PostgreSQL refuses, index and NOTIFY limits, encodings between layers.

    scripts/fuzz_e2e.py --binary PATH --work DIR --seconds N [--threads 4] [--seed S]

Run through scripts/fuzz, which builds the binary. Each finding is saved as DIR/findings/<sha1>.body
with <sha1>.txt saying what went wrong (replay: curl --data-binary @FILE http://…/v1/callbacks).
Prints `fuzz-e2e: N bodies, …` and exits non-zero on any finding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import Cluster, Service, request  # noqa: E402

VECTORS = harness.REPO / "Tests/Fixtures/ci-vectors"

# Values a mutation may put in place of a field's text: the edges where layers disagree.
INTERESTING = [
    "", " ", "-", "0", "-1", "100", "101", "2147483648", "9" * 40, "1e309", "NaN", "true", "null",
    "2026-12-04T16:00:00+0800", "2026-12-04T16:00:00+1800", "2026-12-04T16:00:00-16:00", "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59+15:59", "2026-02-30T00:00:00Z", "2026-12-04 16:00:00", "1970-01-01T00:00:00.123456789Z",
    "\u00e9\u4e2d\U0001F600", "\u202e\u0301", "\ufeff", "\\", "\"", "'", "<", "&", "]]>", "%00", "%2F", "/", "..",
    "a" * 129, "a" * 257, "a" * 3000, "a" * 9000, "Success", "Failed", "Cancel", "Running", "Submitted", "Pause",
    "success", "SUCCESS", "Success ", "\tSuccess\n",
]

FIELD_NAMES = ["JobId", "State", "Code", "Message", "Tag", "QueueId", "Progress", "CreationTime", "StartTime",
               "EndTime", "Object", "BucketId", "Region", "UserData", "JobLevel", "Type", "Version", "EventName",
               "RunId", "WorkflowId", "Name", "CreateTime"]


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Mutator:
    def __init__(self, seeds: list[bytes], rng: random.Random):
        self.seeds = seeds
        self.rng = rng

    def body(self) -> bytes:
        rng = self.rng
        body = self.fresh_ids(rng.choice(self.seeds))
        for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
            body = rng.choice([self.field_value, self.field_value, self.field_value, self.byte_level, self.duplicate_field,
                               self.splice, self.nest, self.numeric_entity])(body)
        return body

    def fresh_ids(self, body: bytes) -> bytes:
        """Unique JobIds (and run ids), so a 200 can be checked by lookup and bodies rarely repeat."""
        text = body.decode("utf-8", "replace")
        text = re.sub(r"\bj[0-9a-f]{32}\b", lambda m: "j" + uuid.uuid4().hex, text)
        return text.encode()

    def field_value(self, body: bytes) -> bytes:
        rng = self.rng
        name = rng.choice(FIELD_NAMES)
        value = rng.choice(INTERESTING) if rng.random() < 0.8 else self.random_text()
        text = body.decode("utf-8", "surrogateescape")
        if body.lstrip().startswith(b"<"):
            pattern = re.compile(rf"(<{name}>)(.*?)(</{name}>)", re.S)
            replacement = xml_escape(value) if rng.random() < 0.9 else value
        else:
            pattern = re.compile(rf'("{name}"\s*:\s*)("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*|true|false|null)')
            replacement = json.dumps(value) if rng.random() < 0.85 else rng.choice([value, "1", "[]", "{}", '["a","b"]', "1.5", "-0"])
        matches = list(pattern.finditer(text))
        if not matches:
            return body
        m = rng.choice(matches)
        return (text[:m.start(2)] + replacement + text[m.end(2):]).encode("utf-8", "surrogateescape")

    def random_text(self) -> str:
        rng = self.rng
        alphabet = "abcXYZ019 -_:/.\\\"'<>&\u00e9\u4e2d\U0001F600\t\n\r"
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 5, 40, 200])))

    def byte_level(self, body: bytes) -> bytes:
        rng = self.rng
        data = bytearray(body)
        if not data:
            return body
        for _ in range(rng.choice([1, 2, 4])):
            op = rng.randrange(5)
            at = rng.randrange(len(data))
            if op == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                del data[at:at + rng.choice([1, 2, 8, 64])]
            elif op == 2:
                data[at:at] = bytes([rng.randrange(256)])
            elif op == 3:
                end = min(len(data), at + rng.choice([4, 16, 200]))
                data[at:at] = data[at:end]
            else:
                data[at:at] = rng.choice([b"\x00", b"\xff", b"\xc3", b"&#0;", b"&#xD800;", b"\\u0000", b"\\ud800", b"\r\n"])
            if not data:
                break
        return bytes(data)

    def duplicate_field(self, body: bytes) -> bytes:
        text = body.decode("utf-8", "surrogateescape")
        name = self.rng.choice(FIELD_NAMES)
        if body.lstrip().startswith(b"<"):
            m = re.search(rf"<{name}>.*?</{name}>", text, re.S)
        else:
            m = re.search(rf'"{name}"\s*:\s*("(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*)\s*,', text)
        if not m:
            return body
        return (text[:m.end()] + m.group(0) + text[m.end():]).encode("utf-8", "surrogateescape")

    def splice(self, body: bytes) -> bytes:
        other = self.rng.choice(self.seeds)
        if not body or not other:
            return body
        at = self.rng.randrange(len(body))
        start = self.rng.randrange(len(other))
        return body[:at] + other[start:start + self.rng.choice([8, 64, 512])] + body[at:]

    def nest(self, body: bytes) -> bytes:
        depth = self.rng.choice([10, 62, 63, 64, 65, 200])
        if body.lstrip().startswith(b"<"):
            inner = "".join(f"<n{d}>" for d in range(depth)) + "x" + "".join(f"</n{d}>" for d in reversed(range(depth)))
            return body.replace(b"</JobsDetail>", inner.encode() + b"</JobsDetail>", 1)
        inner = '"Nested":' + '{"n":' * depth + "1" + "}" * depth + ","
        return body.replace(b'"JobId"', inner.encode() + b'"JobId"', 1)

    def numeric_entity(self, body: bytes) -> bytes:
        if not body.lstrip().startswith(b"<"):
            return body
        entity = self.rng.choice([b"&#x10FFFF;", b"&#65;", b"&#x0;", b"&#xFFFE;", b"&#1114112;", b"&amp;", b"&unknown;", b"&#x1F600;"])
        return body.replace(b"</Message>", entity + b"</Message>", 1)


class Fuzzer:
    def __init__(self, service: Service, mutator: Mutator, findings: Path, deadline: float):
        self.service = service
        self.mutator = mutator
        self.findings = findings
        self.deadline = deadline
        self.lock = threading.Lock()
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.looked_up = 0
        self.found: list[str] = []

    def finding(self, body: bytes, what: str) -> None:
        digest = hashlib.sha1(body).hexdigest()
        self.findings.mkdir(parents=True, exist_ok=True)
        (self.findings / f"{digest}.body").write_bytes(body)
        (self.findings / f"{digest}.txt").write_text(what + "\n")
        with self.lock:
            self.found.append(f"{what} ({self.findings / digest}.body)")

    def run(self, rng_seed: int) -> None:
        mutator = Mutator(self.mutator.seeds, random.Random(rng_seed))
        while time.monotonic() < self.deadline:
            body = mutator.body()
            content_type = "application/xml" if body.lstrip().startswith(b"<") else "application/json"
            try:
                reply = request("POST", self.service.port, "/v1/callbacks", body, timeout=30, content_type=content_type)
            except OSError as error:
                if self.service.process and self.service.process.poll() is not None:
                    self.finding(body, f"the service exited ({self.service.process.returncode}) on this body")
                    return
                self.finding(body, f"no answer: {error}")
                continue
            with self.lock:
                self.sent += 1
                self.statuses[reply.status] = self.statuses.get(reply.status, 0) + 1
            if reply.status >= 500:
                self.finding(body, f"POST /v1/callbacks answered {reply.status}: {reply.body[:300]!r}")
                continue
            if reply.status != 200:
                continue
            try:
                receipt = reply.json()
            except ValueError:
                self.finding(body, f"200 with a body that is not JSON: {reply.body[:200]!r}")
                continue
            jobs = receipt.get("Jobs", [receipt] if "JobId" in receipt else [])
            for job in jobs:
                job_id = job["JobId"]
                path = "/v1/jobs/" + urllib.parse.quote(job_id, safe="")
                lookup = request("GET", self.service.port, path, timeout=30)
                with self.lock:
                    self.looked_up += 1
                if lookup.status != 200:
                    self.finding(body, f"acknowledged JobId {job_id!r} looks up as {lookup.status}: {lookup.body[:200]!r}")
                else:
                    # The stored detail keeps the field as sent; the JobId the receipt names is it trimmed.
                    stored = lookup.json().get("JobsDetail", {}).get("JobId")
                    if not isinstance(stored, str) or stored.strip(" \t\r\n") != job_id:
                        self.finding(body, f"acknowledged JobId {job_id!r} looks up as a job whose JobId is {stored!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    arguments = parser.parse_args()
    seed = arguments.seed if arguments.seed is not None else random.randrange(1 << 30)
    work = Path(arguments.work)
    work.mkdir(parents=True, exist_ok=True)
    seeds = [path.read_bytes() for path in sorted(VECTORS.iterdir()) if path.suffix in (".xml", ".json")]

    cluster = Cluster(work / "pg", database="ci_callbackd_fuzz")
    cluster.start()
    cluster.reset()
    service = Service(Path(arguments.binary), cluster.url, work / "service.log")
    try:
        service.start()
        fuzzer = Fuzzer(service, Mutator(seeds, random.Random(seed)), work / "findings", time.monotonic() + arguments.seconds)
        threads = [threading.Thread(target=fuzzer.run, args=(seed + index,)) for index in range(arguments.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        service.stop()
        cluster.shutdown()
    statuses = ", ".join(f"{n}×{status}" for status, n in sorted(fuzzer.statuses.items()))
    print(f"fuzz-e2e: {fuzzer.sent} bodies in {arguments.seconds:.0f} s (seed {seed}): {statuses}; "
          f"{fuzzer.looked_up} acknowledged JobIds looked up; {len(fuzzer.found)} findings")
    for finding in fuzzer.found[:20]:
        print(f"fuzz-e2e: finding: {finding}")
    return 1 if fuzzer.found else 0


if __name__ == "__main__":
    sys.exit(main())
