#!/usr/bin/env bash
# Set up (fetch + verify the model and ONNX Runtime, build) and run the service on its
# embedded default: SQLite file under ./data, the bundled model, 127.0.0.1:8080.
# Extra arguments go to `zeroshot serve` (see `zeroshot serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(python3 scripts/setup.py --print-env)"
exec cargo run --release --locked --bin zeroshot -- serve "$@"
