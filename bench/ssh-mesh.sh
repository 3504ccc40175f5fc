#!/usr/bin/env bash
# SSH over the mesh: meshd's embedded SSH server (port 22 of node B's mesh address, served
# through meshd's userspace TCP stack) against OpenSSH's /usr/sbin/sshd listening on the
# same mesh address (port 2222, run inside B's namespace: kernel TCP over B's TUN), through
# the SAME meshd tunnel, from the same client node with the same `ssh` client, cipher and
# kex (curve25519-sha256), alternating ours/sshd, RUNS rounds, medians:
#   1. bulk upload (head -c SIZE /dev/zero | ssh 'cat >/dev/null') and download
#      (ssh 'head -c SIZE /dev/zero' >/dev/null), MB/s, per cipher in CIPHERS
#   2. the same over an impaired underlay between srv and c1 (15 ms delay + 1 % loss each
#      way: 30 ms RTT; then 3 %), IMPAIRED_SIZE, chacha20-poly1305 only
#   3. `ssh host true` wall time, LOGINS alternating runs per server
#   4. 50 concurrent logins: 5 client nodes x 10 `ssh B true` started at once, BURSTS rounds,
#      p50/p99/max (ours; sshd too, with MaxStartups raised so it does not shed them)
# Topology: meshcontrol in its own namespace holding a bridge; node B ("srv") and five
# clients c1..c5, each a meshd in its own namespace on that bridge, all registered by one
# user's reusable pre-auth key; the policy lets a member's nodes log in to each other as any
# non-root user (as in scripts/demo). The bulk and login tests run from c1.
#
# Usage (root): bench/ssh-mesh.sh [RUNS] [SIZE] [IMPAIRED_SIZE]   (defaults 3, 256M, 16M: the
# embedded server's downloads run at ~10 MB/s clean and ~0.15 MB/s at 1 % loss (BENCHMARKS.md),
# so larger sizes take far longer than the ~15 minutes these do)
# Environment: CIPHERS (default "chacha20-poly1305@openssh.com aes256-gcm@openssh.com"),
#   LOSSES (default "1 3", percent per direction; "" skips phase 2), IMPAIRED_SIZE_3 (size
#   at 3 % loss, default IMPAIRED_SIZE / 4), LOGINS (default 20), BURSTS (default RUNS),
#   TIMEOUT (seconds per ssh, default 600), CARGO_TARGET_DIR as for cargo; HOLD=1 sets
#   everything up, checks it, and waits (for inspection) instead of measuring; CAPTURE=FILE
#   captures one lossy download from ours instead (needs tcpdump).
# Raw results, uptime samples, impairment counters and copies of the daemons' logs are kept in
# /tmp/ssh-mesh-results.<pid>/ (printed at the end); everything else is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-3}"
size="${2:-256M}"
impaired_size="${3:-16M}"
ciphers="${CIPHERS:-chacha20-poly1305@openssh.com aes256-gcm@openssh.com}"
losses="${LOSSES-1 3}"
logins="${LOGINS:-20}"
bursts="${BURSTS:-$runs}"
timeout_s="${TIMEOUT:-600}"
bytes=$(numfmt --from=iec "$size")
impaired_bytes=$(numfmt --from=iec "$impaired_size")
impaired_bytes_3="${IMPAIRED_SIZE_3:+$(numfmt --from=iec "$IMPAIRED_SIZE_3")}"
impaired_bytes_3="${impaired_bytes_3:-$((impaired_bytes / 4))}"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/ssh-mesh.sh needs root (network namespaces, TUN devices, a local user)" >&2
  exit 1
fi
for tool in ip nsenter iptables-legacy ssh ssh-keygen /usr/sbin/sshd numfmt bc /usr/bin/python3; do
  command -v "$tool" >/dev/null || {
    echo "bench/ssh-mesh.sh needs $tool (apt-get install iproute2 iptables openssh-client openssh-server bc python3)" >&2
    exit 1
  }
done

cargo build --release -q -p meshd -p meshcontrol
target="${CARGO_TARGET_DIR:-target}/release"
meshd="$(realpath "$target/meshd")"
meshctl="$(realpath "$target/meshctl")"
meshcontrol="$(realpath "$target/meshcontrol")"
py=/usr/bin/python3

