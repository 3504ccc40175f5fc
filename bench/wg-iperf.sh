#!/usr/bin/env bash
# WireGuard tunnel throughput: iperf3 TCP (STREAMS streams, a -> b) through two meshd nodes
# (`meshd --wg-config`) against two wireguard-go instances (Debian's, configured with wg),
# in the same two network namespaces joined by the same veth pair, alternating, RUNS rounds,
# medians. Also the tunnel daemons' CPU seconds per GB moved (user + system, both ends).
# Usage (root): bench/wg-iperf.sh [RUNS] [SECONDS] [STREAMS] [forward|reverse]   (defaults 3, 10, 1, forward)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
secs="${2:-10}"
streams="${3:-1}"
# `reverse`: b sends to a (iperf3 -R), the other direction through the same tunnel.
direction="${4:-forward}"
reverse_flag=()
[ "$direction" = reverse ] && reverse_flag=(-R)
source bench/wg-pair.sh

# One run of IMPL; prints "Gbit/s CPU-s/GB".
run_one() {
  start_pair "$1"
  start_iperf_server 5299
  local srv=$iperf_server
  local before=0 after=0 pid
  for pid in "${pids[@]}"; do before=$((before + $(cpu_ticks "$pid"))); done
  ip netns exec "$ns_a" iperf3 -c 10.90.0.2 -p 5299 -t "$secs" -P "$streams" "${reverse_flag[@]}" -J > "$work/iperf.json"
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
