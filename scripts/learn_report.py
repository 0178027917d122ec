#!/usr/bin/env python3
"""Saved classifiers that learn, measured through real HTTP against the release binary
(docs/accuracy.md#adapted-classifiers).

For each dev set (`scripts/setup.py --datasets`): a classifier of its label names is
saved, then taught 1, 4 and 8 examples per label from the train set through
`POST /v1/classifiers/{name}/examples` (the first ones in file order), and the whole
dev set is classified through `/v1/classify` after each lesson: macro-F1 per K. Then
the cost of a correction: 10 examples added to a classifier of 200 labels and 1,000
examples, timed as whole requests, right after it was saved (its example vectors in
the server's cache) and after a restart (none cached). Run after a release build:
`eval "$(scripts/setup.py --datasets --print-env)" && cargo build --release &&
scripts/learn_report.py`.
"""
import csv
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from local_server import local_server

SETS = ["banking", "clinc", "stackoverflow"]
STEPS = [1, 4, 8]


def read_tsv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return [(text, label.strip()) for text, label in rows[1:] if text.strip()]


def caller(base, key):
    def call(method, path, body=None):
        request = urllib.request.Request(
            base + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.load(response)
    return call


def macro_f1(truth, predicted):
    labels = sorted(set(truth))
    scores = []
    for label in labels:
        tp = sum(t == p == label for t, p in zip(truth, predicted))
        fp = sum(p == label != t for t, p in zip(truth, predicted))
        fn = sum(t == label != p for t, p in zip(truth, predicted))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def classify_all(call, name, rows):
    predicted = []
    for start in range(0, len(rows), 64):
        texts = [text for text, _ in rows[start:start + 64]]
        answer = call("POST", "/v1/classify", {"texts": texts, "classifier": name})
        predicted += [result["label"] for result in answer["results"]]
    return macro_f1([label for _, label in rows], predicted)


def corrections(call, data_dir, data_set):
    dev = read_tsv(data_dir / data_set / "dev.tsv")
    train = read_tsv(data_dir / data_set / "train.tsv")
    labels = sorted({label for _, label in dev})
    call("POST", "/v1/classifiers", {"name": data_set, "labels": labels})
    row = {"K=0": classify_all(call, data_set, dev)}
    taught = {label: [] for label in labels}
    for k in STEPS:
        lesson = {}
        for text, label in train:
            if label in taught and len(taught[label]) < k and text not in taught[label]:
                taught[label].append(text)
                lesson.setdefault(label, []).append(text)
        call("POST", f"/v1/classifiers/{data_set}/examples", {"examples": lesson})
        row[f"K={k}"] = classify_all(call, data_set, dev)
    return row


def big_classifier(call):
    labels = [f"topic {i:03d}" for i in range(200)]
    examples = {label: [f"a message about {label}, case {j}" for j in range(5)] for label in labels}
    call("POST", "/v1/classifiers", {"name": "big", "labels": labels, "examples": examples})
    return labels


def time_lessons(call, labels, tag, runs):
    times = []
    for run in range(runs):
        lesson = {labels[i]: [f"{tag} correction {run}-{i}"] for i in range(10)}
        started = time.perf_counter()
        call("POST", "/v1/classifiers/big/examples", {"examples": lesson})
        times.append(time.perf_counter() - started)
    return times


def main():
    data_dir = Path(os.environ["ZEROSHOT_DATASETS_DIR"])
    with tempfile.TemporaryDirectory() as tmp:
        with local_server(tmp) as (base, key, _):
            call = caller(base, key)
            print("| macro-F1, dev sets, taught through the API | " + " | ".join(f"K={k}" for k in [0] + STEPS) + " |")
            print("|---|" + "---|" * (len(STEPS) + 1))
            for data_set in SETS:
                row = corrections(call, data_dir, data_set)
                print(f"| {data_set} | " + " | ".join(f"{value:.3f}" for value in row.values()) + " |", flush=True)
            labels = big_classifier(call)
            warm = time_lessons(call, labels, "warm", 5)
        # The same database after a restart: no example vector is cached.
        with local_server(tmp) as (base, _, _):
            cold = time_lessons(caller(base, key), labels, "cold", 1)
    print(f"10 examples added to 200 labels / 1,000 examples: warm median {statistics.median(warm) * 1000:.0f} ms "
          f"(of {len(warm)}), first after a restart {cold[0] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
