#!/usr/bin/env python3
"""Soak test (not in CI): /v1/classify at 64 keep-alive clients for 10 minutes while a
batch job runs, on the embedded default (SQLite + local storage in a temp directory).

Starts the release binary itself, takes the API key it prints, and keeps one batch job
of synthetic support tickets running the whole time (a new one is submitted when the
last completes; completed jobs are deleted). The clients post realistic bodies: texts
from tests/fixtures/tickets.tsv and synthetic tickets, one text or several, 3-20
labels, `single` and `multi`, some with `source_type`, descriptions or examples.

Every --interval it prints one line: elapsed, requests, p50/p99 of the 200s in that
interval, status counts, server RSS (VmRSS) and the batch job's progress. The verdict
is PASS when nothing but 200 and 503 `overloaded` (the documented overload answer)
came back, no batch job failed, and RSS at the end is under 110% of RSS after
warm-up (the first sample after --warmup seconds and the first batch job's end: a
job's working memory, some 100 MB, comes and goes with its phases; when no job ends
in time, the first sample after --warmup). The samples and summary go to --out as JSON.

  eval "$(scripts/setup.py --print-env)" && cargo build --release &&
  scripts/soak.py [--duration 600] [--clients 64] [--out soak.json]
"""
import argparse
import collections
import csv
import datetime
import http.client
import json
import random
import sys
import tempfile
import threading
import time
import urllib.error
from pathlib import Path

from local_server import BINARY, REPO, local_server
from measure_classify import percentile
from perf_report import JOB_LINES, request, start_batch_job, ticket, write_tickets

LABEL_POOL = ["billing", "refund", "technical_issue", "bug_report", "feature_request",
              "account_access", "shipping", "cancellation", "praise", "other",
              "invoice", "password_reset", "login_problem", "performance", "data_export",
              "integration", "security", "privacy", "pricing", "subscription",
              "mobile_app", "notifications", "delivery_delay", "damaged_item", "complaint",
              "onboarding", "documentation", "outage", "upgrade", "downgrade"]
DESCRIPTIONS = {"billing": "charges, payments and invoices",
                "technical_issue": "something in the product is broken or fails",
                "feature_request": "asks for something the product does not do yet",
                "refund": "wants money back", "outage": "the service is down for everyone"}
SOURCE_TYPES = ["support ticket", "customer email", "chat message"]


