#!/usr/bin/env bash
# Resident memory of a tunnel daemon with N peers: meshd (`--wg-config`) against
# wireguard-go (configured with `wg setconf`), the same keys, allowed IPs and endpoints, in
# one network namespace, RUNS rounds alternating. Each daemon runs with the peers configured,
# one echo is sent towards each of the first three peers (so their handshake state and
# queues exist), and after 2 s VmRSS and VmHWM are read from /proc. Medians in MiB.
# Usage (root): bench/meshd-memory.sh [RUNS] [PEERS...]   (defaults 3, then 3 and 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
shift || true
counts=("$@")
[ ${#counts[@]} -eq 0 ] && counts=(3 1000)
tag="mem$$"
ns="$tag"
work="$(mktemp -d)"
pid=""

cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -f "/var/run/wireguard/g${tag}.sock"
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q --release -p meshd --bin meshd
meshd_bin="${CARGO_TARGET_DIR:-target}/release/meshd"
ip netns add "$ns"
ip -n "$ns" link set lo up
# An underlay address for the endpoints (a veth pair within the namespace).
ip -n "$ns" link add "d$tag" type veth peer name "e$tag"
ip -n "$ns" addr add 192.168.95.1/24 dev "d$tag"
ip -n "$ns" link set "d$tag" up
ip -n "$ns" link set "e$tag" up

# Config files for N peers: wg-quick (meshd) and wg (wireguard-go) forms.
make_configs() { # n
  python3 - "$1" "$work" "$(wg genkey)" <<'PY'
import base64, os, sys
n, work, private = int(sys.argv[1]), sys.argv[2], sys.argv[3]
peers = []
for i in range(n):
    key = base64.b64encode(os.urandom(32)).decode()
    hi, lo = divmod(i + 2, 256)
    peers.append(f"[Peer]\nPublicKey = {key}\nEndpoint = 192.168.95.{2 + i % 250}:51820\nAllowedIPs = 10.91.{hi}.{lo}/32\n")
with open(f"{work}/meshd.conf", "w") as f:
    f.write(f"[Interface]\nPrivateKey = {private}\nListenPort = 51820\nAddress = 10.91.0.1/16\nMTU = 1420\n")
    f.write("".join(peers))
with open(f"{work}/wg.conf", "w") as f:
    f.write(f"[Interface]\nPrivateKey = {private}\nListenPort = 51820\n")
    f.write("".join(peers))
PY
}

mib() { awk -v k="$2" '$1 == k":" {printf "%.2f", $2 / 1024}' "/proc/$1/status"; }

run_one() { # impl -> "rss hwm"
  if [ "$1" = meshd ]; then
    ip netns exec "$ns" "$meshd_bin" --wg-config "$work/meshd.conf" --tun "m$tag" 2>>"$work/meshd.log" &
    pid=$!
    for _ in $(seq 400); do ip -n "$ns" addr show dev "m$tag" 2>/dev/null | grep -q 'inet ' && break; sleep 0.05; done
  else
    WG_PROCESS_FOREGROUND=1 ip netns exec "$ns" wireguard-go -f "g$tag" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -S "/var/run/wireguard/g$tag.sock" ] && break; sleep 0.05; done
    ip netns exec "$ns" wg setconf "g$tag" "$work/wg.conf"
    ip -n "$ns" addr add 10.91.0.1/16 dev "g$tag"
    ip -n "$ns" link set "g$tag" mtu 1420 up
  fi
  for last in 2 3 4; do ip netns exec "$ns" ping -c 1 -W 0.2 "10.91.0.$last" >/dev/null 2>&1 || true; done
  sleep 2
  # `ip netns exec` execs the daemon, so the pid is the daemon's own.
  echo "$(mib "$pid" VmRSS) $(mib "$pid" VmHWM)"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for n in "${counts[@]}"; do
  make_configs "$n"
  : > "$work/meshd.txt"; : > "$work/wggo.txt"
  for round in $(seq "$runs"); do
    for impl in meshd wggo; do
      result="$(run_one "$impl")"
      echo "$result" >> "$work/$impl.txt"
      echo "$n peers, round $round, $impl: RSS $(echo "$result" | cut -d' ' -f1) MiB, peak $(echo "$result" | cut -d' ' -f2) MiB"
    done
  done
  for impl in meshd wggo; do
    echo "median $impl with $n peers: RSS $(cut -d' ' -f1 "$work/$impl.txt" | median) MiB, peak $(cut -d' ' -f2 "$work/$impl.txt" | median) MiB"
  done
done
