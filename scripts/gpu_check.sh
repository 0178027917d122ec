#!/usr/bin/env bash
# The batch path on an NVIDIA GPU against the model's ceiling there, as a ratio, for a
# machine that may reach no registry and takes files only in pieces of at most 64 MiB
# (docs/gpu.md#checking-on-a-gpu-machine). Four steps, the first on a machine with
# the registries and a Rust build, the others on the GPU machine, from a copy of this
# repository:
#
#   scripts/gpu_check.sh pack [--cuda] here: after `scripts/setup.py --gpu`, builds the
#        release binary and benches/ceiling.rs, packs ONNX Runtime's CUDA build with the
#        CUDA runtime (ort.tar.xz), the binaries, fp16 model and docs UI (app.tar.xz)
#        and, with --cuda, the cuBLAS, cuRAND, NVRTC and cuDNN libraries (cuda.tar.xz,
#        1.8 GB unpacked: only for a machine that lacks them; PyTorch's CUDA 13 wheels
#        bring them), cuts each into pieces of at most 60 MiB under .gpu-bundle/ with
#        their sha256 in .gpu-bundle/SHA256SUMS, and prints the calls that follow.
#        The ort and cuda archives are kept while their files stay the same.
#   scripts/gpu_check.sh probe         there: driver, GPU, glibc, the tools used below
#        and the CUDA libraries the machine already has, before any piece is sent.
#   scripts/gpu_check.sh receive PIECE...   there: checks each piece's sha256 and
#        moves it to the stash ($ZEROSHOT_GPU_STASH, default ~/.cache/zeroshot-gpu),
#        which a warm machine keeps between calls; says which pieces are still missing.
#   scripts/gpu_check.sh run [--device cuda|cpu] [--lines N]   there: puts each
#        archive together, checks its sha256, unpacks it and measures:
#        1. `zeroshot classify` of eight texts on the device (fails at once when the
#           CUDA provider cannot load: driver, missing library), and on the CPU, to
#           compare the two devices' labels and scores from the same fp16 graph;
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
# upload), and xz or python3's lzma; an NVIDIA driver for CUDA 13 (580 or newer); and
# the libraries in MACHINE_LIBS, from the machine's Python NVIDIA wheels or its
# linker's cache, unless the bundle was packed with --cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUNDLE=$REPO/.gpu-bundle
STASH=${ZEROSHOT_GPU_STASH:-$HOME/.cache/zeroshot-gpu}
CACHE=${ZEROSHOT_CACHE:-$HOME/.cache/zeroshot}
PIECE_BYTES=$((60 * 1024 * 1024))
MODEL=all-minilm-l6-v2-fp16
SWEEP_TOKENS=(4096 16384 65536)
# Step 1's texts: the same fp16 graph's scores on the device and on the CPU provider.
PARITY_LABELS=billing,technical_issue,account_access,shipping,cancellation,feedback
PARITY_TEXTS=("I was charged twice this month" "The app crashes when I upload a photo"
  "Password reset email never arrives" "Where is my parcel? It was due on Monday"
  "Please close my account and stop the subscription" "Great support, thank you all!"
  "The invoice shows the wrong VAT number" "Export to CSV times out after a minute")
# Always sent: ONNX Runtime and the CUDA runtime it was built against (0.8 MB; a
# machine's own may be an older CUDA 13 release, lacking symbols the provider uses).
ORT_FILES=(libonnxruntime.so.1.31.1 libonnxruntime_providers_cuda.so
  libonnxruntime_providers_shared.so libcudart.so.13)
# What the CUDA provider links or loads besides those: the machine's own, unless the
# bundle carries them (pack --cuda). cuDNN finds its sub-libraries beside libcudnn.so.9.
MACHINE_LIBS=(libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudnn.so.9 libnvrtc.so.13)

log() { echo "gpu_check: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ------------------------------------------------------------------------ pack (here)

# Packs the files $3... of folder $2 into $BUNDLE/$1.tar.xz, again only when they changed.
pack_files() {
  local name=$1 dir=$2 sums
  shift 2
  sums=$(cd "$dir" && sha256sum -- "$@")
  if [ -f "$BUNDLE/$name.tar.xz" ] && [ "$(cat "$BUNDLE/$name.files" 2>/dev/null)" = "$sums" ]; then
    return
  fi
  log "packing $name: $(cd "$dir" && du -cb -- "$@" | tail -1 | numfmt --to=iec | cut -f1) (xz, minutes)"
  tar -C "$dir" -cf - --sort=name -- "$@" | xz -6 -T2 > "$BUNDLE/$name.tar.xz.part"
  mv "$BUNDLE/$name.tar.xz.part" "$BUNDLE/$name.tar.xz"
  echo "$sums" > "$BUNDLE/$name.files"
}

pack() {
  local with_cuda=
  case ${1:-} in
    --cuda) with_cuda=1 ;;
    '') ;;
    *) die "unknown option $1" ;;
  esac
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

  # The runtime: the same files `setup.py --gpu` verified.
  local archives=(ort app)
  pack_files ort "$runtime_dir" "${ORT_FILES[@]}"
  if [ -n "$with_cuda" ]; then
    local cuda_files
    mapfile -t cuda_files < <(cd "$runtime_dir" && ls | grep -vxF -f <(printf '%s\n' "${ORT_FILES[@]}"))
    pack_files cuda "$runtime_dir" "${cuda_files[@]}"
    archives+=(cuda)
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
  for archive in "${archives[@]}"; do
    split -b "$PIECE_BYTES" -d -a 2 "$BUNDLE/$archive.tar.xz" "$BUNDLE/$archive.tar.xz."
    (cd "$BUNDLE" && sha256sum "$archive.tar.xz" "$archive".tar.xz.[0-9][0-9] >> SHA256SUMS)
    log "$archive.tar.xz: $(du -h "$BUNDLE/$archive.tar.xz" | cut -f1)"
  done
  local pieces
  pieces=$(awk '$2 ~ /\.tar\.xz\.[0-9][0-9]$/ {print $2}' "$BUNDLE/SHA256SUMS")
  log "$(echo "$pieces" | wc -l) pieces of at most 60 MiB"
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
  ldconfig -p 2>/dev/null | grep -E 'libcuda\.so\.1' | sed 's/^\s*/found: /' || true
  local libs
  if libs=$(machine_lib_path); then
    echo "CUDA libraries here (a bundle without --cuda will do): $libs"
  else
    echo "CUDA libraries: $libs not found here: pack with --cuda"
  fi
  local tool
  for tool in python3 curl xz tar sha256sum; do
    printf '%s: %s\n' "$tool" "$(command -v "$tool" || echo MISSING)"
  done
  echo "stash $STASH: $(ls "$STASH/pieces" 2>/dev/null | wc -l) pieces"
  df -h "$HOME" | tail -1 | awk '{print "disk free under $HOME: " $4}'
}

