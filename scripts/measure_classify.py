#!/usr/bin/env python3
"""Latency of /v1/classify on this machine, through real HTTP to the release binary.

Starts `zeroshot serve` on a throw-away SQLite database and a free port, then
reports the p50/p90 latency of a single short classify call (4 labels) and of a warm
classify of 64 texts (same labels, label vectors cached), measured as wall time of
the whole request from a keep-alive client; then one short text against 200 labels:
inline with a cold label cache, inline warm, and saved as a classifier. Run after scripts/setup.py and a release
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
AREAS = ["billing", "refund", "login", "password", "shipping", "delivery", "invoice", "subscription",
         "mobile app", "website", "api", "export", "import", "search", "notifications", "privacy",
         "security", "account", "payment card", "bank transfer"]
ASPECTS = ["question", "problem", "error", "request", "complaint", "feedback", "delay", "change",
           "cancellation", "upgrade"]
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

        # 200 labels: inline with a cold label cache (a new set each time), inline warm,
        # and the same 200 labels saved as a classifier (vectors stored at save time).
        def many_labels(trial):
            return [f"{a} {b} {trial}" for a in AREAS for b in ASPECTS][:200]

        cold_inline = [call({"text": TICKETS[0], "labels": many_labels(f"t{t}")}) for t in range(10)]
        warm_labels = many_labels("warm")
        call({"text": TICKETS[0], "labels": warm_labels})
        warm_inline = [call({"text": TICKETS[i % 4], "labels": warm_labels}) for i in range(100)]
        two_labels = [call({"text": TICKETS[i % 4], "labels": LABELS[:2]}) for i in range(100)]
        save_ms = []
        for t in range(5):
            start = time.perf_counter()
            conn.request("POST", "/v1/classifiers", json.dumps({"name": f"router-{t}", "labels": many_labels(f"s{t}")}), headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 201, response.status
            save_ms.append((time.perf_counter() - start) * 1000)
        first_saved = [call({"text": TICKETS[0], "classifier": f"router-{t}"}) for t in range(5)]
        warm_saved = [call({"text": TICKETS[i % 4], "classifier": "router-0"}) for i in range(100)]
    print(json.dumps({
        "single_short_text_ms": {"p50": round(statistics.median(single), 2),
                                 "p90": round(percentile(single, 0.9), 2), "n": len(single)},
        "warm_64_texts_ms": {"p50": round(statistics.median(batch), 2),
                             "p90": round(percentile(batch, 0.9), 2), "n": len(batch)},
        "labels_200": {
            "inline_cold_p50_ms": round(statistics.median(cold_inline), 2),
            "inline_warm_p50_ms": round(statistics.median(warm_inline), 2),
            "saved_first_call_p50_ms": round(statistics.median(first_saved), 2),
            "saved_warm_p50_ms": round(statistics.median(warm_saved), 2),
            "save_classifier_p50_ms": round(statistics.median(save_ms), 2),
            "two_labels_p50_ms": round(statistics.median(two_labels), 2),
        },
        "cores": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    sys.exit(main())
