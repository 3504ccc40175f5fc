#!/usr/bin/env bash
# Criterion benches of mesh-tests, run side by side: BENCH (wireguard: device pair vs raw
# AEAD, our handshake vs boringtun's; dataplane: filter, TCP pipeline vs seal+open bound;
# ssh: packet protection vs the raw primitives, server CPU per login; control: a 1 MiB
# message through the control channel vs the raw AEAD on the same records),
# built for each CPU level given (default: baseline x86-64 and the release setting
# x86-64-v3), RUNS alternating rounds, then medians and the ratios each baseline defines.
# Usage: bench/criterion.sh BENCH [RUNS] [CPU...]
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${1:?usage: bench/criterion.sh wireguard|dataplane|ssh|control [RUNS] [CPU...]}"
runs="${2:-3}"
shift $(( $# < 2 ? $# : 2 ))
cpus=("$@")
[ ${#cpus[@]} -gt 0 ] || cpus=(x86-64 x86-64-v3)
out="$(mktemp -d)"
for round in $(seq 1 "$runs"); do
  for cpu in "${cpus[@]}"; do
    echo "round $round, target-cpu=$cpu" >&2
    dir="$PWD/target/bench-$cpu"
    rm -rf "$dir/criterion"
    CARGO_TARGET_DIR="$dir" RUSTFLAGS="-C target-cpu=$cpu" \
      cargo bench -q -p mesh-tests --bench "$bench" -- --warm-up-time 1 --measurement-time 4 --noplot >/dev/null 2>&1
    # criterion writes its estimates under $CARGO_TARGET_DIR/criterion.
    for f in "$dir"/criterion/*/*/*/new/estimates.json "$dir"/criterion/*/*/new/estimates.json; do
      [ -f "$f" ] || continue
      id="${f#"$dir"/criterion/}"; id="${id%/new/estimates.json}"
      python3 -c 'import json,sys; print(sys.argv[2], sys.argv[3], json.load(open(sys.argv[1]))["median"]["point_estimate"])' \
        "$f" "$cpu" "$id" >> "$out/results"
    done
  done
done
python3 - "$out/results" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    cpu, bench, ns = line.split()
    rows[(cpu, bench)].append(float(ns))
med = {k: statistics.median(v) for k, v in rows.items()}
print(f"{'cpu':10} {'benchmark':32} {'median':>12} runs")
for (cpu, bench), m in sorted(med.items()):
    unit = f"{m/1000:.2f} us" if m >= 1000 else f"{m:.0f} ns"
    print(f"{cpu:10} {bench:32} {unit:>12} {len(rows[(cpu, bench)])}")
print()
for cpu in ("x86-64", "x86-64-v3"):
    for size in ("64", "1420", "65000"):
        raw, dev = med.get((cpu, f"seal_open/raw_aead/{size}")), med.get((cpu, f"seal_open/device_pair/{size}"))
        if raw and dev:
            print(f"{cpu:10} seal+open {size:>5} B: device {raw/dev:.2f}x raw AEAD ({int(size)/dev:.2f} GB/s per packet through both ends)")
    ours, bt = med.get((cpu, "handshake/mesh_core")), med.get((cpu, "handshake/boringtun"))
    if ours and bt:
        print(f"{cpu:10} handshakes: {1e9/ours:.0f}/s vs boringtun {1e9/bt:.0f}/s = {bt/ours:.2f}x")
    for name in ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"):
        ours, raw = med.get((cpu, f"ssh_seal_open_32k/packet_cipher_{name}")), med.get((cpu, f"ssh_seal_open_32k/raw_{name}"))
        if ours and raw:
            print(f"{cpu:10} SSH 32 KiB seal+open {name}: {32768/ours*1e3:.0f} MB/s vs raw {32768/raw*1e3:.0f} MB/s = {raw/ours:.2f}x")
        copy = med.get((cpu, f"ssh_seal_open_32k/packet_cipher_with_copy_{name}"))
        if copy and raw:
            print(f"{cpu:10}   with the data copied in from the application: {32768/copy*1e3:.0f} MB/s = {raw/copy:.2f}x")
    login = med.get((cpu, "ssh_login/server_kex_and_auth"))
    if login:
        print(f"{cpu:10} SSH server CPU per key exchange + auth: {login/1e6:.3f} ms")
    tcp, bound = med.get((cpu, "pipeline/tcp")), med.get((cpu, "pipeline/seal_open_bound"))
    if tcp and bound:
        mib = 1 << 20
        print(f"{cpu:10} TCP pipeline: {mib*8/tcp:.2f} Gbit/s vs seal+open bound {mib*8/bound:.2f} Gbit/s = {bound/tcp:.2f}x")
    channel, raw = med.get((cpu, "control_1mib/channel")), med.get((cpu, "control_1mib/raw_aead"))
    if channel and raw:
        mib = 1 << 20
        print(f"{cpu:10} control channel 1 MiB: {mib/channel*1e3:.0f} MB/s vs raw AEAD {mib/raw*1e3:.0f} MB/s = {raw/channel:.2f}x")
PY
