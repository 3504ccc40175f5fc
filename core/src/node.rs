//! One node of the mesh, composed: WireGuard, the packet filter with connection tracking,
//! the userspace TCP stack for services the node serves itself, and MagicDNS.
//!
//! Inputs: datagrams from the UDP socket ([`Node::handle_datagram`]), IP packets from the
//! TUN device ([`Node::handle_tun_packet`]), time ([`Node::handle_timeout`]), the netmap
//! and the filter from the coordination server, and TCP calls from the services above.
//! Outputs: datagrams ([`Node::poll_transmit`]), packets for the TUN
//! ([`Node::poll_tun_packet`]), events ([`Node::poll_event`]) and [`Node::poll_timeout`].
//!
//! Inbound path: WireGuard authenticates the packet and checks its inner source against the
//! peer's allowed IPs, then the flow table or the filter must allow it; then it goes to the
//! TCP stack when its destination is a port served in the core, else to the TUN.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use smoltcp::wire::{Ipv4Packet, UdpPacket};
use thiserror::Error;
use tracing::{debug, trace};

use crate::dns::tcp::TcpFramer;
use crate::dns::{HostAddrs, MagicDns, MAGIC_DNS_ADDR};
use crate::ip::{build, Filter, FlowKey, FlowTable, IcmpKind, Origin, PacketInfo, Proto, TcpFlags};
use crate::rng::{Rng, SEED_LEN};
use crate::ssh::server::{ServerConfig, ServerSession};
use crate::ssh::validate::SshConfigError;
use crate::tcp::{ConnId, TcpConfig, TcpConfigError, TcpError, TcpEvent, TcpStack, TcpStats};
use crate::time::{Instant, UnixTime};
use crate::wireguard::{
    self, DropReason, IpPrefix, PeerConfig, PeerId, PresharedKey, PrivateKey, PublicKey, Received, Transmit, WireGuard,
    DATA_HEADER_LEN,
};
use ssh::SshServer;
pub use ssh::{SessionId, SshEvent, SshServerConfig, SshStats, SSH_HIGH_WATER};

/// The SSH port served in the core when SSH is on.
pub const SSH_PORT: u16 = 22;
const DNS_PORT: u16 = 53;
/// How often idle flows are swept.
const FLOW_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// What a node is.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub private_key: PrivateKey,
    pub mesh_v4: Ipv4Addr,
    pub mesh_v6: Option<Ipv6Addr>,
    /// The tailnet's DNS domain (names are `<node>.<domain>`).
    pub dns_domain: String,
    /// Serve SSH on port 22 of the mesh addresses, in the core (see [`ssh`]).
    pub ssh: Option<SshServerConfig>,
    /// TCP ports served in the core on the mesh addresses for the application (as a
    /// tsnet listener): accepted connections are reported as [`TcpEvent::Accepted`].
    pub tcp_services: Vec<u16>,
    /// No TUN behind the node (userspace mode, an embedded node): a SYN to a port not
    /// served in the core is answered with a RST, as a kernel would answer it, instead
    /// of going to a TUN side nobody reads (where the caller would wait out its timeout).
    pub refuse_unserved_tcp: bool,
    pub tcp: TcpConfig,
    pub wireguard: WireGuardTuning,
    pub max_flows: usize,
}

/// WireGuard knobs beyond the key (see [`wireguard::Config`]).
#[derive(Clone, Copy, Debug)]
pub struct WireGuardTuning {
    pub handshake_load_threshold: u32,
}

impl Default for WireGuardTuning {
    fn default() -> Self {
        Self { handshake_load_threshold: wireguard::constants::DEFAULT_HANDSHAKE_LOAD_THRESHOLD }
    }
}

impl NodeConfig {
    /// A node with SSH off and default sizes.
    pub fn new(private_key: PrivateKey, mesh_v4: Ipv4Addr, dns_domain: &str) -> Self {
        Self {
            private_key,
            mesh_v4,
            mesh_v6: None,
            dns_domain: dns_domain.to_string(),
            ssh: None,
            tcp_services: Vec::new(),
            refuse_unserved_tcp: false,
            tcp: TcpConfig::default(),
            wireguard: WireGuardTuning::default(),
            max_flows: FlowTable::DEFAULT_CAPACITY,
        }
    }
}