tag="sshm$$"
dir="$(mktemp -d /tmp/ssh-mesh.XXXXXX)"
out="/tmp/ssh-mesh-results.$$"
mkdir -p "$out"
results="$out/results"
: >"$results"
ctl_ns="${tag}-ctl"
nodes=(srv c1 c2 c3 c4 c5)
clients=(c1 c2 c3 c4 c5)
pids=()
user=meshbench

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Keep the evidence: the daemons' logs and the control server's.
  cp "$dir"/*.log "$out/" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "== failed (exit $rc); logs copied to $out; last lines:" >&2
    tail -n 15 "$dir"/*.log >&2 2>/dev/null || true
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for n in "${nodes[@]}"; do
    ip netns del "${tag}-$n" 2>/dev/null || true
    rm -rf "/etc/netns/${tag}-$n"
  done
  ip netns del "$ctl_ns" 2>/dev/null || true
  rm -rf "$dir"
  echo "== cleaned up; raw results in $results"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$(date +%T) $*" >&2; }
sample_load() { echo "# $(date +%T) $1: uptime:$(uptime | sed 's/.*load average/ load average/')" >>"$results"; }

# The bench user: /bin/sh reads no rc files, so a login measures the servers, not a shell's
# start-up. `-p '*'`: no password, yet not locked (sshd without PAM refuses a locked one).
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/sh "$user"
usermod -p '*' -s /bin/sh "$user"

log "network: $ctl_ns holds a bridge (10.79.0.1/24); one namespace per node"
ip netns add "$ctl_ns"
ip -n "$ctl_ns" link set lo up
ip -n "$ctl_ns" link add "br$tag" type bridge
ip -n "$ctl_ns" addr add 10.79.0.1/24 dev "br$tag"
ip -n "$ctl_ns" link set "br$tag" up
declare -A underlay_of # node -> its underlay address
i=2
for n in "${nodes[@]}"; do
  ns="${tag}-$n"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  underlay_of[$n]="10.79.0.$i"
  ip link add "v${tag}$i" netns "$ctl_ns" type veth peer name eth0 netns "$ns"
  ip -n "$ctl_ns" link set "v${tag}$i" master "br$tag" up
  ip -n "$ns" addr add "10.79.0.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  i=$((i + 1))
done

log "meshcontrol serve on 10.79.0.1:8080"
ip netns exec "$ctl_ns" "$meshcontrol" --state-dir "$dir/control" serve --listen 10.79.0.1:8080 \
  2>"$dir/control.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/control/admin.sock" ] && break; sleep 0.1; done
admin() { "$meshcontrol" --state-dir "$dir/control" "$@"; }
admin users create bench@example.com >/dev/null
key="$(admin preauthkeys create --user bench@example.com --reusable)"
cat >"$dir/policy.hujson" <<'POLICY'
{
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"],
           "users": ["autogroup:nonroot"]}],
}
POLICY
admin policy set --file "$dir/policy.hujson" >/dev/null

ctl() { local n="$1"; shift; ip netns exec "${tag}-$n" "$meshctl" --socket "$dir/$n/meshd.sock" "$@"; }
for n in "${nodes[@]}"; do
  ns="${tag}-$n"
  # nsenter, not `ip netns exec`: that mounts a fresh /sys, which hides the cgroup2 mount,
  # and meshd would run its sessions without their per-session cgroups (a warning in its
  # log) and its logins would skip the cgroup's cost. Only the network namespace changes.
  nsenter --net="/run/netns/$ns" "$meshd" --state-dir "$dir/$n" --tun mesh0 2>"$dir/meshd-$n.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$dir/$n/meshd.sock" ] && break; sleep 0.1; done
  ctl "$n" up --login-server http://10.79.0.1:8080 --auth-key "$key" --hostname "$n" --ssh >/dev/null
done
for n in "${nodes[@]}"; do
  for _ in $(seq 200); do
    [ "$(ctl "$n" status --json | grep -c '"fqdn"')" -ge "${#nodes[@]}" ] && break
    sleep 0.1
  done
done
srv_ip="$(ctl srv ip -4)"
log "nodes up; srv is $srv_ip"

log "sshd on $srv_ip:2222 inside srv's namespace"
mkdir -p /run/sshd
chmod 755 "$dir"
ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$dir/user_key"
cp "$dir/user_key.pub" "$dir/authorized_keys"
chmod 644 "$dir/authorized_keys"
# MaxStartups: the default (10:30:100) starts dropping unauthenticated connections beyond
# 10, which the 50-login burst would hit; raised so sshd gets the same chance as ours.
cat >"$dir/sshd_config" <<CONF
Port 2222
ListenAddress $srv_ip:2222
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
MaxStartups 200
LogLevel ERROR
CONF
ip netns exec "${tag}-srv" /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
pids+=($!)
for _ in $(seq 100); do
  ip netns exec "${tag}-srv" ss -Hltn "sport = :2222" | grep -q . && break
  sleep 0.1
done

# Known hosts: what meshctl says for the peers (srv's embedded server on port 22) and
# sshd's key on port 2222. Nothing else is trusted.
ctl c1 known-hosts >"$dir/known_hosts"
grep -q "$srv_ip" "$dir/known_hosts" || { echo "meshctl known-hosts has no line for $srv_ip" >&2; exit 1; }
echo "[$srv_ip]:2222 $(cut -d' ' -f1-2 "$dir/host_key.pub")" >>"$dir/known_hosts"
cp "$dir/known_hosts" "$out/known_hosts"

# The same client options for both servers. The key is offered only if the server asks:
# ours decides by the connecting node's WireGuard identity and accepts the first request
# (`none`), sshd wants the key.
ssh_opts=(-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes
  -o UserKnownHostsFile="$dir/known_hosts" -o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no
  -o HostKeyAlgorithms=ssh-ed25519 -o KexAlgorithms=curve25519-sha256
  -o IdentitiesOnly=yes -i "$dir/user_key" -o ConnectTimeout=30 -l "$user")
port_for() { [ "$1" = ours ] && echo 22 || echo 2222; }
# cssh CLIENT SERVER CIPHER COMMAND...: ssh from CLIENT's namespace to srv.
cssh() {
  local client="$1" server="$2" cipher="$3"
  shift 3
  timeout "$timeout_s" ip netns exec "${tag}-$client" \
    ssh "${ssh_opts[@]}" -p "$(port_for "$server")" -c "$cipher" "$srv_ip" "$@"
}
now() { date +%s.%N; }

# Logins timed inside the client's namespace (no `ip netns exec` in the figure). `seq`:
# one login, prints "rc ms". `burst START N`: N logins started at the epoch START, one line
# "rc ms" each (stderr of each kept in ERRDIR).
cat >"$dir/timer.py" <<'PY'
import os, subprocess, sys, time
mode, errdir, tag = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "seq":
    cmd = sys.argv[4:]
    t0 = time.monotonic()
    rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    print(rc, f"{(time.monotonic() - t0) * 1000:.2f}")
    sys.exit(0)
start, n, cmd = float(sys.argv[4]), int(sys.argv[5]), sys.argv[6:]
delay = start - time.time()
if delay > 0:
    time.sleep(delay)
procs = {}
for i in range(n):
    err = open(os.path.join(errdir, f"{tag}-{i}.err"), "wb")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    procs[p.pid] = (t0, i)
out = []
while procs:
    pid, status = os.wait()
    t1 = time.monotonic()
    if pid in procs:
        t0, i = procs.pop(pid)
        out.append(f"{os.waitstatus_to_exitcode(status)} {(t1 - t0) * 1000:.2f}")
print("\n".join(out))
PY
mkdir -p "$dir/burst"

# One login from CLIENT to SERVER; appends "login - SERVER ms" (or a failure) to results.
login_once() { # phase client server
  local r
  r="$(ip netns exec "${tag}-$2" "$py" "$dir/timer.py" seq "$dir" x \
    ssh "${ssh_opts[@]}" -p "$(port_for "$3")" -c chacha20-poly1305@openssh.com "$srv_ip" true)"
  if [ "${r%% *}" = 0 ]; then
    echo "$1 login - $3 ${r#* }" >>"$results"
  else
    echo "$1 login - $3 fail" >>"$results"
    log "login to $3 from $2 FAILED (rc ${r%% *})"
  fi
}

# Byte-exact checks for both servers, both directions: a figure is only ever taken from a
# path that has just moved the right number of bytes.
check_bytes() { # phase bytes cipher...
  local phase="$1" n="$2" server cipher got want
  shift 2
  for server in ours sshd; do
    for cipher in "$@"; do
      got="$(head -c "$n" /dev/urandom | tee "$dir/check.in" | cssh c1 "$server" "$cipher" 'cat >/tmp/meshbench-check.$$; wc -c </tmp/meshbench-check.$$; sha256sum </tmp/meshbench-check.$$; rm -f /tmp/meshbench-check.$$' | tr '\n' ' ')"
      want="$n $(sha256sum <"$dir/check.in" | tr '\n' ' ')"
      [ "$got" = "$want" ] || { echo "$phase: upload check to $server ($cipher): got '$got', want '$want'" >&2; exit 1; }
      got="$(cssh c1 "$server" "$cipher" "head -c $n /dev/zero" | wc -c)"
      [ "$got" = "$n" ] || { echo "$phase: download check from $server ($cipher): got $got bytes, want $n" >&2; exit 1; }
    done
  done
  log "$phase: byte checks passed ($(numfmt --to=iec "$n") each way, both servers, $*)"
}

bulk_round() { # phase bytes cipher...
  local phase="$1" n="$2" server cipher t0 t1
  shift 2
  for server in ours sshd; do
    for cipher in "$@"; do
      t0=$(now)
      if head -c "$n" /dev/zero | cssh c1 "$server" "$cipher" 'cat >/dev/null'; then
        t1=$(now)
        echo "$phase upload $cipher $server $(echo "$n / ($t1 - $t0) / 1000000" | bc -l)" >>"$results"
      else
        echo "$phase upload $cipher $server fail" >>"$results"
        log "$phase upload to $server ($cipher) FAILED"
      fi
      t0=$(now)
      if cssh c1 "$server" "$cipher" "head -c $n /dev/zero" >/dev/null; then
        t1=$(now)
        echo "$phase download $cipher $server $(echo "$n / ($t1 - $t0) / 1000000" | bc -l)" >>"$results"
      else
        echo "$phase download $cipher $server fail" >>"$results"
        log "$phase download from $server ($cipher) FAILED"
      fi
    done
  done
}

# Warm-up: every client's tunnel to srv handshaken, both servers answering.
for c in "${clients[@]}"; do
  cssh "$c" ours chacha20-poly1305@openssh.com true
  cssh "$c" sshd chacha20-poly1305@openssh.com true
done
# shellcheck disable=SC2086
check_bytes clean $((4 << 20)) $ciphers
if [ -n "${HOLD:-}" ]; then
  # For inspection: the tailnet stays up until the script is stopped.
  declare -p ssh_opts >"$dir/ssh_opts.sh"
  log "HOLD: tailnet up; namespaces ${tag}-{srv,c1..c5}, srv $srv_ip, ssh options in $dir/ssh_opts.sh; stop with kill $$"
  trap 'exit 0' INT TERM
  while true; do sleep 3600 & wait $!; done
fi
ctl srv debug metrics >"$out/metrics-srv-start.json" 2>/dev/null || true

echo "# runs $runs size $size impaired_size $impaired_size impaired_bytes_3 $impaired_bytes_3 logins $logins bursts $bursts ciphers $ciphers" >>"$results"
if grep -q "no usable cgroup" "$dir/meshd-srv.log"; then
  echo "# srv's meshd: no usable cgroup v2, sessions run without per-session cgroups" >>"$results"
else
  echo "# srv's meshd: per-session cgroups in use" >>"$results"
fi
sample_load "start"
log "phase 1: bulk, $runs rounds of $size per direction, server and cipher"
for round in $(seq "$runs"); do
  # shellcheck disable=SC2086
  bulk_round clean "$bytes" $ciphers
  sample_load "clean round $round"
  log "  round $round done"
done

# Phase 2: an impaired underlay between srv and c1: 15 ms delay and LOSS % loss on each
# direction (30 ms RTT). This kernel has no sch_netem, so the tunnel's datagrams are taken at
# each node's INPUT hook by an NFQUEUE rule (iptables-legacy; the kernel segments meshd's UDP
# GSO batches there, so the loss applies to single datagrams) and impair.py drops each with
# probability LOSS and releases the rest after 15 ms, in order: what `netem delay 15ms
# loss LOSS%` on both ends would do.
cat >"$dir/impair.py" <<'IMPAIR'
# Link impairment without sch_netem (this kernel has none): packets queued to userspace by
# an NFQUEUE rule are dropped with probability LOSS and otherwise
# released after DELAY, in arrival order. Usage: impair.py QUEUE DELAY_MS LOSS_PERCENT STATS
import os, random, select, signal, socket, struct, sys, time
from collections import deque

queue, delay, loss, stats_path = int(sys.argv[1]), float(sys.argv[2]) / 1000, float(sys.argv[3]) / 100, sys.argv[4]
NETLINK_NETFILTER, NFNL_SUBSYS_QUEUE = 12, 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG, MSG_VERDICT_BATCH = 0, 1, 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLMSG_ERROR = 1, 4, 2
NF_DROP, NF_ACCEPT = 0, 1

s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((0, 0))
seq = 0

def attr(kind, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * ((4 - n % 4) % 4)

def send(msg_type, attrs, family=socket.AF_UNSPEC, flags=NLM_F_REQUEST):
    global seq
    seq += 1
    body = struct.pack("=BBH", family, 0, socket.htons(queue)) + b"".join(attrs)
    s.send(struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0) + body)

def expect_ack():
    data = s.recv(65536)
    length, kind = struct.unpack_from("=IH", data)
    if kind == NLMSG_ERROR:
        err = struct.unpack_from("=i", data, 16)[0]
        if err:
            sys.exit(f"impair: netlink config error {err}")

# Bind the queue, copy only the metadata (the id is all a verdict needs), room for 64k.
send(MSG_CONFIG, [attr(1, struct.pack("=BBH", 1, 0, socket.htons(socket.AF_INET)))], socket.AF_INET, NLM_F_REQUEST | NLM_F_ACK)
expect_ack()
send(MSG_CONFIG, [attr(2, struct.pack("!IB", 0, 1)), attr(3, struct.pack("!I", 65536))], socket.AF_INET, NLM_F_REQUEST | NLM_F_ACK)
expect_ack()
seen = dropped = 0

def write_stats():
    with open(stats_path, "w") as f:
        f.write(f"packets {seen} dropped {dropped} ({100 * dropped / max(seen, 1):.2f} %) delay {delay * 1000:.1f} ms\n")

write_stats()  # also: the queue is bound

def verdict(pid, v, batch=False):
    send(MSG_VERDICT_BATCH if batch else MSG_VERDICT, [attr(2, struct.pack("!II", v, pid))])

held = deque()  # (due, id)
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)

last_stats = time.monotonic()
while not stop:
    now = time.monotonic()
    if held and held[0][0] <= now:
        last = None
        while held and held[0][0] <= now:
            last = held.popleft()[1]
        verdict(last, NF_ACCEPT, batch=True)  # all ids up to `last` still queued (in order)
    timeout = max(0.0, held[0][0] - now) if held else 0.5
    try:
        ready, _, _ = select.select([s], [], [], timeout)
    except InterruptedError:
        continue
    if not ready:
        if now - last_stats > 1:
            write_stats(); last_stats = now
        continue
    while True:
        try:
            data = s.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        except OSError as e:  # ENOBUFS: the kernel dropped messages; the packets time out in the queue
            print(f"impair: {e}", file=sys.stderr)
            break
        off = 0
        arrived = time.monotonic()
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == (NFNL_SUBSYS_QUEUE << 8) | MSG_PACKET:
                a = off + 20
                while a + 4 <= off + length:
                    alen, akind = struct.unpack_from("=HH", data, a)
                    if akind & 0x7fff == 1:  # NFQA_PACKET_HDR
                        pid = struct.unpack_from("!I", data, a + 4)[0]
                        seen += 1
                        if random.random() < loss:
                            dropped += 1
                            verdict(pid, NF_DROP)
                        else:
                            held.append((arrived + delay, pid))
                        break
                    a += (alen + 3) & ~3
            off += (length + 3) & ~3
# Release what is still held, then report.
if held:
    verdict(held[-1][1], NF_ACCEPT, batch=True)
write_stats()
IMPAIR
impair() { # loss%
  local n peer
  for n in srv c1; do
    peer=$([ "$n" = srv ] && echo c1 || echo srv)
    ip netns exec "${tag}-$n" "$py" "$dir/impair.py" 0 15 "$1" "$dir/impair-$n.stats" 2>>"$dir/impair-$n.log" &
    pids+=($!)
    for _ in $(seq 50); do [ -s "$dir/impair-$n.stats" ] && break; sleep 0.1; done
    [ -s "$dir/impair-$n.stats" ] || { echo "impair.py did not start in $n" >&2; exit 1; }
    ip netns exec "${tag}-$n" iptables-legacy -A INPUT -i eth0 -p udp -s "${underlay_of[$peer]}" \
      --dport 41641 -j NFQUEUE --queue-num 0
  done
}
unimpair() {
  local n pid
  for n in srv c1; do
    ip netns exec "${tag}-$n" iptables-legacy -F INPUT
  done
  sleep 0.1
  for pid in "${pids[@]}"; do
    if grep -q impair.py "/proc/$pid/cmdline" 2>/dev/null; then kill "$pid"; wait "$pid" || true; fi
  done
  for n in srv c1; do
    sed "s/^/# impairment on $n's input: /" "$dir/impair-$n.stats" >>"$results"
    rm -f "$dir/impair-$n.stats"
  done
}
# CAPTURE=FILE: one 1 MB download from ours at 1 % loss, captured on c1's TUN (tcpdump
# headers only) into FILE, then exit: how the embedded server's TCP recovers, segment by
# segment.
if [ -n "${CAPTURE:-}" ]; then
  impair 1
  tun=$(ip -n "${tag}-c1" -o link | awk -F': ' '$2 !~ /^(lo|eth0)/ {print $2}' | cut -d@ -f1 | head -1)
  log "capturing on c1's $tun into $CAPTURE"
  ip netns exec "${tag}-c1" tcpdump -i "$tun" -s 120 -w "$CAPTURE" tcp port 22 2>/dev/null &
  tcpdump_pid=$!
  sleep 1
  t0=$(date +%s.%N)
  got=$(cssh c1 ours chacha20-poly1305@openssh.com "head -c 1000000 /dev/zero" | wc -c)
  log "downloaded $got bytes in $(echo "$(date +%s.%N) - $t0" | bc) s"
  sleep 1; kill "$tcpdump_pid"; wait "$tcpdump_pid" || true
  unimpair
  exit 0
fi
for loss in $losses; do
  n="$impaired_bytes"
  [ "$loss" = 3 ] && n="$impaired_bytes_3"
  log "phase 2: underlay 15 ms + $loss % loss each way, $runs rounds of $(numfmt --to=iec "$n") per direction and server"
  impair "$loss"
  echo "# loss$loss bytes $n" >>"$results"
  ip netns exec "${tag}-c1" ping -c 3 -i 0.3 -q "$srv_ip" | tail -1 | sed 's/^/# ping over the mesh: /' >>"$results" || true
  check_bytes "loss$loss" $((256 << 10)) chacha20-poly1305@openssh.com
  for round in $(seq "$runs"); do
    bulk_round "loss$loss" "$n" chacha20-poly1305@openssh.com
    sample_load "loss$loss round $round"
    log "  round $round done"
  done
  unimpair
done
ctl srv debug metrics >"$out/metrics-srv-after-impaired.json" 2>/dev/null || true

log "phase 3: ssh host true, $logins alternating logins per server"
sample_load "logins"
for _ in $(seq "$logins"); do
  login_once login c1 ours
  login_once login c1 sshd
done

log "phase 4: 50 concurrent logins (5 clients x 10), $bursts rounds per server"
for round in $(seq "$bursts"); do
  for server in ours sshd; do
    start=$(echo "$(date +%s.%N) + 2" | bc -l)
    bpids=()
    for c in "${clients[@]}"; do
      ip netns exec "${tag}-$c" "$py" "$dir/timer.py" burst "$dir/burst" "$server-$round-$c" "$start" 10 \
        ssh "${ssh_opts[@]}" -p "$(port_for "$server")" -c chacha20-poly1305@openssh.com "$srv_ip" true \
        >"$dir/burst/$server-$round-$c.txt" &
      bpids+=($!)
    done
    for pid in "${bpids[@]}"; do wait "$pid"; done
    ok=0
    for c in "${clients[@]}"; do
      while read -r rc ms; do
        if [ "$rc" = 0 ]; then
          echo "burst login - $server $ms" >>"$results"
          ok=$((ok + 1))
        else
          echo "burst login - $server fail" >>"$results"
        fi
      done <"$dir/burst/$server-$round-$c.txt"
    done
    log "  round $round $server: $ok/50 logins succeeded"
    if [ "$ok" -ne 50 ]; then
      mkdir -p "$out/burst-errors"
      cp "$dir/burst/$server-$round-"* "$out/burst-errors/" 2>/dev/null || true
    fi
    sample_load "burst round $round $server"
    sleep 1
  done
done
ctl srv debug metrics >"$out/metrics-srv-end.json" 2>/dev/null || true

"$py" - "$results" <<'PY'
import collections, math, statistics, sys
rows = collections.defaultdict(list)
fails = collections.Counter()
for line in open(sys.argv[1]):
    if line.startswith("#"):
        continue
    phase, what, cipher, server, value = line.split()
    if value == "fail":
        fails[(phase, what, cipher, server)] += 1
    else:
        rows[(phase, what, cipher, server)].append(float(value))

def med(k):
    v = rows.get(k)
    return statistics.median(v) if v else float("nan")

def pct(v, p):
    # nearest rank
    v = sorted(v)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]

def fail_note(*keys):
    n = sum(fails[k] for k in keys)
    return f"  ({n} FAILED)" if n else ""

print()
print("SSH over the mesh, embedded server (ours, port 22) vs sshd (port 2222) on srv's mesh address; medians")
print(f"{'test':44} {'ours':>12} {'sshd':>12} {'ratio':>7}  n")
phases = [p for p in ("clean", "loss1", "loss3") if any(k[0] == p for k in rows) or any(k[0] == p for k in fails)]
for phase in phases:
    ciphers = sorted({k[2] for k in list(rows) + list(fails) if k[0] == phase}, reverse=True)
    for what in ("upload", "download"):
        for cipher in ciphers:
            ko, ks = (phase, what, cipher, "ours"), (phase, what, cipher, "sshd")
            o, s = med(ko), med(ks)
            label = f"{phase} {what} {cipher.split('@')[0]}"
            print(f"{label:44} {o:8.2f} MB/s {s:8.2f} MB/s {o / s:6.2f}x  {len(rows.get(ko, []))}/{len(rows.get(ks, []))}"
                  + fail_note(ko, ks))
ko, ks = ("login", "login", "-", "ours"), ("login", "login", "-", "sshd")
if ko in rows or ks in rows:
    o, s = med(ko), med(ks)
    print(f"{'ssh host true (sequential)':44} {o:9.1f} ms {s:9.1f} ms {o / s:6.2f}x  {len(rows.get(ko, []))}/{len(rows.get(ks, []))}"
          + fail_note(ko, ks))
for server in ("ours", "sshd"):
    k = ("burst", "login", "-", server)
    v = rows.get(k, [])
    if v or fails[k]:
        print(f"50 concurrent logins, {server:4}: {len(v)} ok, {fails[k]} failed; "
              f"p50 {pct(v, 50):.0f} ms, p99 {pct(v, 99):.0f} ms, max {max(v):.0f} ms" if v else
              f"50 concurrent logins, {server}: all {fails[k]} failed")
PY
echo "raw results: $results"
