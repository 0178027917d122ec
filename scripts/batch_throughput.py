#!/usr/bin/env python3
"""Throughput of one batch job end to end on the embedded default (local storage,
SQLite), through real HTTP: create, upload (curl -F, as a user would), start, poll to
completed. Prints lines/s, tokens/s and the server's peak RSS (VmHWM).

The input is N synthetic support tickets of 20-80 words drawn from a fixed seed, so
runs are comparable. Run after scripts/setup.py and a release build:
  eval "$(scripts/setup.py --print-env)" && cargo build --release &&
  scripts/batch_throughput.py --lines 100000
"""
import argparse
import json
import os
import random
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from local_server import local_server

LABELS = ["billing", "refund", "technical_issue", "bug_report", "feature_request",
          "account_access", "shipping", "cancellation", "praise", "other"]
OPENERS = ["Hi team,", "Hello,", "Hey support,", "Good morning,", "To whom it may concern,", ""]
TOPICS = [
    "I was charged twice for my subscription this month and need the extra payment refunded",
    "the app crashes every time I open the settings page on my phone after the latest update",
    "I cannot log in because the password reset email never arrives in my inbox",
    "my order has not arrived yet although the tracking page said it was delivered last week",
    "it would be great if you could add an export to CSV option for the monthly reports",
    "I want to cancel my plan at the end of the current billing period",
    "your support agent was incredibly helpful and solved my problem in minutes",
    "the invoice shows a late fee that I do not understand since I paid on time",
    "search results load very slowly and sometimes the page times out completely",
    "please add dark mode and keyboard shortcuts to the web dashboard",
]
FILLER = ("this has happened several times now and I already tried restarting clearing the cache "
          "and reinstalling but nothing seems to help so I would really appreciate a quick answer "
          "because my whole team depends on this every single day").split()


def ticket(rng):
    words = f"{rng.choice(OPENERS)} {rng.choice(TOPICS)}".split()
    target = rng.randint(20, 80)
    while len(words) < target:
        words.append(rng.choice(FILLER))
    return " ".join(words[:target]) + rng.choice([".", "!", "?", ". Thanks."])


def request(base, key, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read() or b"null")


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as tmp:
        input_path = Path(tmp) / "tickets.ndjson"
        with open(input_path, "w") as f:
            for i in range(args.lines):
                f.write(json.dumps({"id": f"ticket-{i}", "text": ticket(rng)}) + "\n")
        input_mb = input_path.stat().st_size / 1e6
        with local_server(tmp) as (base, key, server):
            job = request(base, key, "POST", "/v1/batch", {"labels": LABELS, "source_type": "support ticket"})
            form = [arg for name, value in job["upload_fields"].items() for arg in ("-F", f"{name}={value}")]
            subprocess.run(["curl", "-sf", *form, "-F", f"file=@{input_path}", job["upload_url"]], check=True)
            started = time.perf_counter()
            request(base, key, "POST", f"/v1/batch/{job['job_id']}/start")
            while True:
                state = request(base, key, "GET", f"/v1/batch/{job['job_id']}")
                if state["status"] in ("completed", "failed"):
                    break
                time.sleep(0.5)
            elapsed = time.perf_counter() - started
            rss = peak_rss_mb(server.pid)
    print(json.dumps({
        "status": state["status"],
        "lines": state["requests_total"],
        "input_mb": round(input_mb, 1),
        "seconds": round(elapsed, 1),
        "lines_per_second": round(state["requests_completed"] / elapsed, 1),
        "tokens_per_second": round((state["actual_tokens"] or 0) / elapsed),
        "actual_tokens": state["actual_tokens"],
        "estimated_tokens": state["estimated_tokens"],
        "server_peak_rss_mb": round(rss, 1) if rss else None,
        "cores": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
