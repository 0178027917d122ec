#!/usr/bin/env python3
"""How far a model's fp16 graph (scripts/fp16_model.py) is from its fp32 one: each
embeds the same texts on the CPU with Python `onnxruntime` (length-sorted runs of at
most 32 texts and 4,096 padded tokens, mean pooling under the mask, L2 normalisation, as the engine does) and the
script prints the cosine of each text's vectors to the fp32 graph's, mean and worst,
as JSON, for two runs of the fp16 graph:

- `cpu`: the fp16 graph as the CPU provider runs it. It has few fp16 kernels and
  computes most operations in fp32 between casts, so this mostly measures the weights'
  rounding;
- `gpu_like`: its twin from `fp16_model.py --rounded-fp32`, where every tensor the
  fp16 graph holds in fp16 is rounded to fp16 and every operation computes in fp32, as
  the CUDA provider's products (fp32 accumulation), LayerNorm and softmax do: the
  estimate of what a GPU's vectors lose, until one is measured.

Fails (exit 1) when a worst cosine is under --min-cosine.

Texts: the parity texts of scripts/parity_reference.py (other scripts, emoji, code,
truncated long texts) and the first --per-set texts of each dev set under
$ZEROSHOT_DATASETS_DIR (`scripts/setup.py --datasets`). ONNX Runtime's CPU provider
runs fp16 graphs with few fp16 kernels (it casts around the rest), slowly: what is
measured here is the arithmetic, not the speed.

Runs in the parity reference's pinned environment (venv-parity), and fp16_model.py
in its own (scripts/setup.py's).

Usage: fp16_check.py FP32_MODEL_DIR FP16_MODEL_DIR [--per-set 100] [--min-cosine 0.999]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parity_reference import REPO, REQUIREMENTS, TEXTS
from pinned_venv import pinned_venv, run_inside
from setup import model_file_name

DEV_SETS = ("banking", "clinc", "stackoverflow")
BATCH = 32
RUN_TOKENS = 4096


def log(msg):
    print(f"fp16_check: {msg}", file=sys.stderr, flush=True)


def texts(per_set):
    found = list(TEXTS)
    root = Path(os.environ.get("ZEROSHOT_DATASETS_DIR",
                               Path.home() / ".cache" / "zeroshot" / "datasets"))
    for name in DEV_SETS:
        lines = (root / name / "dev.tsv").read_text().splitlines()[1:per_set + 1]
        found.extend(line.split("\t")[0] for line in lines)
    return found


def runs(sorted_lengths):
    """Index ranges of at most BATCH texts and RUN_TOKENS padded tokens (as the engine's
    CPU runs: long texts' attention scores stay small)."""
    start = 0
    for i, length in enumerate(sorted_lengths):
        if i > start and (i - start >= BATCH or (i - start + 1) * length > RUN_TOKENS):
            yield range(start, i)
            start = i
    if start < len(sorted_lengths):
        yield range(start, len(sorted_lengths))


def rounded_twin(fp16_graph, out):
    """fp16_model.py --rounded-fp32, in the pinned environment setup.py made it with."""
    from setup import DERIVE_REQUIREMENTS

    script = "scripts/fp16_model.py"
    _, python = pinned_venv("venv-fp16_model", DERIVE_REQUIREMENTS[script], log)
    subprocess.run([str(python), str(REPO / script), "--rounded-fp32", str(fp16_graph),
                    str(out)], check=True)
    return out


def embed(model_dir, items, graph=None):
    """One unit vector per text (float64), in input order, and the seconds it took;
    `graph` replaces the model directory's graph."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    manifest = json.loads((model_dir / "manifest.json").read_text())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=manifest["max_tokens"])
    graph = graph or model_dir / model_file_name(manifest["files"]["model"])
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    names = manifest["inputs"]
    prefix = manifest.get("text_prefix", "")
    encodings = tokenizer.encode_batch([prefix + text for text in items])
    order = sorted(range(len(items)), key=lambda i: len(encodings[i].ids))
    vectors = [None] * len(items)
    started = time.perf_counter()
    for chunk in runs([len(encodings[i].ids) for i in order]):
        chunk = [order[i] for i in chunk]
        width = max(len(encodings[i].ids) for i in chunk)
        ids = np.zeros((len(chunk), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, i in enumerate(chunk):
            ids[row, :len(encodings[i].ids)] = encodings[i].ids
            mask[row, :len(encodings[i].ids)] = 1
        feeds = {names["input_ids"]: ids, names["attention_mask"]: mask}
        if names.get("token_type_ids") in input_names:
            feeds[names["token_type_ids"]] = np.zeros_like(ids)
        (hidden,) = session.run([manifest["output"]], feeds)
        weights = mask.astype(np.float64)[:, :, None]
        pooled = (hidden.astype(np.float64) * weights).sum(axis=1) / weights.sum(axis=1)
        for i, vector in zip(chunk, pooled):
            vectors[i] = vector / np.linalg.norm(vector)
    return vectors, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fp32", type=Path, help="the fp32 model directory")
    parser.add_argument("fp16", type=Path, help="the fp16 model directory")
    parser.add_argument("--per-set", type=int, default=100,
                        help="texts taken from each dev set (default 100)")
    parser.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args()
    run_inside("venv-parity", REQUIREMENTS, log)

    items = texts(args.per_set)
    log(f"{len(items)} texts, {args.fp32.name} against {args.fp16.name}")
    reference, fp32_seconds = embed(args.fp32, items)
    report = {"fp32": args.fp32.name, "fp16": args.fp16.name, "texts": len(items),
              "cpu_seconds": {"fp32": round(fp32_seconds, 2)}}
    manifest = json.loads((args.fp16 / "manifest.json").read_text())
    fp16_graph = args.fp16 / model_file_name(manifest["files"]["model"])
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for run, graph in [("cpu", fp16_graph),
                           ("gpu_like", rounded_twin(fp16_graph, Path(tmp) / "rounded.onnx"))]:
            vectors, seconds = embed(args.fp16, items, graph)
            cosines = [float(a @ b) for a, b in zip(reference, vectors)]
            worst = min(range(len(items)), key=lambda i: cosines[i])
            report[run] = {"mean_cosine": sum(cosines) / len(cosines),
                           "worst_cosine": cosines[worst], "worst_text": items[worst][:80]}
            report["cpu_seconds"][run] = round(seconds, 2)
            failed |= cosines[worst] < args.min_cosine
    print(json.dumps(report, ensure_ascii=False, indent=1))
    if failed:
        log(f"FAIL: a worst cosine is under {args.min_cosine}")
        sys.exit(1)


if __name__ == "__main__":
    main()