def realistic_texts(rng):
    """The fixture's hand-written tickets and synthetic 20-80 word ones, mixed."""
    with open(REPO / "tests" / "fixtures" / "tickets.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return rows, [row["text"] for row in rows] + [ticket(rng) for _ in range(200)]


def request_bodies(count, seed=16):
    """`count` encoded /v1/classify bodies, varied: 1 or 2-8 texts, 3-20 labels out of
    a pool of 30 (so the 64-set cache keeps evicting), single or multi, some with
    source_type, descriptions or examples."""
    rng = random.Random(seed)
    rows, texts = realistic_texts(rng)
    examples = collections.defaultdict(list)
    for row in rows:
        examples[row["label"]].append(row["text"])
    bodies = []
    for _ in range(count):
        labels = rng.sample(LABEL_POOL, rng.randint(3, 20))
        body = {"labels": labels}
        if rng.random() < 0.6:
            body["text"] = rng.choice(texts)
        else:
            body["texts"] = rng.sample(texts, rng.randint(2, 8))
        if rng.random() < 0.3:
            body["mode"] = "multi"
            body["threshold"] = rng.choice([0.2, 0.3, 0.5])
        if rng.random() < 0.5:
            body["source_type"] = rng.choice(SOURCE_TYPES)
        described = {label: DESCRIPTIONS[label] for label in labels if label in DESCRIPTIONS}
        if described and rng.random() < 0.2:
            body["descriptions"] = described
        with_examples = [label for label in labels if label in examples]
        if with_examples and rng.random() < 0.05:
            body["examples"] = {label: examples[label][:2] for label in with_examples}
        bodies.append(json.dumps(body).encode())
    return bodies


class Results:
    """What the clients saw, per interval (swapped out by the sampler) and in total."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.statuses = collections.Counter()
        self.total_statuses = collections.Counter()
        self.all_latencies = []

    def add(self, status, latency_ms):
        with self.lock:
            self.statuses[status] += 1
            self.total_statuses[status] += 1
            if status == "200":
                self.latencies.append(latency_ms)

    def take(self):
        with self.lock:
            latencies, statuses = self.latencies, self.statuses
            self.latencies, self.statuses = [], collections.Counter()
        self.all_latencies.extend(latencies)
        return latencies, statuses


def client(base, key, bodies, offset, results, stop):
    """One keep-alive connection posting bodies in turn until `stop`; a non-200 is
    counted as "STATUS error-type", a broken connection as "connection_error"."""
    host = base.removeprefix("http://")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection(host, timeout=300)
    i = offset
    while not stop.is_set():
        body = bodies[i % len(bodies)]
        i += 1
        start = time.perf_counter()
        try:
            conn.request("POST", "/v1/classify", body, headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            results.add("connection_error", None)
            conn.close()
            conn = http.client.HTTPConnection(host, timeout=300)
            continue
        latency_ms = (time.perf_counter() - start) * 1000
        status = str(response.status)
        if response.status != 200:
            try:
                status += " " + json.loads(payload)["error"]["type"]
            except (ValueError, KeyError, TypeError):
                status += " (no error body)"
            if response.status == 503:
                time.sleep(float(response.getheader("Retry-After") or 1))
        results.add(status, latency_ms)
    conn.close()


class BatchKeeper:
    """Keeps one batch job processing: polls it, and when it ends records it, deletes
    it and starts the next one on the same file."""

    def __init__(self, base, key, input_path):
        self.base, self.key, self.input_path = base, key, input_path
        self.lock = threading.Lock()
        self.finished = []  # {job_id, status, lines, error, seconds}
        self.current = None
        self.job_id, self.started = start_batch_job(base, key, input_path)

    def run(self, stop):
        while not stop.is_set():
            try:
                state = request(self.base, self.key, "GET", f"/v1/batch/{self.job_id}")
            except (urllib.error.URLError, OSError) as err:
                state = {"status": f"poll error: {err}"}
            ended = state.get("status") in ("completed", "failed", "cancelled")
            with self.lock:  # one step, so that progress() never counts a job twice
                self.current = None if ended else state
                if ended:
                    self.finished.append({
                        "job_id": self.job_id, "status": state["status"],
                        "lines": state.get("requests_completed") or 0,
                        "error": state.get("error"),
                        "seconds": round(time.perf_counter() - self.started, 1)})
            if ended:
                try:
                    request(self.base, self.key, "DELETE", f"/v1/batch/{self.job_id}")
                    self.job_id, self.started = start_batch_job(self.base, self.key,
                                                                self.input_path)
                except Exception as err:  # counted as a failed job: no job runs any more
                    with self.lock:
                        self.finished.append({"job_id": None, "status": f"error: {err}",
                                              "lines": 0, "error": str(err), "seconds": 0})
                    return
            stop.wait(1)

    def progress(self):
        """(jobs finished, lines scored by every job so far, the current job's state)."""
        with self.lock:
            state = dict(self.current or {})
            done = sum(job["lines"] for job in self.finished)
            scored = done + (state.get("requests_completed") or 0)
            return len(self.finished), scored, state


def rss_mb(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def describe_job(state):
    if not state:
        return "job -"
    progress = state.get("progress") or {}
    return (f"job {state.get('status')} {state.get('requests_completed') or 0}/"
            f"{state.get('requests_total') or '?'} "
            f"({progress.get('lines_per_second') or 0:.0f} lines/s)")


def log_levels(log_path):
    """Counts of the server log's levels and its first warnings and errors."""
    levels, notable = collections.Counter(), []
    with open(log_path, errors="replace") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                levels["unparsed"] += 1
                continue
            levels[event.get("level", "?")] += 1
            if event.get("level") in ("WARN", "ERROR") and len(notable) < 20:
                notable.append(event)
    return dict(levels), notable


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=str(BINARY))
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--interval", type=float, default=10, help="seconds per sample")
    parser.add_argument("--warmup", type=float, default=60,
                        help="RSS growth is measured from the first sample at or after this "
                             "that follows the first batch job's completion")
    parser.add_argument("--job-lines", type=int, default=JOB_LINES,
                        help="lines per batch job; 0: no batch job (to compare)")
    parser.add_argument("--out", default="soak.json")
    args = parser.parse_args()

    bodies = request_bodies(4000)
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        job_input = Path(tmp) / "job.ndjson"
        write_tickets(job_input, args.job_lines)
        with open(log_path, "w") as log, local_server(
                tmp, ["--log-format", "json"], binary=args.binary,
                stderr=log) as (base, key, server):
            print(f"soak: {args.binary} pid {server.pid} at {base}, {args.clients} clients, "
                  f"{args.duration:.0f} s, batch jobs of {args.job_lines} lines", flush=True)
            stop = threading.Event()
            results = Results()
            keeper = BatchKeeper(base, key, job_input) if args.job_lines else None
            threads = [threading.Thread(target=keeper.run, args=(stop,), daemon=True)
                       for _ in [keeper] if keeper]
            threads += [threading.Thread(target=client, daemon=True,
                                         args=(base, key, bodies, 61 * n, results, stop))
                        for n in range(args.clients)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            requests = 0
            while (elapsed := time.perf_counter() - start) < args.duration:
                time.sleep(min(args.interval, args.duration - elapsed))
                elapsed = time.perf_counter() - start
                latencies, statuses = results.take()
                requests += sum(statuses.values())
                jobs_done, scored, state = keeper.progress() if keeper else (0, 0, {})
                sample = {
                    "elapsed_s": round(elapsed, 1), "requests": requests,
                    "interval_requests": sum(statuses.values()),
                    "p50_ms": round(percentile(latencies, 0.5), 1) if latencies else None,
                    "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
                    "statuses": dict(statuses), "rss_mb": round(rss_mb(server.pid), 1),
                    "batch_jobs_finished": jobs_done, "batch_lines_scored": scored,
                    "batch_job": {k: state.get(k) for k in
                                  ("job_id", "status", "requests_completed", "requests_total")},
                }
                samples.append(sample)
                codes = " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))
                print(f"{elapsed:6.0f} s  {requests:7d} req  p50 {sample['p50_ms']} ms  "
                      f"p99 {sample['p99_ms']} ms  [{codes}]  RSS {sample['rss_mb']:.0f} MB  "
                      f"{describe_job(state)}  jobs done {jobs_done}, lines {scored}",
                      flush=True)
            stop.set()
            for thread in threads:
                thread.join(timeout=90)
            peak_rss = rss_mb(server.pid, "VmHWM")
        levels, notable = log_levels(log_path)

    # Warm once --warmup has passed and a batch job has gone through every phase (first
    # pass, adaptation, chunks, results): a job's working memory comes and goes with it.
    after_warmup = [s for s in samples if s["elapsed_s"] >= args.warmup] or samples[-1:]
    warm = next((s for s in after_warmup if s["batch_jobs_finished"]), after_warmup[0])
    end = samples[-1]
    growth = end["rss_mb"] / warm["rss_mb"] - 1
    statuses = dict(results.total_statuses)
    unexpected = {k: v for k, v in statuses.items() if k not in ("200", "503 overloaded")}
    finished_jobs = keeper.finished if keeper else []
    failed_jobs = [job for job in finished_jobs if job["status"] != "completed"]
    p50s = [s["p50_ms"] for s in samples if s["p50_ms"] is not None]
    p99s = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
    verdict = "PASS" if not unexpected and not failed_jobs and growth < 0.10 else "FAIL"
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "binary": args.binary, "clients": args.clients, "duration_s": args.duration,
        "warmup_s": args.warmup, "requests": sum(statuses.values()), "statuses": statuses,
        "requests_per_second": round(sum(statuses.values()) / end["elapsed_s"], 1),
        "p50_ms": round(percentile(results.all_latencies, 0.5), 1) if p50s else None,
        "p99_ms": round(percentile(results.all_latencies, 0.99), 1) if p99s else None,
        "interval_p50_ms_range": [min(p50s), max(p50s)] if p50s else None,
        "interval_p99_ms_range": [min(p99s), max(p99s)] if p99s else None,
        "rss_after_warmup_mb": warm["rss_mb"], "rss_after_warmup_at_s": warm["elapsed_s"],
        "rss_end_mb": end["rss_mb"], "rss_growth_percent": round(growth * 100, 1),
        "rss_peak_mb": round(peak_rss, 1),
        "rss_max_after_warmup_mb": max(s["rss_mb"] for s in samples[samples.index(warm):]),
        "batch_lines_scored": end["batch_lines_scored"], "batch_jobs": finished_jobs,
        "server_log_levels": levels, "server_log_warnings": notable,
        "unexpected_statuses": unexpected, "verdict": verdict,
    }
    Path(args.out).write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "server_log_warnings"}, indent=2))
    for event in notable:
        print(f"server {event.get('level')}: {event.get('message')} {json.dumps(event)[:300]}")
    print(f"soak: {verdict} (RSS {warm['rss_mb']:.0f} MB at {warm['elapsed_s']:.0f} s -> "
          f"{end['rss_mb']:.0f} MB, {growth:+.1%}; unexpected statuses {unexpected or 'none'}; "
          f"failed batch jobs {len(failed_jobs)})")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
