#!/usr/bin/env bash
# Issue 12's check-mode latency: the time from approving a held SSH login in the browser to
# the login proceeding (target <= 1 s). A `check` rule holds every login from node A to node
# B; each login is approved in a real headless Chromium, two flavours, alternating:
#   sso      the check link /check/<token> that the ssh client shows, SSO button, sign in at
#            the identity provider as alice (tests/oidc/provider.mjs; the check asks for
#            prompt=login, so the provider's form every time). t0 is just before pressing
#            the SSO button, so the figure INCLUDES the provider round trip; the time from
#            submitting the provider's form, and from the provider's redirect back to
#            /oidc/callback leaving the browser, are reported too.
#   console  the admin console's pending page, signed in once by SSO as alice (group eng is
#            --console-admin-groups); t0 just before clicking the approve button.
# t1 is when ssh's stdout line ("proceeded") arrives. Both are taken in one process
# (bench/check-approve.mjs, which drives Chromium with playwright-core like
# tests/oidc/drive.mjs and reads ssh's output). Reported: p50/p99/max per flavour (nearest
# rank), and, for information, the time from starting ssh to the hold's banner on its
# stderr (then checked in `meshcontrol auth list --json`).
# Each login is held anew: the rule's checkPeriod is 1s (the shortest the policy takes) and
# the next run starts 1.5 s after the previous one proceeded (the server's clock is whole
# seconds, refreshed every second; a login that is not held is a failure), so the approval
# path measured is the real one (it records and persists the approval), not "always"'s.
# Topology (as bench/ssh-mesh.sh): meshcontrol in its own namespace holding a bridge, with
# the identity provider and the browser on that namespace's loopback/bridge; nodes a and b,
# a meshd each in its own namespace on the bridge, both alice's (a reusable pre-auth key);
# ssh runs in a's namespace to b's mesh address as a local user made for the run.
#
# Usage (root): bench/check-approve.sh [RUNS]   (default 20 per flavour; RUNS env too)
# Environment: FLAVOURS (default "sso console"), LOG (RUST_LOG for the daemons, default
#   info; debug for the time line of one approval), TIMEOUT (ms per wait, default 20000),
#   CARGO_TARGET_DIR as for cargo.
# Raw results (runs.jsonl, one line per login), the summary and copies of the daemons' logs
# are kept in /tmp/check-approve-results.<pid>/; everything else is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-${RUNS:-20}}"
flavours="${FLAVOURS:-sso console}"
timeout_ms="${TIMEOUT:-20000}"

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/check-approve.sh needs root (network namespaces, TUN devices, a local user)" >&2
  exit 1
fi
for tool in ip nsenter ssh node /usr/bin/chromium /usr/bin/python3 useradd userdel; do
  command -v "$tool" >/dev/null || {
    echo "bench/check-approve.sh needs $tool (apt-get install iproute2 openssh-client nodejs chromium python3)" >&2
    exit 1
  }
done
if [ ! -d tests/oidc/node_modules/oidc-provider ] || [ ! -d tests/oidc/node_modules/playwright-core ]; then
  echo "bench/check-approve.sh needs tests/oidc/node_modules (cd tests/oidc && npm ci)" >&2
  exit 1
fi

cargo build --release -q -p meshd -p meshcontrol
target="${CARGO_TARGET_DIR:-target}/release"
meshd="$(realpath "$target/meshd")"
meshctl="$(realpath "$target/meshctl")"
meshcontrol="$(realpath "$target/meshcontrol")"
py=/usr/bin/python3

tag="chk$$"
dir="$(mktemp -d /tmp/check-approve.XXXXXX)"
out="/tmp/check-approve-results.$$"
mkdir -p "$out"
ctl_ns="${tag}-ctl"
nodes=(a b)
pids=()
user="meshchk$$"
made_user=

