#!/usr/bin/env bash
# Simulator throughput: builds meshsim (release) once, then runs a 10-node and a 100-node full
# mesh without chaos or loss, ROUNDS rounds alternating the two sizes, and prints the median
# steady-state rates meshsim reports on its "after the first 20 s" line (20 s of virtual
# warm-up, the initial handshakes, excluded): datagrams/s (datagrams through full WireGuard
# crypto per wall second) and events/s. Each node sends a packet every ~2 ms of virtual time,
# so data packets dominate (the "data share" column is app packets delivered / datagrams
# delivered; the rest are handshakes, keepalives and duplicates). Each run takes ~20-45 s
# of wall time on a 2-core machine. Usage: bench/sim.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
interval_ms=2
# Virtual minutes per size: ~3M datagrams each, most of them after the warm-up.
declare -A minutes=([10]=10 [100]=1.25)

cargo build -q --release -p mesh-sim --bin meshsim
bin="${CARGO_TARGET_DIR:-target}/release/meshsim"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

for round in $(seq 1 "$rounds"); do
  for nodes in 10 100; do
    echo "round $round: $nodes nodes, ${minutes[$nodes]} virtual minutes, a packet per node every ${interval_ms} ms" >&2
    log="$out/$nodes.$round"
    "$bin" --nodes "$nodes" --minutes "${minutes[$nodes]}" --interval-ms "$interval_ms" --no-chaos --loss 0 >"$log"
    grep -E '^(wall time|after the first|trace hash)' "$log" | sed 's/^/  /' >&2
  done
done

python3 - "$out" "$rounds" <<'PY'
import re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
print(f"{'nodes':>5} {'datagrams/s':>12} {'events/s':>12} {'data share':>10} {'wall s':>7} runs  trace hashes")
for nodes in (10, 100):
    dgram, events, share, wall, hashes = [], [], [], [], set()
    for r in range(1, rounds + 1):
        text = open(f"{out}/{nodes}.{r}").read()
        m = re.search(r"^after the first \d+ s: (\d+) events/s, (\d+) datagrams/s", text, re.M)
        if not m:
            sys.exit(f"no steady-state line in the {nodes}-node run {r}")
        events.append(int(m[1]))
        dgram.append(int(m[2]))
        app = re.search(r"^app packets: \d+ sent, (\d+) delivered", text, re.M)
        dg = re.search(r"^datagrams: \d+ sent, (\d+) delivered", text, re.M)
        share.append(int(app[1]) / max(int(dg[1]), 1))
        wall.append(float(re.search(r"^wall time: ([\d.]+) s", text, re.M)[1]))
        hashes.add(re.search(r"^trace hash: ([0-9a-f]+)$", text, re.M)[1])
    same = "identical" if len(hashes) == 1 else f"{len(hashes)} DIFFERENT"
    print(f"{nodes:>5} {statistics.median(dgram):>12.0f} {statistics.median(events):>12.0f} "
          f"{statistics.median(share):>9.1%} {statistics.median(wall):>7.1f} {rounds:>4}  {same}")
PY