/// A peer as the netmap describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetmapPeer {
    /// Single DNS label (`laptop`).
    pub name: String,
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub mesh_v4: Ipv4Addr,
    pub mesh_v6: Option<Ipv6Addr>,
    /// Routes beyond its own addresses (subnet routes, exit node).
    pub routes: Vec<IpPrefix>,
}

/// WireGuard settings of a peer that a netmap does not carry (a wg-quick file does): kept
/// per key by [`Node::set_peer_options`] and applied whenever the peer is in the netmap.
#[derive(Clone, Debug, Default)]
pub struct PeerOptions {
    pub preshared_key: Option<PresharedKey>,
    /// Persistent keepalive interval (`None` or zero: off).
    pub persistent_keepalive: Option<Duration>,
}

/// Something the application must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    Tcp(TcpEvent),
    /// The SSH server on port 22 (only with [`NodeConfig::ssh`]).
    Ssh(SshEvent),
    WireGuard(wireguard::Event),
    /// A flow the new filter no longer allows was cut (TCP served in the core: reset).
    FlowCut(FlowKey),
    /// A peer left the netmap, or came back with another key or other addresses (then
    /// under a new `PeerId`). Its flows are forgotten and its core connections closed
    /// (each reports `Closed`); whatever the application tied to this `PeerId` must end.
    PeerGone {
        peer: PeerId,
    },
}

/// Why the node could not be built.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("wireguard: {0}")]
    WireGuard(#[from] wireguard::ConfigError),
    #[error("{0}")]
    Tcp(#[from] TcpConfigError),
    #[error("{0}")]
    Ssh(#[from] SshConfigError),
}

/// Counters of what the node dropped or forwarded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub inbound_malformed: u64,
    pub inbound_filtered: u64,
    pub inbound_not_for_us: u64,
    pub inbound_to_tun: u64,
    pub inbound_to_stack: u64,
    /// SYNs to unserved ports answered with a RST ([`NodeConfig::refuse_unserved_tcp`]).
    pub inbound_refused: u64,
    pub outbound_malformed: u64,
    pub outbound_no_route: u64,
    pub outbound_dropped: u64,
    pub dns_queries: u64,
    pub flows_cut: u64,
}

/// One node.
pub struct Node {
    wg: WireGuard,
    filter: Filter,
    flows: FlowTable,
    tcp: TcpStack,
    ssh: Option<SshServer>,
    dns: MagicDns,
    /// This node's own mesh addresses.
    addrs: Vec<IpAddr>,
    netmap: BTreeMap<PublicKey, (PeerId, NetmapPeer)>,
    peer_options: BTreeMap<PublicKey, PeerOptions>,
    /// DNS over TCP connections (from the TUN side): unread queries, unsent answers.
    dns_conns: BTreeMap<ConnId, TcpFramer>,
    /// DNS over TCP connections whose client sent its FIN (read no more: the stack
    /// reports `Readable` again after every read past the FIN).
    dns_finished: BTreeSet<ConnId>,
    tun_out: VecDeque<BytesMut>,
    events: VecDeque<NodeEvent>,
    next_sweep: Instant,
    stats: NodeStats,
    refuse_unserved_tcp: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("addrs", &self.addrs).field("wg", &self.wg).finish_non_exhaustive()
    }
}

/// The mesh's address ranges (reverse DNS inside them is ours).
fn mesh_ranges() -> Vec<IpPrefix> {
    let v4 = IpPrefix::new(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)), 10);
    let v6 = IpPrefix::new(IpAddr::V6(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0)), 48);
    [v4, v6].into_iter().flatten().collect()
}

