#!/usr/bin/env bash
# Whole-system SSH benchmarks on loopback, ours (the core server in the test harness,
# tests/examples/ssh_harness.rs) against OpenSSH's sshd with the same client, cipher and
# kex, alternating, RUNS rounds, medians:
#   bulk: head -c SIZE /dev/zero | ssh 'cat >/dev/null'  (upload) and ssh 'head -c SIZE /dev/zero' (download)
#   login: `ssh host true` wall time, curve25519-sha256
# Usage: bench/ssh.sh [RUNS] [SIZE]   (defaults 3, 2G)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
size="${2:-2G}"
work="$(mktemp -d)"
cleanup() { kill "${harness_pid:-}" "${sshd_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# Logins run as a bench user whose shell reads no rc files, so `ssh host true` measures the
# servers rather than the user's shell start-up (both servers would pay it).
user=meshbench
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/sh "$user"
# Not locked ("!" would make sshd refuse it without PAM), no password either.
usermod -p "*" "$user"
chmod 755 "$work"

cargo build -q --release -p mesh-tests --example ssh_harness
MESH_HARNESS_USER="$user" target/release/examples/ssh_harness > "$work/harness.out" &
harness_pid=$!
for _ in $(seq 100); do grep -q '^port' "$work/harness.out" 2>/dev/null && break; sleep 0.1; done
ours_port="$(awk '/^port/ {print $2}' "$work/harness.out")"
sed -n 2p "$work/harness.out" > "$work/known_hosts"

mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/user_key"
cp "$work/user_key.pub" "$work/authorized_keys"
chmod 644 "$work/authorized_keys"
sshd_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/sshd_config" <<CONF
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin yes
LogLevel ERROR
CONF
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
sshd_pid=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$sshd_port") 2>/dev/null && break; sleep 0.1; done
echo "[127.0.0.1]:$sshd_port $(cat "$work/host_key.pub")" >> "$work/known_hosts"

ssh_to() { # server cipher command...
  local port; port=$([ "$1" = ours ] && echo "$ours_port" || echo "$sshd_port")
  local cipher="$2"; shift 2
  ssh -F /dev/null -p "$port" -i "$work/user_key" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o KexAlgorithms=curve25519-sha256 -c "$cipher" "$user@127.0.0.1" "$@"
}
now() { date +%s.%N; }
bytes=$(numfmt --from=iec "$size")

for round in $(seq 1 "$runs"); do
  for server in ours sshd; do
    for cipher in chacha20-poly1305@openssh.com aes256-gcm@openssh.com; do
      t0=$(now); head -c "$size" /dev/zero | ssh_to "$server" "$cipher" 'cat >/dev/null'; t1=$(now)
      echo "upload $cipher $server $(echo "$bytes / ($t1 - $t0) / 1000000" | bc -l)" >> "$work/results"
      t0=$(now); ssh_to "$server" "$cipher" "head -c $size /dev/zero" >/dev/null; t1=$(now)
      echo "download $cipher $server $(echo "$bytes / ($t1 - $t0) / 1000000" | bc -l)" >> "$work/results"
    done
    for _ in 1 2 3 4 5; do
      t0=$(now); ssh_to "$server" chacha20-poly1305@openssh.com true; t1=$(now)
      echo "login - $server $(echo "($t1 - $t0) * 1000" | bc -l)" >> "$work/results"
    done
  done
  echo "round $round done" >&2
done

python3 - "$work/results" "$runs" "$size" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    what, cipher, server, value = line.split()
    rows[(what, cipher, server)].append(float(value))
med = {k: statistics.median(v) for k, v in rows.items()}
print(f"rounds: {sys.argv[2]}, size {sys.argv[3]}; medians")
for what in ("upload", "download"):
    for cipher in ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"):
        ours, sshd = med[(what, cipher, "ours")], med[(what, cipher, "sshd")]
        print(f"{what:8} {cipher:30} ours {ours:7.0f} MB/s  sshd {sshd:7.0f} MB/s  ratio {ours/sshd:.2f}x")
ours, sshd = med[("login", "-", "ours")], med[("login", "-", "sshd")]
print(f"ssh host true: ours {ours:.1f} ms  sshd {sshd:.1f} ms  ratio {ours/sshd:.2f}x")
PY
