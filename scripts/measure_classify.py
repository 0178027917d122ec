#!/usr/bin/env python3
"""Latency of /v1/classify on this machine, through real HTTP to the release binary.

Starts `zeroshot serve` on a throw-away SQLite database and a free port, then
reports the p50/p90 latency of a single short classify call (4 labels) and of a warm
classify of 64 texts (same labels, label vectors cached), measured as wall time of
the whole request from a keep-alive client. Run after scripts/setup.py and a release
build: `eval "$(scripts/setup.py --print-env)" && cargo build --release &&
scripts/measure_classify.py`.
"""
import http.client
import json
import os
import statistics
import sys
import tempfile
import time

from local_server import local_server

LABELS = ["billing", "technical_issue", "feature_request", "account_access"]
TICKETS = [
    "I was charged twice this month",
    "The app crashes when I open settings",
    "Please add an export to CSV",
    "I cannot log in after the password reset",
]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    with tempfile.TemporaryDirectory() as tmp, local_server(tmp) as (base, key, _):
        conn = http.client.HTTPConnection(base.removeprefix("http://"))
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

        def call(body):
            start = time.perf_counter()
            conn.request("POST", "/v1/classify", json.dumps(body), headers)
            response = conn.getresponse()
            payload = response.read()
            elapsed = (time.perf_counter() - start) * 1000
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status}: {payload[:200]}")
            return elapsed

        for _ in range(20):  # warm up: caches, allocator, ORT arenas
            call({"text": TICKETS[0], "labels": LABELS})
        single = [call({"text": TICKETS[i % 4], "labels": LABELS}) for i in range(300)]
        texts = [f"{TICKETS[i % 4]} (ticket {i})" for i in range(64)]
        call({"texts": texts, "labels": LABELS})
        batch = [call({"texts": texts, "labels": LABELS}) for _ in range(30)]
    print(json.dumps({
        "single_short_text_ms": {"p50": round(statistics.median(single), 2),
                                 "p90": round(percentile(single, 0.9), 2), "n": len(single)},
        "warm_64_texts_ms": {"p50": round(statistics.median(batch), 2),
                             "p90": round(percentile(batch, 0.9), 2), "n": len(batch)},
        "cores": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    sys.exit(main())
