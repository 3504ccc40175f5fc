#!/usr/bin/env bash
# Run every simulated test under many seeds: MESHSIM_SEED=FIRST..LAST for each test binary
# that takes its seed from the environment (mesh-sim's own tests and tests/tests/sim_*.rs).
# Prints each failing seed with its rerun command; exits 1 if any failed.
# Usage: scripts/sim-sweep.sh [LAST=100] [FIRST=1]
set -euo pipefail
cd "$(dirname "$0")/.."
last="${1:-100}"
first="${2:-1}"
bins=$(cargo test --release -p mesh-sim -p mesh-tests --test sim_dataplane --test sim_mesh --test sim_ssh --test sim_control --lib --no-run \
  --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("mesh_sim", "sim_dataplane", "sim_mesh", "sim_ssh", "sim_control"):
        print(m["target"]["name"], m["executable"])')
failed=0
while read -r name exe; do
  for seed in $(seq "$first" "$last"); do
    if ! out=$(MESHSIM_SEED=$seed "$exe" -q 2>&1); then
      failed=1
      echo "FAIL $name seed $seed"
      echo "$out" | grep -E "panicked|check failed|rerun" | head -3 | sed 's/^/    /'
    fi
  done
  echo "$name: seeds $first..$last done"
done <<< "$bins"
exit $failed
