#!/usr/bin/env python3
"""`/v1/classify` under load with a real HTTP load generator (oha, from crates.io;
installed with `cargo install oha --locked` when missing): p50/p99 latency and
throughput at 1, 16 and 64 concurrent clients, with the dynamic batcher on (the
default) and off (`--max-batch-texts 1`), side by side in one run.
Run after scripts/setup.py and a release build:
  eval "$(scripts/setup.py --print-env)" && cargo build --release && scripts/load_classify.py
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from local_server import local_server

LABELS = ["billing", "technical_issue", "feature_request", "account_access"]
TEXT = "I was charged twice for my subscription this month, please refund the payment"


def oha_binary():
    found = shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")
    if not os.path.exists(found):
        subprocess.run(["cargo", "install", "oha", "--locked"], check=True)
    return found


def load(oha, base, key, clients, seconds):
    body = json.dumps({"text": TEXT, "labels": LABELS})
    out = subprocess.run(
        [oha, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(clients),
         "-m", "POST", "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
         "-d", body, f"{base}/v1/classify"],
        check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    latency = report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    return {
        "clients": clients,
        "requests_per_second": round(report["summary"]["requestsPerSec"], 1),
        "p50_ms": round(latency["p50"] * 1000, 2),
        "p99_ms": round(latency["p99"] * 1000, 2),
        "status_codes": codes,
    }


def main():
    oha = oha_binary()
    seconds = int(os.environ.get("LOAD_SECONDS", "10"))
    results = {}
    for name, extra in [("batched", []), ("unbatched", ["--max-batch-texts", "1"])]:
        with tempfile.TemporaryDirectory() as tmp, local_server(tmp, extra) as (base, key, _):
            load(oha, base, key, 4, 2)  # warm up
            results[name] = [load(oha, base, key, c, seconds) for c in (1, 16, 64)]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
