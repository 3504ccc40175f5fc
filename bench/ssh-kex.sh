#!/usr/bin/env bash
# `ssh host true` wall time per key exchange method against the core's server (the test
# harness, release build), issue 13. Client: OpenSSH 10 from target/openssh10
# (scripts/fetch-openssh10; it knows mlkem768x25519) and the system's 9.2 for the methods it
# knows. Usage: bench/ssh-kex.sh [LOGINS_PER_METHOD] (default 30); medians in ms.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-30}"
work="$(mktemp -d)"
cleanup() { kill "${harness_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
user=meshbench
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/sh "$user"
usermod -p "*" "$user"
scripts/fetch-openssh10 >/dev/null
target="${CARGO_TARGET_DIR:-target}"
cargo build -q --release -p mesh-tests --example ssh_harness
MESH_HARNESS_USER="$user" "$target/release/examples/ssh_harness" > "$work/harness.out" &
harness_pid=$!
for _ in $(seq 100); do grep -q '^port' "$work/harness.out" 2>/dev/null && break; sleep 0.1; done
port="$(awk '/^port/ {print $2}' "$work/harness.out")"
sed -n 2p "$work/harness.out" > "$work/known_hosts"
login() { # ssh-binary kex
  "$1" -F /dev/null -p "$port" -o IdentitiesOnly=yes -o IdentityFile=/dev/null -o BatchMode=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o KexAlgorithms="$2" -c chacha20-poly1305@openssh.com "$user@127.0.0.1" true
}
for client in target/openssh10/usr/bin/ssh ssh; do
  for kex in curve25519-sha256 sntrup761x25519-sha512 mlkem768x25519-sha256; do
    "$client" -Q kex | grep -qx "$kex" || continue
    login "$client" "$kex"  # warm-up
    for _ in $(seq "$n"); do
      t0=$(date +%s.%N); login "$client" "$kex"; t1=$(date +%s.%N)
      echo "$t0 $t1"
    done | python3 -c "
import sys, statistics
t = [(float(b) - float(a)) * 1000 for a, b in (l.split() for l in sys.stdin)]
print(f'$("$client" -V 2>&1 | cut -d, -f1) $kex: median {statistics.median(t):.1f} ms (n={len(t)})')"
  done
done
