#!/usr/bin/env python3
"""Scaling of one batch job over instances (not in CI): the same job on 1 and on 2
`serve` instances sharing one PostgreSQL database and one storage directory, each
instance with `--threads 1` (so two instances use this machine's two cores as two
machines would), side by side in one run. Reports each run's wall time from start to
completed (first pass and assembly included), the speed-up of N instances over one
(target >= 1.7x for two), the per-instance rate, and the projected time of a 5 GB job
on N instances from that rate and the measured scaling.

  eval "$(scripts/setup.py --print-env)" && cargo build --release &&
  scripts/scale_report.py [--megabytes 100] [--instances 1,2] [--no-adapt] [--out scale.json]

Needs PostgreSQL (ZEROSHOT_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test;
a fresh database is created per run and dropped after).
"""
import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from local_server import BINARY, local_server
from perf_report import batch_job, log, write_tickets

ADMIN_URL = os.environ.get("ZEROSHOT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
FIVE_GB = 5 * 1000**3


def psql(sql):
    subprocess.run(["psql", ADMIN_URL, "-qc", sql], check=True, capture_output=True)


@contextlib.contextmanager
def fresh_database():
    name = f"zs_scale_{uuid.uuid4().hex[:12]}"
    psql(f"CREATE DATABASE {name}")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def write_input(path, megabytes):
    """Support tickets up to `megabytes` MB; returns the line count."""
    lines = 0
    with open(path, "w") as out:
        chunk = Path(path).with_suffix(".chunk")
        write_tickets(chunk, 10_000)
        block = chunk.read_text()
        chunk.unlink()
        while out.tell() < megabytes * 1e6:
            out.write(block)
            lines += 10_000
    return lines


def run_job(instances, input_path, args, tmp):
    """One job on `instances` servers; returns its numbers."""
    data_dir = f"{tmp}/shared-data-{instances}"
    flags = ["--threads", str(args.threads), "--shard-bytes", str(args.shard_bytes),
             "--max-upload-bytes", str(10 * 1000**3)]
    with fresh_database() as database_url, contextlib.ExitStack() as servers:
        started = [servers.enter_context(local_server(
            f"{tmp}/instance-{instances}-{i}", flags, binary=args.binary,
            database_url=database_url, data_dir=data_dir)) for i in range(instances)]
        base, key, _ = started[0]
        job = batch_job(base, key, input_path, adapt=args.adapt)
    return {"instances": instances, "seconds": round(job["seconds"], 1),
            "lines": job["texts"], "tokens": job["tokens"],
            "tokens_per_second": round(job["tokens_per_second"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=float, default=100)
    parser.add_argument("--instances", default="1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shard-bytes", type=int, default=None,
                        help="default: a sixteenth of the input, so instances share the shards")
    parser.add_argument("--no-adapt", dest="adapt", action="store_false",
                        help="score without adaptation: its sample (up to 20,000 lines, "
                        "embedded in the first pass by one instance) is the serial part")
    parser.add_argument("--binary", type=Path, default=BINARY)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    counts = [int(n) for n in args.instances.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        input_path = Path(tmp) / "input.ndjson"
        lines = write_input(input_path, args.megabytes)
        size = input_path.stat().st_size
        args.shard_bytes = args.shard_bytes or max(size // 16, 1)
        log(f"input: {size / 1e6:.1f} MB, {lines} lines, shards of {args.shard_bytes} bytes")
        runs = []
        for instances in counts:
            runs.append(run_job(instances, input_path, args, tmp))
            log(f"{instances} instance(s): {runs[-1]}")
    one = next(run for run in runs if run["instances"] == 1)
    per_instance = one["tokens_per_second"]
    tokens_per_byte = one["tokens"] / size
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "input_mb": round(size / 1e6, 1), "lines": lines, "threads": args.threads,
              "shard_bytes": args.shard_bytes, "adapt": args.adapt, "runs": runs, "speedup": {}, "projection_5gb": {}}
    print(f"\n| instances | seconds | tokens/s | speed-up over 1 |\n|---|---|---|---|")
    for run in runs:
        speedup = one["seconds"] / run["seconds"]
        report["speedup"][run["instances"]] = round(speedup, 2)
        print(f"| {run['instances']} | {run['seconds']} | {run['tokens_per_second']:,} | {speedup:.2f}x |")
    # 5 GB at this input's tokens per byte, at the per-instance rate times the measured
    # efficiency of the largest run (assumed to hold beyond it: a projection).
    largest = max(runs, key=lambda run: run["instances"])
    efficiency = report["speedup"][largest["instances"]] / largest["instances"]
    tokens = FIVE_GB * tokens_per_byte
    print(f"\n5 GB job ({tokens / 1e9:.2f} billion tokens at this input's "
          f"{tokens_per_byte:.3f} tokens/byte), at {per_instance:,} tokens/s per instance "
          f"and {efficiency:.0%} scaling efficiency:\n\n| instances | projected time |\n|---|---|")
    for n in (1, 2, 4, 8, 16, 32, 64):
        hours = tokens / (per_instance * n * (1 if n == 1 else efficiency)) / 3600
        report["projection_5gb"][n] = round(hours, 2)
        print(f"| {n} | {hours:.1f} h |" if hours >= 1 else f"| {n} | {hours * 60:.0f} min |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
