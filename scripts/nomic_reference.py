#!/usr/bin/env python3
"""Reference embeddings of `nomic-embed-text-v1.5` for the Rust engine's parity test
(tests/it/parity.rs), from an independent implementation: GPT4All's `Embed4All`
(llama.cpp inside) on the GGUF file our ONNX graph and tokenizer are derived from.
It shares no code with us: its own WordPiece tokenizer, its own NomicBert graph,
f16 weights as stored, its own pooling and normalisation.

Each text is embedded alone with the "classification" task prefix, on the CPU. The
texts are scripts/parity_reference.py's (short, long, other scripts, emoji, code,
markup) except its 60 KB document, plus three long tickets of about 1,000, 1,500 and
2,000 tokens: every text fits the model's 2,048 tokens, since past them GPT4All
averages the chunks of a text where the engine truncates it.

Tokenization: llama.cpp's WordPiece splits and matches words as BERT's does
(lowercase, punctuation and CJK characters as single words, longest-match-first
pieces), but its accent stripping is partial. BERT's normalizer (ours, the one the
model was trained with) decomposes a text (NFD) and drops every nonspacing mark
(Unicode category Mn). llama.cpp's decomposition maps a precomposed letter to its
base letter ("é" -> "e", the same result) but keeps combining marks written as such
("e" + U+0301) and Hangul syllables whole, and a word holding a piece missing from
the vocabulary becomes one [UNK]: measured on these texts, "e\u0301te\u0301",
Korean, Devanagari and "a" + 3,000 U+0301 embed at cosine 0.88-0.96 to ours. So this
script hands GPT4All each text with BERT's accent stripping already applied
(bert_accent_stripping), which leaves nothing for the two to disagree on; the engine
gets the text as it is. Left out: "\u200b" alone (GPT4All warns it chunks the text
into zero tokens and returns a vector for 23 tokens). Not covered: llama.cpp has no
100-character limit per word (BERT's makes such a word one [UNK]).

Writes --out in parity_reference.py's format, with "tokens" as llama.cpp counted
them (its count of the text plus the prefix's and the special tokens' PREFIX_TOKENS)
and no "rejected" texts (the default model's reference covers those).

The launcher part below is stdlib only: it creates (once) a virtual environment
under ${ZEROSHOT_CACHE:-~/.cache/zeroshot}/venv-nomic-reference with pinned packages
and re-executes this script inside it.

Usage:
  scripts/setup.py --model nomic-embed-text-v1.5
  scripts/nomic_reference.py --out FILE [--model-dir DIR]
Model dir: --model-dir, else $ZEROSHOT_MODELS_DIR/nomic-embed-text-v1.5, else
$ZEROSHOT_CACHE/models/nomic-embed-text-v1.5.
"""
import json
import os
import sys
import time
import unicodedata
from importlib.metadata import version
from pathlib import Path

from parity_reference import (LONG_TICKET, SIGNIFICANT_DIGITS, TEXTS, arguments, round_sig,
                              write_fixture)
from pinned_venv import cache_dir, run_inside
from setup import source_file_name

MODEL_NAME = "nomic-embed-text-v1.5"
REQUIREMENTS = [
    "gpt4all==2.8.2", "numpy==2.4.6", "requests==2.34.2", "tqdm==4.70.1",
    "certifi==2026.10.19.post1", "charset-normalizer==3.5.3", "idna==3.20",
    "urllib3==2.8.0",
]
# GPT4All's task prefix; it embeds "classification: TEXT", as the manifest's text_prefix.
TASK = "classification"
# [CLS], "classification", ":" and [SEP]: what n_prompt_tokens leaves out of the count.
PREFIX_TOKENS = 4
MAX_TOKENS = 2048

NOMIC_TEXTS = [text for text in TEXTS if len(text) < 10_000 and text != "\u200b"] + [
    LONG_TICKET * 4,  # ~1,000 tokens
    LONG_TICKET * 6,  # ~1,500 tokens
    # ~2,000 tokens: the model's context, less a margin for the prefix and specials
    (LONG_TICKET * 8)[:9_000].rsplit(" ", 1)[0],
]


def bert_accent_stripping(text):
    """The text decomposed (NFD) without nonspacing marks, as BERT's normalizer makes it
    before matching pieces (see the module's doc)."""
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")


def log(msg):
    print(f"nomic_reference: {msg}", file=sys.stderr)


def main():
    args = arguments(__doc__)
    run_inside("venv-nomic-reference", REQUIREMENTS, log)

    import gpt4all
    import numpy as np

    models = Path(os.environ.get("ZEROSHOT_MODELS_DIR") or cache_dir() / "models")
    model_dir = args.model_dir or models / MODEL_NAME
    manifest = json.loads((model_dir / "manifest.json").read_text())
    if manifest["text_prefix"] != f"{TASK}: ":
        sys.exit(f"nomic_reference: the manifest's text prefix is {manifest['text_prefix']!r}")
    # GPT4All recognises the model (and that it takes task prefixes) by this file name.
    gguf = source_file_name(manifest["files"]["model"])
    embedder = gpt4all.Embed4All(model_name=gguf, model_path=str(model_dir),
                                 allow_download=False, device="cpu")

    started = time.monotonic()
    entries = []
    for text in NOMIC_TEXTS:
        result = embedder.embed(bert_accent_stripping(text), prefix=TASK, return_dict=True)
        tokens = result["n_prompt_tokens"] + PREFIX_TOKENS
        if tokens > MAX_TOKENS:
            sys.exit(f"nomic_reference: {tokens} tokens, more than the model's "
                     f"{MAX_TOKENS}: {text[:60]!r}")
        vector = np.asarray(result["embeddings"], dtype=np.float64)
        vector /= np.linalg.norm(vector)
        entries.append({"text": text, "tokens": tokens, "truncated": False,
                        "embedding": [round_sig(v) for v in vector.tolist()]})

    fixture = {
        "model": MODEL_NAME,
        "generated_by": "scripts/nomic_reference.py",
        "reference": f"gpt4all {version('gpt4all')} Embed4All (llama.cpp, CPU) on {gguf}, "
                     f"one text per call, "
                     f"prefix {TASK!r}, {SIGNIFICANT_DIGITS} significant digits",
        "max_tokens": MAX_TOKENS,
        "dim": len(entries[0]["embedding"]),
        "texts": entries,
    }
    write_fixture(args.out, fixture)
    log(f"wrote {args.out}: {len(entries)} texts, up to "
        f"{max(e['tokens'] for e in entries)} tokens, in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