impl Node {
    /// A node with no peers and a deny-all filter. `seed` (32 bytes from the OS in
    /// production, see [`crate::rng`]) seeds every random choice; `unix` is the wall-clock
    /// time at `now`.
    pub fn new(config: NodeConfig, seed: [u8; SEED_LEN], now: Instant, unix: UnixTime) -> Result<Self, NodeError> {
        let mut rng = Rng::new(seed);
        let mut wg_config = wireguard::Config::new(config.private_key);
        wg_config.handshake_load_threshold = config.wireguard.handshake_load_threshold;
        let wg = WireGuard::new(wg_config, rng.fork(), now, unix)?;
        let mut addrs = vec![IpAddr::V4(config.mesh_v4)];
        addrs.extend(config.mesh_v6.map(IpAddr::V6));
        let mut stack_addrs = addrs.clone();
        stack_addrs.push(IpAddr::V4(MAGIC_DNS_ADDR));
        config.tcp.validate()?;
        if let Some(ssh) = &config.ssh {
            ssh.validate()?;
        }
        let mut tcp = TcpStack::new(config.tcp, &stack_addrs, rng.next_u64(), now);
        // MagicDNS answers this node's own TUN side only: its address is not routed in
        // from the mesh, and the mesh addresses do not serve port 53.
        tcp.listen(IpAddr::V4(MAGIC_DNS_ADDR), DNS_PORT);
        let mut ports = config.tcp_services.clone();
        if config.ssh.is_some() {
            ports.push(SSH_PORT);
        }
        for port in ports {
            for &addr in &addrs {
                tcp.listen(addr, port);
            }
        }
        let ssh = config.ssh.map(|c| SshServer::new(c, rng.fork()));
        Ok(Self {
            wg,
            filter: Filter::deny_all(),
            flows: FlowTable::new(config.max_flows, rng.gen_bytes()),
            tcp,
            ssh,
            dns: MagicDns::new(&config.dns_domain, mesh_ranges()),
            addrs,
            netmap: BTreeMap::new(),
            peer_options: BTreeMap::new(),
            dns_conns: BTreeMap::new(),
            dns_finished: BTreeSet::new(),
            tun_out: VecDeque::new(),
            events: VecDeque::new(),
            next_sweep: now + FLOW_SWEEP_INTERVAL,
            stats: NodeStats::default(),
            refuse_unserved_tcp: config.refuse_unserved_tcp,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.wg.public_key()
    }

    pub fn wireguard(&self) -> &WireGuard {
        &self.wg
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Flows tracked now.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// What the core TCP stack refused (segments from the wrong peer, SYNs over a share).
    pub fn tcp_stats(&self) -> &TcpStats {
        self.tcp.stats()
    }

    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    // ----- control plane ------------------------------------------------------------------

    /// Replace the set of peers (a new netmap): peers are added, updated and removed so
    /// that WireGuard and MagicDNS match `peers`. A peer that left, or whose addresses
    /// changed, is gone for good: its flows are purged, its core connections closed
    /// without a word on the wire (the address may belong to someone else now), and
    /// [`NodeEvent::PeerGone`] names its old `PeerId`; if it stays in the netmap it comes
    /// back under a new one. Only a changed endpoint or name keeps the `PeerId`.
    pub fn set_netmap(&mut self, now: Instant, peers: Vec<NetmapPeer>) {
        let mut old = std::mem::take(&mut self.netmap);
        let mut staying = Vec::new();
        let mut gone = Vec::new();
        for peer in &peers {
            match old.remove(&peer.public_key) {
                Some((id, was)) if same_addresses(&was, peer) => staying.push((id, was)),
                Some((id, was)) => gone.push((id, was)),
                None => {}
            }
        }
        gone.extend(std::mem::take(&mut old).into_values());
        // Release the leavers first, so that a newcomer may take over their addresses.
        for (id, was) in gone {
            self.peer_gone(now, id, &was);
        }
        let mut staying: BTreeMap<PublicKey, PeerId> = staying.into_iter().map(|(id, p)| (p.public_key, id)).collect();
        for peer in peers {
            let config = self.peer_config(&peer);
            let id = match staying.remove(&peer.public_key) {
                Some(id) => match self.wg.update_peer(now, id, config) {
                    Ok(()) => id,
                    Err(error) => {
                        debug!(%error, "netmap peer update refused");
                        continue;
                    }
                },
                None => match self.wg.add_peer(now, config) {
                    Ok(id) => id,
                    Err(error) => {
                        debug!(%error, "netmap peer refused");
                        continue;
                    }
                },
            };
            self.netmap.insert(peer.public_key, (id, peer));
        }
        let hosts: Vec<(String, HostAddrs)> = self
            .netmap
            .values()
            .map(|(_, p)| (p.name.clone(), HostAddrs { v4: Some(p.mesh_v4), v6: p.mesh_v6 }))
            .collect();
        self.dns.set_hosts(hosts.iter().map(|(n, a)| (n.as_str(), *a)));
        self.drive(now);
    }

    /// Set the WireGuard options of the peer with `key` (now, if it is in the netmap, and
    /// whenever a netmap names it).
    pub fn set_peer_options(&mut self, now: Instant, key: PublicKey, options: PeerOptions) {
        self.peer_options.insert(key, options);
        if let Some((id, peer)) = self.netmap.get(&key) {
            let (id, config) = (*id, self.peer_config(peer));
            if let Err(error) = self.wg.update_peer(now, id, config) {
                debug!(%error, "peer options refused");
            }
            self.drive(now);
        }
    }

    /// What WireGuard is told about a netmap peer.
    fn peer_config(&self, peer: &NetmapPeer) -> PeerConfig {
        let mut allowed = vec![IpPrefix::host(IpAddr::V4(peer.mesh_v4))];
        allowed.extend(peer.mesh_v6.map(|a| IpPrefix::host(IpAddr::V6(a))));
        allowed.extend(peer.routes.iter().copied());
        let mut config = PeerConfig::new(peer.public_key, allowed);
        config.endpoint = peer.endpoint;
        if let Some(options) = self.peer_options.get(&peer.public_key) {
            config.preshared_key = options.preshared_key.clone();
            config.persistent_keepalive = options.persistent_keepalive;
        }
        config
    }

    /// Forget everything bound to a peer that left the netmap (or changed).
    fn peer_gone(&mut self, now: Instant, id: PeerId, was: &NetmapPeer) {
        let _ = self.wg.remove_peer(id);
        let flows = self.flows.purge_peer(id).len();
        // Connections bound to the peer, and our own not yet answered by anyone whose
        // remote address was the peer's.
        let addresses: Vec<IpAddr> = peer_prefixes(was).collect();
        let conns = self.tcp.purge(|bound, remote| {
            bound == Some(id) || (bound.is_none() && addresses.iter().any(|&a| a == remote.ip()))
        });
        debug!(%id, flows, conns, "peer gone");
        self.events.push_back(NodeEvent::PeerGone { peer: id });
        self.drive(now);
    }

    /// The peer with this key, as WireGuard knows it.
    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.netmap.get(key).map(|(id, _)| *id)
    }

    /// The netmap entry of a peer.
    pub fn netmap_peer(&self, id: PeerId) -> Option<&NetmapPeer> {
        self.netmap.values().find(|(pid, _)| *pid == id).map(|(_, p)| p)
    }

    /// Swap in a new filter atomically. Remotely opened flows it no longer allows are cut:
    /// connections terminated in the core are reset (RST to the remote end, `Closed` to the
    /// service), flows to the TUN simply stop passing.
    pub fn set_filter(&mut self, now: Instant, filter: Filter) {
        self.filter = filter;
        let Self { flows, filter, .. } = self;
        let cut = flows.cut_remote(|key| filter.allows(&flow_as_packet(key)));
        for key in cut {
            self.stats.flows_cut += 1;
            self.events.push_back(NodeEvent::FlowCut(key));
            debug!(?key, "flow cut by the new filter");
        }
        // Every connection a peer opened to the core is judged again, whether or not the
        // flow table still tracked it.
        let filter = &self.filter;
        let denied = self.tcp.accepted_matching(|local, remote| {
            let key = FlowKey {
                proto: Proto::Tcp,
                local: local.ip(),
                local_port: local.port(),
                remote: remote.ip(),
                remote_port: remote.port(),
            };
            !filter.allows(&flow_as_packet(&key))
        });
        for conn in denied {
            let _ = self.tcp.abort(now, conn);
        }
        self.drive(now);
    }

    // ----- data plane inputs --------------------------------------------------------------

    /// A datagram from the network.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: BytesMut) {
        if let Err(reason) = self.wg.handle_datagram(now, from, datagram) {
            trace!(%reason, "datagram dropped");
        }
        self.drive(now);
    }

    /// An IP packet from the TUN device. `buf` has [`DATA_HEADER_LEN`] bytes of headroom
    /// before the packet (see [`wireguard::packet_buffer`]).
    pub fn handle_tun_packet(&mut self, now: Instant, buf: BytesMut) {
        self.outbound_from_tun(now, buf);
        self.drive(now);
    }

    /// Run every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.wg.handle_timeout(now);
        if self.tcp.poll_timeout().is_some_and(|at| at <= now) {
            self.tcp.handle_timeout(now);
        }
        if let Some(ssh) = self.ssh.as_mut().filter(|s| s.poll_timeout().is_some_and(|at| at <= now)) {
            ssh.timeout(&mut ssh::Io { now, tcp: &mut self.tcp, events: &mut self.events });
        }
        if now >= self.next_sweep {
            self.flows.expire(now, 4096);
            self.next_sweep = now + FLOW_SWEEP_INTERVAL;
        }
        self.drive(now);
    }

