#!/usr/bin/env bash
# Set up everything and run every test: unit tests, the parity tests against the real
# models (nomic-embed-text-v1.5 against GPT4All's llama.cpp), the HTTP tests against
# real SQLite and Postgres, and the S3 storage tests against a local SeaweedFS
# (ZEROSHOT_TEST_S3_PORT, default 8333).
# Postgres: ZEROSHOT_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test);
# the local cluster is started when it is not running.
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium from Debian for the playground's browser test (tests/it/playground.rs).
if [ ! -x /usr/bin/chromium ]; then
  echo "test: installing chromium" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi
# The evaluation sets (the adaptive-scoring tests score them), the default model and
# its float source, and the opt-in nomic-embed-text-v1.5 and its
# integer build: the parity tests compare each integer model with its float one;
# Playwright for the browser test.
eval "$(python3 scripts/setup.py --seaweedfs --datasets --browser --print-env --model all-minilm-l6-v2-int8-cpu \
  --model all-minilm-l6-v2-int8 --model nomic-embed-text-v1.5 \
  --model nomic-embed-text-v1.5-int8-cpu)"

export ZEROSHOT_TEST_POSTGRES_URL=${ZEROSHOT_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
if ! pg_isready -q -d "$ZEROSHOT_TEST_POSTGRES_URL"; then
  echo "test: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  for _ in $(seq 1 30); do pg_isready -q -d "$ZEROSHOT_TEST_POSTGRES_URL" && break; sleep 1; done
fi
# Databases left behind by earlier runs (each test creates its own).
psql -q -d "$ZEROSHOT_TEST_POSTGRES_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'zs_test_%'" |
  while read -r db; do psql -q -d "$ZEROSHOT_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $db" >/dev/null; done

# SeaweedFS as the real S3 server of the S3 storage tests, started on an empty data
# directory for each run (it stays up in the background afterwards, see
# scripts/seaweedfs.sh).
eval "$(scripts/seaweedfs.sh --fresh)"

# The parity test's reference, made on this machine (see scripts/parity_reference.py).
export ZEROSHOT_PARITY_REFERENCE="${ZEROSHOT_CACHE:-$HOME/.cache/zeroshot}/parity.json"
python3 scripts/parity_reference.py --out "$ZEROSHOT_PARITY_REFERENCE"
# nomic-embed-text-v1.5's, from GPT4All (llama.cpp) on the same GGUF (scripts/nomic_reference.py).
export ZEROSHOT_NOMIC_REFERENCE="${ZEROSHOT_CACHE:-$HOME/.cache/zeroshot}/nomic-reference.json"
python3 scripts/nomic_reference.py --out "$ZEROSHOT_NOMIC_REFERENCE"

cargo test --release --locked --no-fail-fast "$@"
