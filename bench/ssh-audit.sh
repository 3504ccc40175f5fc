#!/usr/bin/env bash
# ssh-audit 3.9 against the core's SSH server (the test harness, release build) as it was
# before issue 13 (curve25519 only, through MESH_HARNESS_KEX) and as it is now (the default
# list). Prints each report's key exchange section and its fail/warn counts.
# Needs target/pyenv with ssh-audit (.ci/run makes it). Usage: bench/ssh-audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
cleanup() { kill "${harness_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
audit=target/pyenv/bin/ssh-audit
[ -x "$audit" ] || { target/pyenv/bin/pip install -q ssh-audit==3.9.0; }
target="${CARGO_TARGET_DIR:-target}"
cargo build -q --release -p mesh-tests --example ssh_harness
report() { # label kex-list (empty: the default)
  if [ -n "$2" ]; then
    MESH_HARNESS_KEX="$2" "$target/release/examples/ssh_harness" > "$work/harness.out" &
  else
    "$target/release/examples/ssh_harness" > "$work/harness.out" &
  fi
  harness_pid=$!
  for _ in $(seq 100); do grep -q '^port' "$work/harness.out" 2>/dev/null && break; sleep 0.1; done
  port="$(awk '/^port/ {print $2}' "$work/harness.out")"
  "$audit" -n --skip-rate-test -p "$port" 127.0.0.1 > "$work/report" || true
  kill "$harness_pid"; wait "$harness_pid" 2>/dev/null || true
  echo "== $1: $(grep -c '\[fail\]' "$work/report") fail, $(grep -c '\[warn\]' "$work/report") warn"
  sed -n '/^# key exchange/,/^$/p' "$work/report"
}
report "before (curve25519 only)" "curve25519-sha256,curve25519-sha256@libssh.org"
report "after (default)" ""