    // ----- outputs ------------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.wg.poll_transmit()
    }

    /// A packet for the TUN device.
    pub fn poll_tun_packet(&mut self) -> Option<BytesMut> {
        self.tun_out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let ssh = self.ssh.as_ref().and_then(SshServer::poll_timeout);
        [self.wg.poll_timeout(), self.tcp.poll_timeout(), ssh, Some(self.next_sweep)].into_iter().flatten().min()
    }

    // ----- SSH on port 22 -----------------------------------------------------------------

    /// Act on an SSH session (decide its login, drive its channels): `f` gets the session,
    /// then the node carries out what it did. `None` if there is no such session.
    pub fn ssh_session<R>(
        &mut self,
        now: Instant,
        session: SessionId,
        f: impl FnOnce(&mut ServerSession) -> R,
    ) -> Option<R> {
        let Self { ssh, tcp, events, .. } = self;
        let result = ssh.as_mut()?.with(&mut ssh::Io { now, tcp, events }, session, f);
        self.drive(now);
        result
    }

    /// The peer an SSH session is bound to.
    pub fn ssh_peer(&self, session: SessionId) -> Option<PeerId> {
        self.ssh.as_ref()?.peer(session)
    }

    /// How much channel data the application may still write to `session` before its
    /// output counts as full (then wait for [`SshEvent::Writable`]).
    pub fn ssh_budget(&mut self, session: SessionId) -> usize {
        self.ssh.as_mut().map_or(0, |s| s.budget(session))
    }

    /// Settings for sessions accepted from now on (the host key stays).
    pub fn set_ssh_session_config(&mut self, config: ServerConfig) {
        if let Some(ssh) = &mut self.ssh {
            ssh.set_session_config(config);
        }
    }

    /// The SSH host key's public half.
    pub fn ssh_host_key(&self) -> Option<[u8; 32]> {
        self.ssh.as_ref().map(|s| s.host_key().verifying_key().to_bytes())
    }

    pub fn ssh_stats(&self) -> Option<&SshStats> {
        self.ssh.as_ref().map(SshServer::stats)
    }

    // ----- TCP for services and applications ----------------------------------------------

    /// Serve `port` on the mesh addresses from now on, as [`NodeConfig::tcp_services`] does
    /// from the start: an application (an embedded node) opens listeners while it runs.
    /// Idempotent. Port 0, and port 22 while SSH is on, are refused.
    pub fn tcp_listen(&mut self, port: u16) -> Result<(), TcpError> {
        if port == 0 || (port == SSH_PORT && self.ssh.is_some()) {
            return Err(TcpError::PortReserved);
        }
        for &addr in &self.addrs {
            self.tcp.listen(addr, port);
        }
        Ok(())
    }

    /// Stop serving `port` (connections it accepted stay). Port 22 stays while SSH is on.
    pub fn tcp_unlisten(&mut self, port: u16) {
        if port == SSH_PORT && self.ssh.is_some() {
            return;
        }
        for &addr in &self.addrs {
            self.tcp.unlisten(addr, port);
        }
    }

    /// Whether `port` is served on the mesh addresses.
    pub fn tcp_listening(&self, port: u16) -> bool {
        self.addrs.iter().any(|&addr| self.tcp.is_listening(addr, port))
    }

    /// Open a TCP connection through the mesh.
    pub fn tcp_connect(&mut self, now: Instant, remote: SocketAddr) -> Result<ConnId, TcpError> {
        let conn = self.tcp.connect(now, remote);
        self.drive(now);
        conn
    }

    pub fn tcp_send(&mut self, now: Instant, conn: ConnId, data: &[u8]) -> Result<usize, TcpError> {
        let n = self.tcp.send(conn, data);
        self.tcp.flush(now);
        self.drive(now);
        n
    }

    pub fn tcp_recv(&mut self, now: Instant, conn: ConnId, buf: &mut [u8]) -> Result<usize, TcpError> {
        let n = self.tcp.recv(conn, buf);
        // Reading opens the receive window: let the stack announce it.
        self.tcp.flush(now);
        self.drive(now);
        n
    }

    /// Whether `conn`'s peer closed its direction and all its data has been read.
    pub fn tcp_peer_finished(&self, conn: ConnId) -> Result<bool, TcpError> {
        self.tcp.peer_finished(conn)
    }

    pub fn tcp_close(&mut self, now: Instant, conn: ConnId) -> Result<(), TcpError> {
        let r = self.tcp.close(now, conn);
        self.drive(now);
        r
    }

    pub fn tcp_abort(&mut self, now: Instant, conn: ConnId) -> Result<(), TcpError> {
        let r = self.tcp.abort(now, conn);
        self.drive(now);
        r
    }

    /// Local and remote endpoints of a connection.
    pub fn tcp_endpoints(&self, conn: ConnId) -> Option<(SocketAddr, SocketAddr)> {
        self.tcp.endpoints(conn)
    }

    /// The peer whose SYN opened an accepted connection.
    pub fn tcp_peer(&self, conn: ConnId) -> Option<PeerId> {
        self.tcp.peer_of(conn)
    }

    // ----- internals ----------------------------------------------------------------------

    /// Move packets between the parts until nothing moves (the sans-IO fixpoint).
    fn drive(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(received) = self.wg.poll_received() {
                moved = true;
                self.inbound(now, received);
            }
            while let Some(packet) = self.tcp.poll_transmit() {
                moved = true;
                self.outbound_from_stack(now, packet);
            }
            while let Some(event) = self.tcp.poll_event() {
                moved = true;
                self.tcp_event(now, event);
            }
            while let Some(event) = self.wg.poll_event() {
                moved = true;
                self.events.push_back(NodeEvent::WireGuard(event));
            }
            if !moved {
                break;
            }
        }
    }

    fn inbound(&mut self, now: Instant, received: Received) {
        let Received { peer, packet } = received;
        let info = match PacketInfo::parse(&packet) {
            Ok(info) => info,
            Err(error) => {
                self.stats.inbound_malformed += 1;
                trace!(%error, %peer, "inbound packet malformed");
                return;
            }
        };
        // Only packets for this node are judged and tracked: anything else would let a
        // peer fill the flow table with flows that lead nowhere.
        if !self.addrs.contains(&info.dst) {
            self.stats.inbound_not_for_us += 1;
            return;
        }
        let key = FlowKey::inbound(&info);
        if !matches!(self.flows.touch(now, &key), Some(Origin::Local | Origin::Remote)) {
            if !self.filter.allows(&info) {
                self.stats.inbound_filtered += 1;
                trace!(?key, %peer, "inbound packet filtered");
                return;
            }
            if opens_flow(&info) {
                self.flows.insert(now, key, Origin::Remote, Some(peer));
            }
        }
        if info.proto == Proto::Tcp && self.tcp.serves(&info) {
            self.stats.inbound_to_stack += 1;
            self.tcp.handle_packet(now, Some(peer), &info, packet);
        } else if self.refuse_unserved_tcp && info.proto == Proto::Tcp {
            self.refuse_tcp(now, &info, &packet);
        } else {
            self.stats.inbound_to_tun += 1;
            self.tun_out.push_back(packet);
        }
    }

    fn outbound_from_tun(&mut self, now: Instant, mut buf: BytesMut) {
        let Some(info) = buf.get(DATA_HEADER_LEN..).and_then(|p| PacketInfo::parse(p).ok()) else {
            self.stats.outbound_malformed += 1;
            return;
        };
        if info.dst == IpAddr::V4(MAGIC_DNS_ADDR) {
            let packet = buf.split_off(DATA_HEADER_LEN);
            match (info.proto, info.dst_port) {
                (Proto::Udp, DNS_PORT) => self.answer_dns_udp(&info, &packet),
                (Proto::Tcp, DNS_PORT) => self.tcp.handle_packet(now, None, &info, packet),
                _ => self.stats.outbound_dropped += 1,
            }
            return;
        }
        self.send_into_mesh(now, &info, buf);
    }

    /// A packet the TCP stack emitted (with WireGuard headroom).
    fn outbound_from_stack(&mut self, now: Instant, mut buf: BytesMut) {
        let Some(info) = buf.get(DATA_HEADER_LEN..).and_then(|p| PacketInfo::parse(p).ok()) else {
            self.stats.outbound_malformed += 1;
            return;
        };
        // Replies of the stack to this node's own TUN side (DNS over TCP).
        if self.addrs.contains(&info.dst) {
            self.tun_out.push_back(buf.split_off(DATA_HEADER_LEN));
            return;
        }
        self.send_into_mesh(now, &info, buf);
    }

    fn send_into_mesh(&mut self, now: Instant, info: &PacketInfo, buf: BytesMut) {
        // A TCP flow is opened by its SYN; other segments only refresh a tracked flow, so a
        // stray segment (a RST for a cut connection) cannot open a path back in.
        let key = FlowKey::outbound(info);
        if opens_flow(info) {
            let peer = self.wg.route(info.dst);
            self.flows.insert(now, key, Origin::Local, peer);
        } else {
            let _ = self.flows.touch(now, &key);
        }
        match self.wg.handle_packet(now, buf) {
            Ok(()) => {}
            Err(DropReason::NoRoute) => {
                self.stats.outbound_no_route += 1;
                self.icmp_unreachable(info);
            }
            Err(reason) => {
                self.stats.outbound_dropped += 1;
                trace!(%reason, "outbound packet dropped");
            }
        }
    }

    fn tcp_event(&mut self, now: Instant, event: TcpEvent) {
        if let Some(ssh) = &mut self.ssh {
            let io = &mut ssh::Io { now, tcp: &mut self.tcp, events: &mut self.events };
            match event {
                TcpEvent::Accepted { conn, peer: Some(peer), local, remote } if local.port() == SSH_PORT => {
                    return ssh.accepted(io, conn, peer, remote);
                }
                // Port 22 is served on the mesh addresses only, so this cannot come from the
                // TUN side; a connection without a peer gets no session.
                TcpEvent::Accepted { conn, peer: None, local, .. } if local.port() == SSH_PORT => {
                    let _ = io.tcp.abort(now, conn);
                    return;
                }
                TcpEvent::Readable { conn } if ssh.owns(conn) => return ssh.readable(io, conn),
                TcpEvent::Writable { conn } if ssh.owns(conn) => return ssh.writable(io, conn),
                TcpEvent::Closed { conn } if ssh.owns(conn) => return ssh.closed(io, conn),
                _ => {}
            }
        }
        match event {
            TcpEvent::Accepted { conn, local, .. } if local.port() == DNS_PORT => {
                self.dns_conns.insert(conn, TcpFramer::new());
            }
            TcpEvent::Readable { conn } | TcpEvent::Writable { conn } if self.dns_conns.contains_key(&conn) => {
                self.serve_dns_tcp(now, conn)
            }
            TcpEvent::Closed { conn } if self.dns_conns.remove(&conn).is_some() => {
                self.dns_finished.remove(&conn);
            }
            other => self.events.push_back(NodeEvent::Tcp(other)),
        }
    }

    /// DNS over TCP: write what is pending, answer whole queries one at a time, read only
    /// when the framer wants input (a short send waits for `Writable`, see [`TcpFramer`]).
    /// After the client's FIN the answers still go out, then the connection is closed.
    fn serve_dns_tcp(&mut self, now: Instant, conn: ConnId) {
        let Self { tcp, dns, dns_conns, dns_finished, stats, .. } = self;
        let Some(framer) = dns_conns.get_mut(&conn) else { return };
        let mut chunk = [0u8; 2048];
        loop {
            let pending = framer.pending_output();
            if !pending.is_empty() {
                match tcp.send(conn, pending) {
                    Ok(n) => framer.output_written(n),
                    Err(_) => break,
                }
                if !framer.pending_output().is_empty() {
                    break;
                }
            }
            if let Some(query) = framer.poll_query() {
                stats.dns_queries += 1;
                if let Ok(answer) = dns.answer(&query) {
                    // MagicDNS answers stay far below 64 KiB; should one not, it is dropped.
                    let _ = framer.queue_answer(&answer);
                }
                continue;
            }
            if !framer.wants_input() {
                break;
            }
            if dns_finished.contains(&conn) {
                // Everything answered and nothing more can come.
                let _ = tcp.close(now, conn);
                break;
            }
            match tcp.recv(conn, &mut chunk) {
                Ok(0) => {
                    if tcp.peer_finished(conn).unwrap_or(true) {
                        dns_finished.insert(conn);
                        continue;
                    }
                    break;
                }
                Err(_) => break,
                Ok(n) => {
                    if framer.handle_input(&chunk[..n]).is_err() {
                        let _ = tcp.abort(now, conn);
                        return;
                    }
                }
            }
        }
        tcp.flush(now);
    }

    /// A UDP query to 100.100.100.100:53 from the TUN side: the answer goes back to the TUN.
    fn answer_dns_udp(&mut self, info: &PacketInfo, packet: &[u8]) {
        let (IpAddr::V4(client), Ok(ip)) = (info.src, Ipv4Packet::new_checked(packet)) else {
            self.stats.outbound_dropped += 1;
            return;
        };
        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else { return };
        self.stats.dns_queries += 1;
        let Ok(answer) = self.dns.answer_udp(udp.payload()) else { return };
        let reply = build::udp_v4(MAGIC_DNS_ADDR, DNS_PORT, client, info.src_port, &answer);
        self.tun_out.push_back(BytesMut::from(&reply[..]));
    }

    /// Answer a SYN to an unserved port with RST+ACK (RFC 9293 3.10.7.1: SEQ 0, ACK the
    /// SYN); other segments are dropped. IPv4 only (IPv6 SYNs are dropped).
    fn refuse_tcp(&mut self, now: Instant, info: &PacketInfo, packet: &[u8]) {
        let (true, IpAddr::V4(src), IpAddr::V4(dst)) = (info.is_tcp_syn(), info.src, info.dst) else { return };
        let Ok(ip) = Ipv4Packet::new_checked(packet) else { return };
        let Ok(tcp) = smoltcp::wire::TcpPacket::new_checked(ip.payload()) else { return };
        let segment_len = u32::try_from(tcp.payload().len()).unwrap_or(0).wrapping_add(1);
        let ack = (tcp.seq_number().0 as u32).wrapping_add(segment_len);
        let rst = build::TcpSegment {
            src: dst,
            src_port: info.dst_port,
            dst: src,
            dst_port: info.src_port,
            control: smoltcp::wire::TcpControl::Rst,
            seq: 0,
            ack: Some(ack),
        }
        .to_packet();
        let Ok(rst_info) = PacketInfo::parse(&rst) else { return };
        self.stats.inbound_refused += 1;
        self.send_into_mesh(now, &rst_info, wireguard::packet_buffer(&rst));
    }

    /// Tell the TUN side that a destination has no peer (IPv4 only).
    fn icmp_unreachable(&mut self, info: &PacketInfo) {
        let Some(&IpAddr::V4(ours)) = self.addrs.first() else { return };
        self.tun_out.extend(build::icmp_v4_host_unreachable(ours, info));
    }
}

