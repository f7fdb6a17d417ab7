"""A webhook consumer for the integration tests: an HTTP server that verifies every delivery with the
`standardwebhooks` library, as a real consumer does, and answers as the test asks.

    python webhook_consumer.py --dir DIR [--port N]

It prints `listening PORT` once it accepts connections. Secrets come from DIR/secrets.json
({"<path>": "whsec_…"}, re-read for every request), so a test can create the subscription first.
Each request is appended to DIR/deliveries.jsonl as one JSON object: path, webhook-id, the
webhook-timestamp, whether it verified, the job and state it carried, and the status answered.

The path tells how to answer:
  /ok/NAME                    200
  /fail/N/NAME                500 for the first N deliveries of each webhook-id, then 200
  /gone/NAME                  410
  /retry-after/S/NAME         429 with Retry-After: S for the first delivery of each id, then 200
  /hang/NAME                  sleeps (the sender times out or dies) for the first delivery of each id, then 200
"""
import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

lock = threading.Lock()
seen = {}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            path = self.path
            with open(os.path.join(args.dir, "secrets.json")) as f:
                secrets = json.load(f)
            secret = secrets.get(path)
            headers = {k: self.headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
            verified = False
            job = state = None
            try:
                payload = Webhook(secret).verify(body, headers)
                verified = True
                job = payload["data"]["JobsDetail"]["JobId"]
                state = payload["data"]["JobsDetail"]["State"]
            except (WebhookVerificationError, TypeError, KeyError, ValueError) as error:
                sys.stderr.write(f"consumer: verification failed on {path}: {error!r}\n")
            msg = headers["webhook-id"]
            with lock:
                count = seen.get((path, msg), 0) + 1
                seen[(path, msg)] = count
            parts = path.strip("/").split("/")
            status, extra = 200, {}
            if not verified:
                status = 400
            elif parts[0] == "fail" and count <= int(parts[1]):
                status = 500
            elif parts[0] == "gone":
                status = 410
            elif parts[0] == "retry-after" and count == 1:
                status, extra = 429, {"Retry-After": parts[1]}
            elif parts[0] == "hang" and count == 1:
                record(args.dir, path, headers, verified, job, state, "hung", body)
                time.sleep(3600)
                return
            record(args.dir, path, headers, verified, job, state, status, body)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


def record(directory, path, headers, verified, job, state, status, body):
    line = json.dumps({
        "path": path, "id": headers["webhook-id"], "timestamp": headers["webhook-timestamp"], "verified": verified,
        "job": job, "state": state, "status": status, "received": time.time(), "body": body.decode("utf-8", "replace"),
    })
    with lock:
        with open(os.path.join(directory, "deliveries.jsonl"), "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
