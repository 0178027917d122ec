#!/usr/bin/env bash
# The batch path on an NVIDIA GPU against the model's ceiling there, as a ratio, for a
# machine that may reach no registry and takes files only in pieces of at most 64 MiB
# (README "GPU"). Four steps, the first on a machine with the registries and a Rust
# build, the others on the GPU machine, from a copy of this repository:
#
#   scripts/gpu_check.sh pack          here: after `scripts/setup.py --gpu`, builds the
#        release binary and benches/ceiling.rs, packs ONNX Runtime's CUDA build with
#        the CUDA libraries (runtime.tar.xz) and the binaries, fp16 model and docs UI
#        (app.tar.xz), cuts both into pieces of at most 60 MiB under .gpu-bundle/ with
#        their sha256 in .gpu-bundle/SHA256SUMS, and prints the calls that follow.
#        The runtime archive is kept while its files stay the same.
#   scripts/gpu_check.sh probe         there: driver, GPU, glibc and the tools used
#        below, before any piece is sent.
#   scripts/gpu_check.sh receive PIECE...   there: checks each piece's sha256 and
#        moves it to the stash ($ZEROSHOT_GPU_STASH, default ~/.cache/zeroshot-gpu),
#        which a warm machine keeps between calls; says which pieces are still missing.
#   scripts/gpu_check.sh run [--device cuda|cpu] [--lines N]   there: puts each
#        archive together, checks its sha256, unpacks it and measures:
#        1. one `zeroshot classify` on the device (fails at once when the CUDA
#           provider cannot load: driver, missing library);
#        2. scripts/perf_report.py --sections batch,ceiling: a real `zeroshot serve`
#           batch job of N synthetic tickets (upload, start, poll to completed;
#           SQLite, local storage, adaptation on, as a user runs it) next to
#           benches/ceiling.rs, the ONNX session alone on the same texts pre-tokenized
#           and length-sorted in the engine's runs (nothing else in the loop);
#        3. the ceiling again at other --onnx-run-tokens budgets, to show where the
#           device stops gaining from larger runs.
#        Prints a Markdown table and writes everything to $OUT (or .gpu-bundle/out)
#        as gpu_check.json. `--device cpu` runs the same steps on the CPU (the CUDA
#        build's CPU provider, the fp16 model, fewer lines): a dry run of everything
#        but the GPU.
#
# Needs there: bash, coreutils, tar, python3 (standard library only), curl (the
# upload), and xz or python3's lzma; an NVIDIA driver for CUDA 13 (580 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUNDLE=$REPO/.gpu-bundle
STASH=${ZEROSHOT_GPU_STASH:-$HOME/.cache/zeroshot-gpu}
CACHE=${ZEROSHOT_CACHE:-$HOME/.cache/zeroshot}
PIECE_BYTES=$((60 * 1024 * 1024))
MODEL=all-minilm-l6-v2-fp16
SWEEP_TOKENS=(4096 16384 65536)