/// Whether a packet may open a flow: a TCP flow only with its SYN (a stray segment, such as
/// a RST for a cut connection, must not open a path back in); never an ICMP error, which
/// is about another packet.
fn opens_flow(info: &PacketInfo) -> bool {
    match info.proto {
        Proto::Tcp => info.is_tcp_syn(),
        Proto::Icmp => !matches!(info.icmp, Some(IcmpKind::Error)),
        Proto::Udp | Proto::Other(_) => true,
    }
}

/// Whether two netmap entries of a peer give it the same addresses and routes.
fn same_addresses(a: &NetmapPeer, b: &NetmapPeer) -> bool {
    a.mesh_v4 == b.mesh_v4 && a.mesh_v6 == b.mesh_v6 && a.routes == b.routes
}

/// A peer's mesh addresses.
fn peer_prefixes(peer: &NetmapPeer) -> impl Iterator<Item = IpAddr> + '_ {
    std::iter::once(IpAddr::V4(peer.mesh_v4)).chain(peer.mesh_v6.map(IpAddr::V6))
}

/// A packet that would open `key` from its remote end (to re-check a flow against rules).
fn flow_as_packet(key: &FlowKey) -> PacketInfo {
    PacketInfo {
        src: key.remote,
        dst: key.local,
        proto: key.proto,
        src_port: key.remote_port,
        dst_port: key.local_port,
        tcp: TcpFlags { syn: true, ..TcpFlags::default() },
        icmp: (key.proto == Proto::Icmp).then_some(IcmpKind::EchoRequest { ident: key.local_port }),
        total_len: 0,
    }
}

pub mod ssh;
#[cfg(test)]
mod tests;
