#!/usr/bin/env bash
# Ping RTT through the tunnel, meshd (`--wg-config`) against wireguard-go, in the same two
# namespaces (bench/wg-pair.sh), alternating, RUNS rounds: COUNT echoes 10 ms apart on an
# idle tunnel, then COUNT echoes 20 ms apart while an iperf3 TCP stream fills the tunnel the
# same way. Prints p50 and p99 of each, the medians over the rounds, and the ratios.
# Usage (root): bench/wg-ping.sh [RUNS] [COUNT]   (defaults 3, 300)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
count="${2:-300}"
source bench/wg-pair.sh

# RTTs (ms) of `ping` output on stdin -> "p50 p99".
percentiles() {
  python3 -c '
import re, sys
rtts = sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms", sys.stdin.read()))
if not rtts:
    print("nan nan")
else:
    pick = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))]
    print(f"{pick(0.50):.3f} {pick(0.99):.3f}")
'
}

# One round of IMPL: "idle_p50 idle_p99 load_p50 load_p99".
run_one() {
  start_pair "$1"
  local idle load
  idle="$(ip netns exec "$ns_a" ping -c "$count" -i 0.01 -W 1 10.90.0.2 | percentiles)"
  start_iperf_server 5298
  local duration=$(((count * 2 + 99) / 100 + 3))
  ip netns exec "$ns_a" iperf3 -c 10.90.0.2 -p 5298 -t "$duration" >/dev/null 2>&1 &
  local client=$!
  sleep 1
  load="$(ip netns exec "$ns_a" ping -c "$count" -i 0.02 -W 1 10.90.0.2 | percentiles)"
  wait "$client" 2>/dev/null || true
  wait "$iperf_server" 2>/dev/null || true
  stop_all
  echo "$idle $load"
}

: > "$work/meshd.txt"; : > "$work/wggo.txt"
for round in $(seq "$runs"); do
  for impl in meshd wggo; do
    result="$(run_one "$impl")"
    echo "$result" >> "$work/$impl.txt"
    read -r a b c d <<<"$result"
    echo "round $round $impl: idle p50 $a ms p99 $b ms; under load p50 $c ms p99 $d ms"
  done
done
col() { awk -v c="$2" '{print $c}' "$work/$1.txt" | median; }
for impl in meshd wggo; do
  echo "median $impl: idle p50 $(col "$impl" 1) p99 $(col "$impl" 2); load p50 $(col "$impl" 3) p99 $(col "$impl" 4) (ms)"
done
awk -v a="$(col meshd 1)" -v b="$(col wggo 1)" -v c="$(col meshd 2)" -v d="$(col wggo 2)" \
    -v e="$(col meshd 3)" -v f="$(col wggo 3)" -v g="$(col meshd 4)" -v h="$(col wggo 4)" \
  'BEGIN {printf "ratio meshd/wireguard-go: idle p50 %.2fx p99 %.2fx; load p50 %.2fx p99 %.2fx\n", a/b, c/d, e/f, g/h}'
