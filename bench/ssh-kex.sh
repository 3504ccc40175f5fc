#!/usr/bin/env bash
# `ssh host true` wall time per key exchange method against the core's server (the test
# harness, release build), issue 13. Client: OpenSSH 10 from target/openssh10
# (scripts/fetch-openssh10; it knows mlkem768x25519) and the system's 9.2 for the methods it
# knows, and PuTTY's plink 0.78, alternating login by login. Usage: bench/ssh-kex.sh [LOGINS_PER_METHOD] (default 30);
# medians in ms.
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
# PuTTY's plink (0.78, if installed) takes its method order from a saved session under
# $HOME/.putty: ntru-curve25519 (sntrup761x25519-sha512@openssh.com) is its default first.
fingerprint="$(ssh-keygen -lf "$work/known_hosts" | awk '{print $2}')"
mkdir -p "$work/home/.putty/sessions"
: > "$work/home/.putty/sessions/sntrup761x25519-sha512"
echo "KEX=ecdh,ntru-curve25519,WARN" > "$work/home/.putty/sessions/curve25519-sha256"
login() { # client kex
  if [ "$1" = plink ]; then
    HOME="$work/home" plink -load "$2" -batch -ssh -P "$port" -hostkey "$fingerprint" -l "$user" 127.0.0.1 true
    return
  fi
  "$1" -F /dev/null -p "$port" -o IdentitiesOnly=yes -o IdentityFile=/dev/null -o BatchMode=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o KexAlgorithms="$2" -c chacha20-poly1305@openssh.com "$user@127.0.0.1" true
}
# Every (client, method) pair the client knows, one login each per round, alternating, so
# a slow moment of the machine falls on all of them alike.
pairs=()
knows() { # client kex
  if [ "$1" = plink ]; then command -v plink >/dev/null && [ "$2" != mlkem768x25519-sha256 ]; else "$1" -Q kex | grep -qx "$2"; fi
}
version() { if [ "$1" = plink ]; then plink -V | head -1 | tr -d ':'; else "$1" -V 2>&1 | cut -d, -f1; fi; }
for client in target/openssh10/usr/bin/ssh ssh plink; do
  for kex in curve25519-sha256 sntrup761x25519-sha512 mlkem768x25519-sha256; do
    knows "$client" "$kex" || continue
    pairs+=("$client $kex")
    login "$client" "$kex"  # warm-up
  done
done
for _ in $(seq "$n"); do
  for pair in "${pairs[@]}"; do
    read -r client kex <<<"$pair"
    t0=$(date +%s.%N); login "$client" "$kex"; t1=$(date +%s.%N)
    echo "$(version "$client") $kex $t0 $t1"
  done
done | python3 -c "
import sys, statistics, collections
t = collections.defaultdict(list)
for line in sys.stdin:
    version, kex, a, b = line.rsplit(None, 3)
    t[(version, kex)].append((float(b) - float(a)) * 1000)
for (version, kex), v in t.items():
    print(f'{version} {kex}: median {statistics.median(v):.1f} ms (n={len(v)})')"
