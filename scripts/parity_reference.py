#!/usr/bin/env python3
"""Reference embeddings for the Rust engine's parity test (tests/it/parity.rs).

Computes sentence vectors for ~50 varied texts the independent, straightforward
way: Python `tokenizers` loaded from the model's tokenizer.json (padding off,
truncation at the manifest's max_tokens), one text at a time through Python
`onnxruntime`, mean pooling under the attention mask, L2 normalisation. No
batching, no sorting, no padding: whatever the Rust engine does to go fast must
still land on these vectors.

The reference is made on the machine that runs the test (scripts/test.sh does it
before every run): ONNX Runtime computes differently on different CPU kinds (AVX2
against AVX-512 VNNI moves the default model's vectors by 1 - cos ~1e-3,
docs/models.md#parity), far more than the parity test allows, so a reference made
elsewhere would not test the engine.

Writes --out:
  {"model", "generated_by", "max_tokens", "dim",
   "texts": [{"text", "tokens", "truncated", "embedding": [dim floats]}],
   "rejected": [texts that are empty after trimming; the API must refuse them]}

The launcher part below is stdlib only: it creates (once) a virtual environment
under ${ZEROSHOT_CACHE:-~/.cache/zeroshot}/venv-parity with pinned packages and
re-executes this script inside it.

Usage:
  scripts/setup.py                      # fetch the model first
  scripts/parity_reference.py --out FILE [--model-dir DIR]
Model dir: --model-dir, else $ZEROSHOT_MODELS_DIR/all-minilm-l6-v2-int8-cpu, else
~/.cache/zeroshot/models/all-minilm-l6-v2-int8-cpu.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from pinned_venv import run_inside
from setup import model_file_name

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "all-minilm-l6-v2-int8-cpu"
REQUIREMENTS = ["onnxruntime==1.31.1", "tokenizers==0.23.3", "numpy==2.4.6"]
SIGNIFICANT_DIGITS = 7


def log(msg):
    print(f"parity_reference: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------- texts

LONG_TICKET = (
    "Hello support team, I am writing because our whole accounting department has been "
    "unable to log in since the update you rolled out on Monday morning. Every time we try, "
    "the page spins for about thirty seconds and then shows an error that says the session "
    "could not be established. We have cleared caches, tried three different browsers, "
    "switched networks, and even rebooted the office router, but nothing helps. Meanwhile "
    "our month-end close is due on Friday and we cannot export the ledger or approve the "
    "pending invoices. I also noticed that we were charged twice for the annual plan last "
    "week, once on the 3rd and again on the 4th, which I assume is related to the same "
    "incident. Could you please escalate this, refund the duplicate charge, and tell us when "
    "access will be restored? If there is a workaround such as an API token or a desktop "
    "export, we would be happy to use it in the meantime. Our account number is 4471-AC and "
    "the admin contact is Maria, who can be reached at the usual address. Thank you, and "
    "please treat this as urgent because payroll depends on it as well. "
)

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. "
)

TEXTS = [
    # very short
    "ok",
    "a",
    "?",
    "Hi",
    "refund",
    # normal support tickets / messages
    "I was charged twice for my subscription this month, please refund one of the payments.",
    "The app crashes every time I open the settings page on Android 14.",
    "How do I reset my password? The reset email never arrives.",
    "Great service, the delivery arrived a day early. Thanks!",
    "Please cancel my account and delete all of my personal data under GDPR.",
    "My package has been stuck in customs for two weeks; tracking number RX123456789DE.",
    "Can I upgrade from the Basic plan to Pro without losing my saved projects?",
    "The invoice shows the wrong VAT number for our company.",
    "I love the new dark mode but the font is too small on tablets.",
    "Your chatbot keeps sending me in circles, I want to talk to a human.",
    # long: well over 256 tokens, must be truncated
    LONG_TICKET * 2,
    LOREM * 12,
    "word " * 400,
    "🙂 " * 300,
    # one 300-char "word" (> max_input_chars_per_word = 100): a single [UNK]
    "🙂" * 300,
    # about 254 tokens plus [CLS]/[SEP]: right at the edge
    "cat " * 254,
    "cat " * 255,
    # past the 4 KB the engine keeps before tokenizing (16 bytes per token of 256):
    # a 60 KB document, where the cut text still overflows, and texts whose first 4 KB
    # hold few tokens, where the engine must tokenize the whole text
    LONG_TICKET * 40,
    "start" + " " * 5000 + "end of a text padded with spaces",
    "a" + "\u0301" * 3000 + " b" + " c" * 10,
    # unicode: accents, CJK, Arabic, Cyrillic, Devanagari, Greek, Hebrew, Korean, Thai
    "Crème brûlée, façade, naïve café — déjà vu à São Paulo.",
    "Ich möchte meine Bestellung stornieren, die Größe passt nicht.",
    "我的订单还没有到，请帮我查一下物流信息。",
    "注文した商品がまだ届いていません。確認してください。",
    "결제가 두 번 되었습니다. 환불해 주세요.",
    "لم أستلم طلبي حتى الآن، أرجو المساعدة.",
    "Здравствуйте, я не могу войти в свой аккаунт после обновления.",
    "मेरा ऑर्डर अभी तक नहीं आया है, कृपया मदद करें।",
    "Η παραγγελία μου καθυστερεί πολύ.",
    "ההזמנה שלי לא הגיעה עדיין",
    "สินค้ายังไม่มาถึงครับ",
    "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ﬁ ligatures",
    "e\u0301te\u0301 (combining accents) vs été",
    # emoji-heavy
    "🔥🔥🔥 best update ever 🚀🚀",
    "😡😡 my order is late again!!! 📦❌",
    "👨‍👩‍👧‍👦 family plan? 🇩🇪🇫🇷🇯🇵 ❤️",
    # whitespace: leading/trailing, mixed, inner runs, zero-width only (not trimmed)
    "   leading and trailing spaces   ",
    "\n\tTabs\tand\nnewlines\r\nmixed \t in\n\n",
    "multiple     inner      spaces",
    "\u00a0non-breaking\u00a0space\u3000ideographic space\u2003em space",
    "\u200b",
    "zero\u200bwidth\u200djoiners\ufeffand BOM",
    # code
    "fn main() { println!(\"hello, world\"); }",
    "SELECT id, email FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    "Traceback (most recent call last):\n  File \"app.py\", line 12, in <module>\n    "
    "raise ValueError('bad token')\nValueError: bad token",
    # URLs / emails
    "Contact me at jane.doe+support@example.co.uk or visit https://example.com/help?q=refund&lang=en#top",
    "www.EXAMPLE.org/path/to/Page.HTML",
    # numbers
    "Order #00012345 total $1,299.99 (incl. 19% VAT) on 2024-03-15 at 14:07:33 UTC",
    "3.14159265358979323846264338327950288419716939937510",
    "1 2 3 4 5 6 7 8 9 10",
    # repeated punctuation
    "!!!!!!!!!!!!!!!!!!!!",
    "why?!?!?! ... seriously ....",
    "-----=====*****#####",
    # HTML / markup
    "<p>Hello <b>world</b>, please <a href=\"https://x.io\">click here</a>.</p>",
    "&lt;script&gt;alert('xss')&lt;/script&gt; &amp; &nbsp;",
    "# Title\n\n- item **bold**\n- item _italic_\n\n```json\n{\"a\": 1}\n```",
    # mixed case / shouting
    "URGENT: ACCOUNT LOCKED, NEED ACCESS NOW",
]

# Empty after Rust's str::trim (Unicode White_Space): the API must refuse them.
# U+00A0, U+2003, U+3000, U+2028 and U+0085 are White_Space; U+200B is not (it is in TEXTS).
REJECTED = [
    "",
    " ",
    "   ",
    "\n\t ",
    "\r\n",
    "\u00a0\u3000\u2003",
    "\u2028\u0085 \t",
]


# --------------------------------------------------------------------------- reference


def default_model_dir():
    models = os.environ.get("ZEROSHOT_MODELS_DIR")
    if models:
        return Path(models) / MODEL_NAME
    return Path.home() / ".cache" / "zeroshot" / "models" / MODEL_NAME


def round_sig(value, digits=SIGNIFICANT_DIGITS):
    return float(f"{value:.{digits - 1}e}")


def arguments(doc):
    """--model-dir and --out, as both reference scripts take them."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def write_fixture(out, fixture):
    """The reference file tests/it/parity.rs reads: compact JSON, UTF-8 as is."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


def main():
    args = arguments(__doc__)
    run_inside("venv-parity", REQUIREMENTS, log)

    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    model_dir = args.model_dir or default_model_dir()
    manifest = json.loads((model_dir / "manifest.json").read_text())
    max_tokens = manifest["max_tokens"]
    if manifest["pooling"] != "mean" or not manifest["normalize"]:
        sys.exit(f"parity_reference: expects mean pooling + normalize, manifest says "
                 f"{manifest['pooling']!r}/{manifest['normalize']!r}")
    prefix = manifest.get("text_prefix", "")

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    untruncated = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    untruncated.no_padding()
    untruncated.no_truncation()

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    graph = model_dir / model_file_name(manifest["files"]["model"])
    session = ort.InferenceSession(str(graph), options,
                                   providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    names = manifest["inputs"]

    for text in REJECTED:
        assert not text.strip(), f"rejected text {text!r} is not empty after trimming"
    for text in TEXTS:
        assert text.strip() or text == "\u200b", f"text {text!r} is empty after trimming"

    entries = []
    for text in TEXTS:
        encoding = tokenizer.encode(prefix + text)
        full_length = len(untruncated.encode(prefix + text).ids)
        truncated = full_length > max_tokens
        assert truncated == bool(encoding.overflowing), text
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        feeds = {names["input_ids"]: ids, names["attention_mask"]: mask}
        if names.get("token_type_ids") in input_names:
            feeds[names["token_type_ids"]] = np.array([encoding.type_ids], dtype=np.int64)
        (hidden,) = session.run([manifest["output"]], feeds)
        hidden = hidden[0].astype(np.float64)
        weights = mask[0].astype(np.float64)[:, None]
        vector = (hidden * weights).sum(axis=0) / max(weights.sum(), 1.0)
        vector /= np.linalg.norm(vector)
        entries.append({
            "text": text,
            "tokens": len(encoding.ids),
            "truncated": truncated,
            "embedding": [round_sig(v) for v in vector.tolist()],
        })

    fixture = {
        "model": manifest["name"],
        "generated_by": "scripts/parity_reference.py",
        "reference": "python tokenizers {} + onnxruntime {}, one text per run, "
                     "mean pooling, L2 normalised".format(
                         __import__("tokenizers").__version__, ort.__version__),
        "max_tokens": max_tokens,
        "dim": len(entries[0]["embedding"]),
        "texts": entries,
        "rejected": REJECTED,
    }
    write_fixture(args.out, fixture)
    log(f"wrote {args.out}: {len(entries)} texts "
        f"({sum(e['truncated'] for e in entries)} truncated), {len(REJECTED)} rejected, "
        f"{args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
