# Shared by bench/wg-iperf.sh and bench/wg-ping.sh (sourced, not run): two network
# namespaces joined by one veth pair, and either two meshd nodes (`meshd --wg-config`) or
# two wireguard-go instances (Debian's, configured with wg) between them, tunnel addresses
# 10.90.0.1 (a) and 10.90.0.2 (b). `start_pair IMPL`, `stop_all`; cleanup on exit.
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

# Both ends of IMPL (meshd or wggo) up, and one ping through.
start_pair() {
  if [ "$1" = meshd ]; then
    start_meshd a "$key_a" "$pub_b" 192.168.90.1 192.168.90.2 10.90.0.1 10.90.0.2
    start_meshd b "$key_b" "$pub_a" 192.168.90.2 192.168.90.1 10.90.0.2 10.90.0.1
  else
    start_wggo a "$work/a.key" "$pub_b" 192.168.90.1 192.168.90.2 10.90.0.1 10.90.0.2
    start_wggo b "$work/b.key" "$pub_a" 192.168.90.2 192.168.90.1 10.90.0.2 10.90.0.1
  fi
  ip netns exec "$ns_a" ping -c 2 -i 0.2 -W 2 10.90.0.2 >/dev/null
}

# An iperf3 server in b on port $1, once listening; its pid in $iperf_server.
start_iperf_server() {
  ip netns exec "$ns_b" iperf3 -s -1 -p "$1" >/dev/null 2>&1 &
  iperf_server=$!
  for _ in $(seq 100); do ip netns exec "$ns_b" ss -Hltn "sport = :$1" | grep -q . && break; sleep 0.05; done
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