# shellcheck disable=SC2317 # run by the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  cp "$dir"/*.log "$out/" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "== failed (exit $rc); logs copied to $out; last lines:" >&2
    tail -n 15 "$dir"/*.log >&2 2>/dev/null || true
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for n in "${nodes[@]}"; do
    ip netns del "${tag}-$n" 2>/dev/null || true
  done
  ip netns del "$ctl_ns" 2>/dev/null || true
  if [ -n "$made_user" ]; then userdel -r "$user" 2>/dev/null || true; fi
  rm -rf "$dir"
  echo "== cleaned up; raw results in $out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$(date +%T) $*" >&2; }

# The local user the logins run as: /bin/sh, no password yet not locked.
useradd -m -s /bin/sh "$user"
made_user=1
usermod -p '*' "$user"

log "network: $ctl_ns holds a bridge (10.78.0.1/24); one namespace per node"
ip netns add "$ctl_ns"
ip -n "$ctl_ns" link set lo up
ip -n "$ctl_ns" link add "br$tag" type bridge
ip -n "$ctl_ns" addr add 10.78.0.1/24 dev "br$tag"
ip -n "$ctl_ns" link set "br$tag" up
i=2
for n in "${nodes[@]}"; do
  ns="${tag}-$n"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "v${tag}$i" netns "$ctl_ns" type veth peer name eth0 netns "$ns"
  ip -n "$ctl_ns" link set "v${tag}$i" master "br$tag" up
  ip -n "$ns" addr add "10.78.0.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  i=$((i + 1))
done

url=http://10.78.0.1:8080
log "identity provider on 127.0.0.1:9557 in $ctl_ns"
echo "check-approve-secret-$$" >"$dir/client-secret"
nsenter --net="/run/netns/$ctl_ns" node tests/oidc/provider.mjs 9557 "$url/oidc/callback" "check-approve-secret-$$" \
  >"$dir/provider.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q '^issuer ' "$dir/provider.log" && break; sleep 0.1; done
grep -q '^issuer ' "$dir/provider.log" || { echo "the provider did not start" >&2; exit 1; }

log "meshcontrol serve on $url (SSO, console admins: group eng)"
NO_COLOR=1 RUST_LOG="${LOG:-info}" nsenter --net="/run/netns/$ctl_ns" "$meshcontrol" --state-dir "$dir/control" \
  serve --listen 10.78.0.1:8080 --server-url "$url" \
  --oidc-issuer http://127.0.0.1:9557 --oidc-client-id meshcontrol --oidc-client-secret-file "$dir/client-secret" \
  --console-admin-groups eng 2>"$dir/control.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/control/admin.sock" ] && break; sleep 0.1; done
admin() { "$meshcontrol" --state-dir "$dir/control" "$@"; }
admin users create alice@example.com >/dev/null
key="$(admin preauthkeys create --user alice@example.com --reusable)"
# checkPeriod 1s: the shortest the policy parser takes (see the header).
cat >"$dir/policy.hujson" <<'POLICY'
{
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [{"action": "check", "checkPeriod": "1s", "src": ["autogroup:member"],
           "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}],
}
POLICY
admin policy set --file "$dir/policy.hujson" >/dev/null

ctl() { local n="$1"; shift; ip netns exec "${tag}-$n" "$meshctl" --socket "$dir/$n/meshd.sock" "$@"; }
for n in "${nodes[@]}"; do
  # nsenter, not `ip netns exec` (see bench/ssh-mesh.sh): the cgroup2 mount stays visible.
  NO_COLOR=1 RUST_LOG="${LOG:-info}" nsenter --net="/run/netns/${tag}-$n" "$meshd" --state-dir "$dir/$n" --tun mesh0 \
    2>"$dir/meshd-$n.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$dir/$n/meshd.sock" ] && break; sleep 0.1; done
  ctl "$n" up --login-server "$url" --auth-key "$key" --hostname "$n" --ssh >/dev/null
done
for n in "${nodes[@]}"; do
  for _ in $(seq 200); do
    [ "$(ctl "$n" status --json | grep -c '"fqdn"')" -ge "${#nodes[@]}" ] && break
    sleep 0.1
  done
done
b_ip="$(ctl b ip -4)"
log "nodes up; b is $b_ip"

# Known hosts: what meshctl says for the peers; nothing else is trusted.
ctl a known-hosts >"$dir/known_hosts"
grep -q "$b_ip" "$dir/known_hosts" || { echo "meshctl known-hosts has no line for $b_ip" >&2; exit 1; }
chmod 755 "$dir"
chmod 644 "$dir/known_hosts"

# The driver's configuration: the ssh it runs (in a's namespace), the admin CLI it checks
# holds with, where the node's log is (its "SSH check approved" line, microseconds).
"$py" - "$dir/config.json" <<PY
import json, sys
json.dump({
    "runs": $runs,
    "flavours": "$flavours".split(),
    "serverUrl": "$url",
    "ssh": ["nsenter", "--net=/run/netns/${tag}-a", "ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=$dir/known_hosts",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
            "-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "ConnectTimeout=30", "-l", "$user",
            "$b_ip", "echo proceeded"],
    "admin": ["$meshcontrol", "--state-dir", "$dir/control"],
    "out": "$out",
    "nodeLog": "$dir/meshd-b.log",
    "gapMs": 1500,
    "timeoutMs": $timeout_ms,
}, open(sys.argv[1], "w"), indent=1)
PY
cp "$dir/config.json" "$out/"

{
  echo "# $(date -u +%FT%TZ) runs $runs flavours $flavours"
  echo "# nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); kernel $(uname -r)"
  echo "# uptime at start:$(uptime | sed 's/.*load average/ load average/')"
} >"$out/summary"
log "$runs held logins per flavour ($flavours), alternating, after one warm-up each"
rc=0
nsenter --net="/run/netns/$ctl_ns" node bench/check-approve.mjs "$dir/config.json" 2>&1 | tee "$out/driver.log" >&2 || rc=$?
echo "# uptime at end:$(uptime | sed 's/.*load average/ load average/')" >>"$out/summary"

[ -s "$out/runs.jsonl" ] || { echo "no runs recorded (see $out/driver.log)" >&2; exit 1; }
"$py" - "$out/runs.jsonl" >>"$out/summary" <<'PY'
import collections, json, math, sys
rows = collections.defaultdict(list)
fails = collections.Counter()
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("warmup"):
        continue
    if r["ok"]:
        rows[r["flavour"]].append(r)
    else:
        fails[r["flavour"]] += 1

def pct(v, p):  # nearest rank
    v = sorted(v)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]

def fig(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return f"p50 {pct(v, 50):6.0f}  p99 {pct(v, 99):6.0f}  max {max(v):6.0f} ms" if v else "-"

labels = {
    "approve_ms": "click to ssh output (the figure)",
    "submit_ms": "  provider form submitted to ssh output",
    "request_ms": "  approving request sent to ssh output",
    "node_ms": "  node logs the approval to ssh output",
    "response_ms": "  approving request's response time",
    "page_ms": "  click to the page loaded",
    "hold_ms": "ssh start to the hold's banner (info)",
}
print()
print("Approving a held SSH login in the browser: from the click to ssh's output (target <= 1 s)")
for flavour in ("sso", "console"):
    rs = rows.get(flavour, [])
    if not rs and not fails[flavour]:
        continue
    what = {"sso": "check link + SSO as alice (t0: #sso pressed; includes the provider)",
            "console": "admin console pending page (t0: approve clicked)"}[flavour]
    print(f"{flavour}: {what}; {len(rs)} ok, {fails[flavour]} failed")
    for k, label in labels.items():
        if any(r.get(k) is not None for r in rs):
            print(f"  {label:42} {fig(rs, k)}")
PY
cat "$out/summary"
exit "$rc"
