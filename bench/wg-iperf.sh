#!/usr/bin/env bash
# WireGuard tunnel throughput: iperf3 TCP (STREAMS streams, a -> b) through two meshd nodes
# (`meshd --wg-config`) against two wireguard-go instances (Debian's, configured with wg),
# in the same two network namespaces joined by the same veth pair, alternating, RUNS rounds,
# medians. Also the tunnel daemons' CPU seconds per GB moved (user + system, both ends).
# Usage (root): bench/wg-iperf.sh [RUNS] [SECONDS] [STREAMS]   (defaults 3, 10, 1)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
secs="${2:-10}"
streams="${3:-1}"
tag="wgb$$"
ns_a="$tag-a"; ns_b="$tag-b"
work="$(mktemp -d)"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  rm -f "/var/run/wireguard/g${tag}a.sock" "/var/run/wireguard/g${tag}b.sock"
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q --release -p meshd --bin meshd
meshd_bin="${CARGO_TARGET_DIR:-target}/release/meshd"

ip netns add "$ns_a"; ip netns add "$ns_b"
ip link add "v${tag}a" netns "$ns_a" type veth peer name "v${tag}b" netns "$ns_b"
ip -n "$ns_a" addr add 192.168.90.1/24 dev "v${tag}a"
ip -n "$ns_b" addr add 192.168.90.2/24 dev "v${tag}b"
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set "v${tag}a" up; ip -n "$ns_b" link set "v${tag}b" up

key_a="$(wg genkey)"; key_b="$(wg genkey)"
pub_a="$(echo "$key_a" | wg pubkey)"; pub_b="$(echo "$key_b" | wg pubkey)"
printf '%s' "$key_a" > "$work/a.key"; printf '%s' "$key_b" > "$work/b.key"

wait_addr() { # ns iface
  for _ in $(seq 200); do ip -n "$1" addr show dev "$2" 2>/dev/null | grep -q 'inet ' && return 0; sleep 0.05; done
  echo "no address on $2 in $1" >&2; return 1
}

start_meshd() { # side key peer_pub own_underlay peer_underlay own_tunnel peer_tunnel
  local side=$1 iface="m${tag}$1"
  cat > "$work/$side.conf" <<CONF
[Interface]
PrivateKey = $2
ListenPort = 51820
Address = $6/24
MTU = 1420
[Peer]
PublicKey = $3
Endpoint = $5:51820
AllowedIPs = $7/32
CONF
  ip netns exec "$tag-$side" "$meshd_bin" --wg-config "$work/$side.conf" --tun "$iface" 2>>"$work/meshd-$side.log" &
  pids+=($!)
  wait_addr "$tag-$side" "$iface"
}

start_wggo() { # side keyfile peer_pub own_underlay peer_underlay own_tunnel peer_tunnel
  local side=$1 iface="g${tag}$1" ns="$tag-$1"
  WG_PROCESS_FOREGROUND=1 ip netns exec "$ns" wireguard-go -f "$iface" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do [ -S "/var/run/wireguard/$iface.sock" ] && break; sleep 0.05; done
  ip netns exec "$ns" wg set "$iface" private-key "$2" listen-port 51820 peer "$3" endpoint "$5:51820" allowed-ips "$7/32"
  ip -n "$ns" addr add "$6/24" dev "$iface"
  ip -n "$ns" link set "$iface" mtu 1420 up
}

stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}

cpu_ticks() { # pid: utime + stime of the process
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# One run of IMPL; prints "Gbit/s CPU-s/GB".
run_one() {
  local impl=$1
  if [ "$impl" = meshd ]; then
    start_meshd a "$key_a" "$pub_b" 192.168.90.1 192.168.90.2 10.90.0.1 10.90.0.2
    start_meshd b "$key_b" "$pub_a" 192.168.90.2 192.168.90.1 10.90.0.2 10.90.0.1
  else
    start_wggo a "$work/a.key" "$pub_b" 192.168.90.1 192.168.90.2 10.90.0.1 10.90.0.2
    start_wggo b "$work/b.key" "$pub_a" 192.168.90.2 192.168.90.1 10.90.0.2 10.90.0.1
  fi
  ip netns exec "$ns_a" ping -c 2 -i 0.2 -W 2 10.90.0.2 >/dev/null
  ip netns exec "$ns_b" iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
  local srv=$!
  for _ in $(seq 100); do ip netns exec "$ns_b" ss -Hltn 'sport = :5299' | grep -q . && break; sleep 0.05; done
  local before=0 after=0 pid
  for pid in "${pids[@]}"; do before=$((before + $(cpu_ticks "$pid"))); done
  ip netns exec "$ns_a" iperf3 -c 10.90.0.2 -p 5299 -t "$secs" -P "$streams" -J > "$work/iperf.json"
  for pid in "${pids[@]}"; do after=$((after + $(cpu_ticks "$pid"))); done
  wait "$srv" 2>/dev/null || true
  stop_all
  python3 - "$work/iperf.json" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["end"]["sum_received"]
ticks, hz = int(sys.argv[2]), int(sys.argv[3])
gb = d["bytes"] / 1e9
print(f'{d["bits_per_second"] / 1e9:.3f} {ticks / hz / gb if gb else 0:.3f}')
PY
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

: > "$work/meshd.txt"; : > "$work/wggo.txt"
for round in $(seq "$runs"); do
  for impl in meshd wggo; do
    result="$(run_one "$impl")"
    echo "$result" >> "$work/$impl.txt"
    echo "round $round $impl: $(echo "$result" | awk '{print $1}') Gbit/s, $(echo "$result" | awk '{print $2}') CPU s/GB"
  done
done
m_g=$(awk '{print $1}' "$work/meshd.txt" | median); w_g=$(awk '{print $1}' "$work/wggo.txt" | median)
m_c=$(awk '{print $2}' "$work/meshd.txt" | median); w_c=$(awk '{print $2}' "$work/wggo.txt" | median)
echo "median meshd:       $m_g Gbit/s, $m_c CPU s/GB"
echo "median wireguard-go: $w_g Gbit/s, $w_c CPU s/GB"
awk -v m="$m_g" -v w="$w_g" -v mc="$m_c" -v wc="$w_c" \
  'BEGIN {printf "ratio meshd/wireguard-go: throughput %.2fx, CPU per GB %.2fx\n", m / w, mc / wc}'