# Prints the folders (colon-separated) that hold MACHINE_LIBS on this machine: its
# Python's NVIDIA wheels (as PyTorch installs them) or the linker's cache. Fails
# printing the first one not found.
machine_lib_path() {
  local roots name found root dirs=()
  roots=$(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null || true)
  for name in "${MACHINE_LIBS[@]}"; do
    found=
    for root in $roots; do
      [ -d "$root/nvidia" ] || continue
      found=$(find "$root/nvidia" -name "$name" -print -quit 2>/dev/null)
      [ -z "$found" ] || break
    done
    [ -n "$found" ] || found=$(ldconfig -p 2>/dev/null | awk -v name="$name" '$1 == name {print $NF; exit}')
    [ -n "$found" ] || { echo "$name"; return 1; }
    dirs+=("$(dirname "$found")")
  done
  printf '%s\n' "${dirs[@]}" | awk '!seen[$0]++' | paste -sd:
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
  local archive cuda_path
  for archive in $(awk '$2 ~ /\.tar\.xz$/ {sub(/\.tar\.xz$/, "", $2); print $2}' "$STASH/SHA256SUMS"); do
    unpack "$archive"
  done
  (cd "$STASH/app" && sha256sum --quiet -c APP.SHA256SUMS) || die "app files do not match"
  (cd "$STASH/ort" && [ -f libonnxruntime_providers_cuda.so ]) || die "ort incomplete"
  if grep -q ' cuda\.tar\.xz$' "$STASH/SHA256SUMS"; then
    cuda_path=$STASH/cuda
  elif ! cuda_path=$(machine_lib_path); then
    [ "$device" = cpu ] || die "$cuda_path is not on this machine: pack with --cuda and send those pieces too"
    log "no $cuda_path here: no matter on the CPU"
    cuda_path=
  fi
  log "CUDA libraries from ${cuda_path:-nowhere}"

  local out=${OUT:-$BUNDLE/out}
  mkdir -p "$out"
  export ORT_DYLIB_PATH=$STASH/ort/libonnxruntime.so.1.31.1
  export LD_LIBRARY_PATH=$STASH/ort${cuda_path:+:$cuda_path}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export ZEROSHOT_MODELS_DIR=$STASH/app/models ZEROSHOT_MODEL=$MODEL ZEROSHOT_DEVICE=$device
  export ZEROSHOT_DOCS_UI_DIR=$STASH/app/docs-ui CARGO_TARGET_DIR=$STASH/app
  export ZEROSHOT_CEILING_BIN=$STASH/app/release/ceiling
  unset ZEROSHOT_ONNX_RUN_TOKENS

  log "1. classify on $device, and the same texts on the CPU to compare the scores"
  local started=$SECONDS
  timeout 120 "$STASH/app/release/zeroshot" classify --labels "$PARITY_LABELS" \
    "${PARITY_TEXTS[@]}" > "$out/classify.json" ||
    die "zeroshot classify --device $device failed (see above)"
  log "   $(tr -d ' \n' < "$out/classify.json" | head -c 100)... ($((SECONDS - started)) s with model load)"
  ZEROSHOT_DEVICE=cpu timeout 120 "$STASH/app/release/zeroshot" classify --labels "$PARITY_LABELS" \
    "${PARITY_TEXTS[@]}" > "$out/classify-cpu.json" || die "zeroshot classify on the CPU failed"

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
on_device, on_cpu = (json.loads((out / name).read_text())["results"]
                     for name in ["classify.json", "classify-cpu.json"])
parity = {
    "texts": len(on_device),
    "same_label": sum(a["label"] == b["label"] for a, b in zip(on_device, on_cpu)),
    "max_score_difference": max(abs(x["score"] - y["score"])
                                for a, b in zip(on_device, on_cpu)
                                for x, y in zip(a["scores"], b["scores"])),
}
summary = {"device": device, "lines": lines, "batch": batch, "ceiling": ceiling, "sweep": sweep,
           "batch_over_ceiling": batch["tokens_per_second"] / ceiling["tokens_per_second"],
           "parity_with_cpu": parity}
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
print(f"{device} against the CPU on {parity['texts']} texts: {parity['same_label']} same labels, "
      f"largest score difference {parity['max_score_difference']:.2g}")
EOF
  log "done in $((SECONDS - started)) s; results in $out"
}

case ${1:-} in
  pack) shift; pack "$@" ;;
  probe) probe ;;
  receive) shift; receive "$@" ;;
  run) shift; run "$@" ;;
  *) sed -n '2,35p' "$0" >&2; exit 2 ;;
esac