log() { echo "gpu_check: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ------------------------------------------------------------------------ pack (here)

pack() {
  local runtime_dir=$CACHE/onnxruntime-gpu/1.31.1 target=${CARGO_TARGET_DIR:-$REPO/target}
  [ -f "$runtime_dir/libonnxruntime_providers_cuda.so" ] ||
    die "no $runtime_dir: run scripts/setup.py --gpu first"
  [ -f "$CACHE/models/$MODEL/manifest.json" ] || die "no $MODEL: run scripts/setup.py --gpu first"
  mkdir -p "$BUNDLE"
  log "building the release binary and benches/ceiling.rs"
  cargo build --release --locked --bin zeroshot >&2
  local ceiling
  ceiling=$(cargo bench --locked --bench ceiling --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ceiling" and m.get("executable"):
        print(m["executable"])')
  [ -x "$ceiling" ] || die "cargo bench --no-run made no ceiling executable"

  # The runtime: the same files `setup.py --gpu` verified, packed again only when they change.
  local sums
  sums=$(cd "$runtime_dir" && sha256sum -- *)
  if [ ! -f "$BUNDLE/runtime.tar.xz" ] || [ "$(cat "$BUNDLE/runtime.files" 2>/dev/null)" != "$sums" ]; then
    log "packing $(du -sh "$runtime_dir" | cut -f1) of ONNX Runtime and CUDA libraries (xz, minutes)"
    tar -C "$runtime_dir" -cf - --sort=name . | xz -6 -T2 > "$BUNDLE/runtime.tar.xz.part"
    mv "$BUNDLE/runtime.tar.xz.part" "$BUNDLE/runtime.tar.xz"
    echo "$sums" > "$BUNDLE/runtime.files"
  fi

  local app
  app=$(mktemp -d)
  mkdir -p "$app/release" "$app/models" "$app/docs-ui"
  cp "$target/release/zeroshot" "$app/release/zeroshot"
  cp "$ceiling" "$app/release/ceiling"
  # The release profile keeps debug info (195 MB of the 200 MB binary): not needed there.
  strip --strip-debug "$app/release/zeroshot" "$app/release/ceiling"
  cp -r "$CACHE/models/$MODEL" "$app/models/"
  cp "$CACHE/docs-ui/"* "$app/docs-ui/"
  (cd "$app" && sha256sum release/* models/*/* docs-ui/* > APP.SHA256SUMS)
  log "packing the binaries, $MODEL and the docs UI"
  tar -C "$app" -cf - --sort=name . | xz -6 -T2 > "$BUNDLE/app.tar.xz"
  rm -rf "$app"

  rm -f "$BUNDLE"/*.tar.xz.[0-9][0-9] "$BUNDLE/SHA256SUMS"
  local archive
  for archive in runtime app; do
    split -b "$PIECE_BYTES" -d -a 2 "$BUNDLE/$archive.tar.xz" "$BUNDLE/$archive.tar.xz."
  done
  (cd "$BUNDLE" && sha256sum runtime.tar.xz app.tar.xz ./*.tar.xz.[0-9][0-9] |
    sed 's#  \./#  #' > SHA256SUMS)
  local pieces
  pieces=$(cd "$BUNDLE" && ls ./*.tar.xz.[0-9][0-9] | sed 's#^\./##')
  log "runtime.tar.xz $(du -h "$BUNDLE/runtime.tar.xz" | cut -f1), app.tar.xz" \
    "$(du -h "$BUNDLE/app.tar.xz" | cut -f1): $(echo "$pieces" | wc -l) pieces of at most 60 MiB"
  echo "# on the GPU machine, one call each, back to back (a machine left idle is handed back):"
  echo "scripts/gpu_check.sh probe"
  local piece
  for piece in $pieces; do
    echo "carry [.gpu-bundle/$piece, .gpu-bundle/SHA256SUMS]: scripts/gpu_check.sh receive .gpu-bundle/$piece"
  done
  echo "carry [.gpu-bundle/SHA256SUMS]: scripts/gpu_check.sh run --device cuda"
}

# ----------------------------------------------------------------------- probe (there)

probe() {
  echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "glibc: $(getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown) (the binaries need 2.34 or newer)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader |
      sed 's/^/gpu: /'
    nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | sed 's/^/driver supports /' || true
  else
    echo "gpu: no nvidia-smi"
  fi
  ldconfig -p 2>/dev/null | grep -E 'libcuda\.so\.1|libcublasLt\.so\.13|libcudnn\.so\.9' |
    sed 's/^\s*/found: /' || true
  local tool
  for tool in python3 curl xz tar sha256sum; do
    printf '%s: %s\n' "$tool" "$(command -v "$tool" || echo MISSING)"
  done
  echo "stash $STASH: $(ls "$STASH/pieces" 2>/dev/null | wc -l) pieces"
  df -h "$HOME" | tail -1 | awk '{print "disk free under $HOME: " $4}'
}

# --------------------------------------------------------------------- receive (there)

expected_sha() { awk -v name="$1" '$2 == name {print $1}' "$BUNDLE/SHA256SUMS"; }

receive() {
  [ -f "$BUNDLE/SHA256SUMS" ] || die "no .gpu-bundle/SHA256SUMS: carry it with each piece"
  mkdir -p "$STASH/pieces"
  cp "$BUNDLE/SHA256SUMS" "$STASH/SHA256SUMS"
  local piece name want got
  for piece in "$@"; do
    name=$(basename "$piece")
    want=$(expected_sha "$name")
    [ -n "$want" ] || die "$name is not in SHA256SUMS"
    got=$(sha256sum "$piece" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$name: sha256 $got, expected $want: send it again"
    mv "$piece" "$STASH/pieces/$name"
    log "received $name"
  done
  missing || true
}

# Prints the pieces SHA256SUMS lists that the stash lacks (or has with another sha256);
# returns non-zero when there are any.
missing() {
  local none=0 want name
  while read -r want name; do
    case $name in *.tar.xz.[0-9][0-9]) ;; *) continue ;; esac
    if [ ! -f "$STASH/pieces/$name" ] || [ "$(stat -c %s "$STASH/pieces/$name")" = 0 ]; then
      echo "missing: $name"
      none=1
    fi
  done < "$STASH/SHA256SUMS"
  [ $none = 0 ] && log "every piece is in $STASH"
  return $none
}

# ------------------------------------------------------------------------- run (there)

xz_decompress() {
  if command -v xz >/dev/null; then
    xz -dc "$1"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer, 1 << 20)' "$1"
  fi
}

# Puts archive $1 together from its pieces, checks it and unpacks it into the stash
# (again only when it changed).
unpack() {
  local archive=$1 want
  want=$(awk -v name="$archive.tar.xz" '$2 == name {print $1}' "$STASH/SHA256SUMS")
  if [ "$(cat "$STASH/$archive/.sha256" 2>/dev/null)" = "$want" ]; then
    return
  fi
  log "putting $archive.tar.xz together and checking it"
  cat "$STASH/pieces/$archive.tar.xz."[0-9][0-9] > "$STASH/$archive.tar.xz"
  local got
  got=$(sha256sum "$STASH/$archive.tar.xz" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$archive.tar.xz: sha256 $got, expected $want"
  rm -rf "$STASH/$archive"
  mkdir -p "$STASH/$archive"
  xz_decompress "$STASH/$archive.tar.xz" | tar -C "$STASH/$archive" -xf -
  rm "$STASH/$archive.tar.xz"
  echo "$want" > "$STASH/$archive/.sha256"
}

run() {
  local device=cuda lines=
  while [ $# -gt 0 ]; do
    case $1 in
      --device) device=$2; shift 2 ;;
      --lines) lines=$2; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  # 100,000 tickets (5.8 M tokens) keep a GPU busy for seconds; the CPU dry run is slow.
  [ -n "$lines" ] || { [ "$device" = cuda ] && lines=100000 || lines=1000; }
  if [ -f "$BUNDLE/SHA256SUMS" ]; then
    mkdir -p "$STASH"
    cp "$BUNDLE/SHA256SUMS" "$STASH/SHA256SUMS"
  fi
  [ -f "$STASH/SHA256SUMS" ] || die "no SHA256SUMS: run pack, then receive the pieces"
  missing >&2 || die "pieces are missing (above): receive them first"
  unpack runtime
  unpack app
  (cd "$STASH/app" && sha256sum --quiet -c APP.SHA256SUMS) || die "app files do not match"
  (cd "$STASH/runtime" && [ -f libonnxruntime_providers_cuda.so ]) || die "runtime incomplete"

  local out=${OUT:-$BUNDLE/out}
  mkdir -p "$out"
  export ORT_DYLIB_PATH=$STASH/runtime/libonnxruntime.so.1.31.1
  export LD_LIBRARY_PATH=$STASH/runtime${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export ZEROSHOT_MODELS_DIR=$STASH/app/models ZEROSHOT_MODEL=$MODEL ZEROSHOT_DEVICE=$device
  export ZEROSHOT_DOCS_UI_DIR=$STASH/app/docs-ui CARGO_TARGET_DIR=$STASH/app
  export ZEROSHOT_CEILING_BIN=$STASH/app/release/ceiling
  unset ZEROSHOT_ONNX_RUN_TOKENS

  log "1. one classify call on $device"
  local started=$SECONDS
  timeout 120 "$STASH/app/release/zeroshot" classify --labels billing,technical_issue \
    "I was charged twice this month" > "$out/classify.json" ||
    die "zeroshot classify --device $device failed (see above)"
  log "   $(tr -d ' \n' < "$out/classify.json" | head -c 100)... ($((SECONDS - started)) s with model load)"

  log "2. batch job and ceiling, $lines tickets"
  timeout 360 python3 scripts/perf_report.py --sections batch,ceiling --lines "$lines" \
    --json "$out/perf_report.json" > "$out/perf_report.md" || die "perf_report.py failed"

  log "3. the ceiling at other run budgets"
  local tickets=$out/tickets.ndjson tokens
  python3 -c 'import sys; sys.path.insert(0, "scripts")
from perf_report import write_tickets
write_tickets(sys.argv[1], int(sys.argv[2]))' "$tickets" "$lines"
  for tokens in "${SWEEP_TOKENS[@]}"; do
    ZEROSHOT_ONNX_RUN_TOKENS=$tokens timeout 120 "$ZEROSHOT_CEILING_BIN" "$tickets" \
      > "$out/ceiling-$tokens.json" || die "ceiling at $tokens tokens per run failed"
  done
  rm "$tickets"

  python3 - "$out" "$device" "$lines" "${SWEEP_TOKENS[@]}" <<'EOF'
import json, sys
from pathlib import Path

out, device, lines, budgets = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
report = json.loads((out / "perf_report.json").read_text())
batch, ceiling = report["batch"], report["ceiling"]
sweep = [json.loads((out / f"ceiling-{b}.json").read_text()) for b in budgets]
summary = {"device": device, "lines": lines, "batch": batch, "ceiling": ceiling, "sweep": sweep,
           "batch_over_ceiling": batch["tokens_per_second"] / ceiling["tokens_per_second"]}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
print(f"\n{lines:,} tickets on {device} ({batch['tokens']:,} tokens)\n")
print("| run | tokens/s | texts/s | peak RSS |")
print("|---|---|---|---|")
print(f"| batch job end to end | {batch['tokens_per_second']:,.0f} | "
      f"{batch['texts_per_second']:,.1f} | {batch['peak_rss_mb']:,.0f} MB |")
for r in sorted([ceiling, *sweep], key=lambda r: r["run_tokens"]):
    print(f"| ceiling, {r['run_tokens']:,} tokens per run"
          f"{' (the default)' if r is ceiling else ''} | {r['tokens_per_second']:,.0f} | "
          f"{r['texts_per_second']:,.1f} | {r['peak_rss_mb']:,.0f} MB |")
print(f"\nbatch job ÷ ceiling: **{summary['batch_over_ceiling']:.2f}**")
EOF
  log "done in $((SECONDS - started)) s; results in $out"
}

case ${1:-} in
  pack) pack ;;
  probe) probe ;;
  receive) shift; receive "$@" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,35p' "$0" >&2; exit 2 ;;
esac
