//! A simulated node: a static key, two addresses, its netmap (the peers it is configured
//! with), its packet filter and, while it runs, a composed [`mesh_core::node::Node`]
//! (WireGuard, packet filter with flow tracking, userspace TCP, MagicDNS).
//!
//! The node keeps its configuration, netmap and filter outside the core so a crash can throw
//! the whole state machine away and a restart can build a fresh one with the same identity,
//! the same peers and the same filter, as a rebooted daemon would. Each boot is a new
//! *generation*: events scheduled for an older generation (timers, traffic ticks) are
//! recognised as stale and ignored. The simulated applications running on it (TCP clients
//! and sinks, SSH connections) are not part of the node: the world keeps them beside it
//! (see [`crate::node_apps`]) and ends them when the node crashes.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use ed25519_dalek::SigningKey;
use mesh_core::ip::{Filter, FilterRule, FlowTable, PacketInfo, PortRange, Proto};
use mesh_core::node::{
    NetmapPeer, Node as CoreNode, NodeConfig as CoreConfig, NodeError, SshServerConfig, WireGuardTuning,
};
use mesh_core::ssh::server::ServerConfig;
use mesh_core::tcp::TcpConfig;
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::{PeerId, PeerStatus, PrivateKey, PublicKey, WireGuard};

use crate::addresses::{mesh_addr, mesh_range, underlay_addr, SINK_PORT};
use crate::error::SimError;
use crate::ids::NodeId;

/// The MagicDNS domain of simulated nodes (node `n3` is `n3.mesh.sim`).
pub const SIM_DNS_DOMAIN: &str = "mesh.sim";

/// How a simulated node is built, apart from its key and addresses (which the world
/// assigns). Kept across crashes: a restart rebuilds the core node from it.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Serve SSH on port 22 of the mesh address in the core, with the node's host key; the
    /// SSH server app ([`crate::World::serve_ssh`]) decides the logins.
    pub serve_ssh: bool,
    /// Serve [`SINK_PORT`] in the core's TCP stack for the sink application (see
    /// [`crate::apps`]): raw TCP transfers through the composed data plane.
    pub serve_sink: bool,
    /// The core TCP stack's sizes and bounds.
    pub tcp: TcpConfig,
    pub wireguard: WireGuardTuning,
    /// Flow table capacity.
    pub max_flows: usize,
}

impl Default for NodeConfig {
    /// SSH off, the core's default TCP sizes and flow table.
    fn default() -> Self {
        Self {
            serve_ssh: false,
            serve_sink: false,
            tcp: TcpConfig::default(),
            wireguard: WireGuardTuning::default(),
            max_flows: FlowTable::DEFAULT_CAPACITY,
        }
    }
}

impl NodeConfig {
    /// This configuration with SSH served (or not).
    pub fn with_ssh(self, serve_ssh: bool) -> Self {
        Self { serve_ssh, ..self }
    }

    /// This configuration with the sink port served (or not).
    pub fn with_sink(self, serve_sink: bool) -> Self {
        Self { serve_sink, ..self }
    }
}

/// The filter every node gets unless [`crate::World::set_filter`] replaces it: anything in
/// the mesh may reach anything in the mesh, on every port, over TCP, UDP and ICMP.
pub fn allow_mesh_filter() -> Filter {
    Filter::new(vec![FilterRule {
        srcs: vec![mesh_range()].into(),
        dsts: vec![(mesh_range(), PortRange::ALL)],
        protos: vec![],
    }])
}

/// Counters of one node, kept across crashes and restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// `Event::SessionEstablished` reported by this node's WireGuard.
    pub sessions_established: u64,
    /// ... of which this node was the initiator.
    pub sessions_initiated: u64,
    /// `Event::PeerUnreachable`.
    pub peers_unreachable: u64,
    /// `Event::KeysZeroed`.
    pub keys_zeroed: u64,
    /// Datagrams WireGuard refused (its drop counters rose while handling the datagram).
    pub datagrams_rejected: u64,
    /// Application packets handed to the node's TUN side.
    pub app_sent: u64,
    /// Application packets the node refused outright (no route, no endpoint, ...).
    pub app_send_failed: u64,
    /// Application packets received.
    pub app_received: u64,
    /// Flows the filter cut (`NodeEvent::FlowCut`).
    pub flows_cut: u64,
    pub crashes: u64,
    pub restarts: u64,
}

/// What came out of a node's TUN side, kept across crashes and restarts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunStats {
    /// Every packet the node handed to its TUN device.
    pub packets: u64,
    pub bytes: u64,
    /// ... of which valid traffic-application packets for this node.
    pub app_packets: u64,
    /// The others, by protocol (ICMP includes the node's own "unreachable" answers).
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    /// Unparsable or other protocols.
    pub other: u64,
    /// When the last packet that is not an application packet arrived.
    pub last_other_at: Option<Instant>,
}

/// How many non-application TUN packets a node keeps for inspection.
pub const TUN_CAPTURE_LEN: usize = 256;

/// WireGuard's own counters summed over every incarnation of a node (a restart starts a
/// fresh `WireGuard` whose counters start at zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WgTotals {
    pub initiations_sent: u64,
    pub initiations_accepted: u64,
    pub responses_accepted: u64,
    pub cookie_replies_sent: u64,
    pub data_sent: u64,
    pub data_received: u64,
    pub keepalives_sent: u64,
    /// Packets dropped while waiting for a handshake.
    pub staged_dropped: u64,
    /// X25519 operations (the handshake's cost).
    pub dh_operations: u64,
}

impl WgTotals {
    fn of(wg: &WireGuard) -> Self {
        let s = wg.stats();
        Self {
            initiations_sent: s.initiations_sent,
            initiations_accepted: s.initiations_accepted,
            responses_accepted: s.responses_accepted,
            cookie_replies_sent: s.cookie_replies_sent,
            data_sent: s.data_sent,
            data_received: s.data_received,
            keepalives_sent: s.keepalives_sent,
            staged_dropped: s.staged_dropped,
            dh_operations: wg.dh_operations(),
        }
    }
}

impl std::ops::Add for WgTotals {
    type Output = Self;

    /// Field-wise sum.
    fn add(self, o: Self) -> Self {
        Self {
            initiations_sent: self.initiations_sent + o.initiations_sent,
            initiations_accepted: self.initiations_accepted + o.initiations_accepted,
            responses_accepted: self.responses_accepted + o.responses_accepted,
            cookie_replies_sent: self.cookie_replies_sent + o.cookie_replies_sent,
            data_sent: self.data_sent + o.data_sent,
            data_received: self.data_received + o.data_received,
            keepalives_sent: self.keepalives_sent + o.keepalives_sent,
            staged_dropped: self.staged_dropped + o.staged_dropped,
            dh_operations: self.dh_operations + o.dh_operations,
        }
    }
}

/// One simulated node.
pub struct Node {
    id: NodeId,
    private_key: PrivateKey,
    public_key: PublicKey,
    /// The SSH host key (kept across crashes, like the daemon's key file).
    ssh_host_key: SigningKey,
    /// Settings of the core's SSH sessions ([`crate::World::serve_ssh`]).
    ssh_session: ServerConfig,
    config: NodeConfig,
    /// The netmap, in the order peers were added; replayed on restart so `PeerId`s come
    /// out the same.
    peers: Vec<(NodeId, NetmapPeer)>,
    /// Nodes this node may send application traffic to (its peers, in order).
    peer_nodes: Vec<NodeId>,
    by_peer_id: BTreeMap<PeerId, NodeId>,
    by_node: BTreeMap<NodeId, PeerId>,
    filter: Filter,
    pub(crate) core: Option<CoreNode>,
    generation: u64,
    /// The earliest timer event scheduled for this generation and not yet fired.
    pub(crate) timer_at: Option<Instant>,
    /// Whether the traffic application runs on this node.
    pub(crate) traffic: bool,
    /// The current chain of traffic ticks (see `World::start_app_chain`).
    pub(crate) app_chain: u64,
    pub(crate) stats: NodeStats,
    pub(crate) tun: TunStats,
    pub(crate) tun_capture: VecDeque<(Instant, BytesMut)>,
    /// WireGuard counters of crashed incarnations.
    retired: WgTotals,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("public_key", &self.public_key)
            .field("up", &self.is_up())
            .field("peers", &self.peers.len())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The wall clock a node sees at virtual time `now`: a fixed epoch plus virtual time.
pub(crate) fn unix_time(epoch: UnixTime, now: Instant) -> UnixTime {
    UnixTime(epoch.0 + Duration::from_micros(now.as_micros()))
}

/// The netmap entry describing `node` to its peers: its key, underlay endpoint and mesh
/// address (allowed IP = the mesh address /32).
pub fn netmap_entry(node: NodeId, public_key: PublicKey) -> NetmapPeer {
    NetmapPeer {
        name: node.to_string(),
        public_key,
        endpoint: Some(underlay_addr(node)),
        mesh_v4: mesh_addr(node),
        mesh_v6: None,
        routes: Vec::new(),
    }
}

impl Node {
    /// A node with this key, not yet running, allowing all mesh traffic.
    pub(crate) fn new(id: NodeId, private_key: PrivateKey, ssh_host_key: SigningKey, config: NodeConfig) -> Self {
        let public_key = private_key.public_key();
        Self {
            id,
            private_key,
            public_key,
            ssh_host_key,
            ssh_session: ServerConfig::default(),
            config,
            peers: Vec::new(),
            peer_nodes: Vec::new(),
            by_peer_id: BTreeMap::new(),
            by_node: BTreeMap::new(),
            filter: allow_mesh_filter(),
            core: None,
            generation: 0,
            timer_at: None,
            traffic: true,
            app_chain: 0,
            stats: NodeStats::default(),
            tun: TunStats::default(),
            tun_capture: VecDeque::new(),
            retired: WgTotals::default(),
        }
    }

    /// The SSH host key's public half.
    pub fn ssh_host_public(&self) -> [u8; 32] {
        self.ssh_host_key.verifying_key().to_bytes()
    }

    /// Settings for the SSH sessions the core accepts from now on (and after restarts).
    pub(crate) fn set_ssh_session(&mut self, config: ServerConfig) {
        if let Some(core) = &mut self.core {
            core.set_ssh_session_config(config.clone());
        }
        self.ssh_session = config;
    }

    fn core_config(&self) -> CoreConfig {
        let mut c = CoreConfig::new(self.private_key.clone(), self.mesh_addr(), SIM_DNS_DOMAIN);
        c.ssh = self.config.serve_ssh.then(|| {
            let mut ssh = SshServerConfig::new(self.ssh_host_key.clone());
            ssh.session = self.ssh_session.clone();
            ssh
        });
        c.tcp_services = if self.config.serve_sink { vec![SINK_PORT] } else { Vec::new() };
        c.tcp = self.config.tcp.clone();
        c.wireguard = self.config.wireguard;
        c.max_flows = self.config.max_flows;
        c
    }

    /// Start a fresh core node with this node's key, configuration, netmap and filter.
    pub(crate) fn boot(&mut self, now: Instant, unix: UnixTime, seed: [u8; 32]) -> Result<(), SimError> {
        let mut core = CoreNode::new(self.core_config(), seed, now, unix).map_err(|e| match e {
            NodeError::WireGuard(c) => SimError::Config(c),
            NodeError::Tcp(c) => SimError::TcpConfig(c),
            NodeError::Ssh(c) => SimError::SshConfig(c),
        })?;
        core.set_netmap(now, self.netmap());
        core.set_filter(now, self.filter.clone());
        self.core = Some(core);
        self.remap();
        self.generation += 1;
        self.timer_at = None;
        Ok(())
    }

    /// Drop all running state.
    pub(crate) fn crash(&mut self) {
        if let Some(core) = self.core.take() {
            self.retired = self.retired + WgTotals::of(core.wireguard());
        }
        self.by_peer_id.clear();
        self.by_node.clear();
        self.generation += 1;
        self.timer_at = None;
    }

    fn netmap(&self) -> Vec<NetmapPeer> {
        self.peers.iter().map(|(_, p)| p.clone()).collect()
    }

    /// Recompute the `PeerId` <-> node maps from the running core.
    fn remap(&mut self) {
        self.by_peer_id.clear();
        self.by_node.clear();
        let Some(core) = self.core.as_ref() else { return };
        for (node, peer) in &self.peers {
            if let Some(id) = core.peer_id(&peer.public_key) {
                self.by_peer_id.insert(id, *node);
                self.by_node.insert(*node, id);
            }
        }
    }

    /// Add peers to the netmap (and push the new netmap to the running core, if any).
    pub(crate) fn add_peers(&mut self, now: Instant, peers: Vec<(NodeId, NetmapPeer)>) -> Result<(), SimError> {
        for (node, peer) in peers {
            if node == self.id {
                return Err(SimError::SelfPeer(node));
            }
            if let Some(slot) = self.peers.iter_mut().find(|(n, _)| *n == node) {
                slot.1 = peer;
            } else {
                self.peers.push((node, peer));
                self.peer_nodes.push(node);
            }
        }
        self.push_netmap(now);
        Ok(())
    }

    /// Hand the netmap to the running core, if any.
    fn push_netmap(&mut self, now: Instant) {
        if self.core.is_some() {
            let netmap = self.netmap();
            if let Some(core) = self.core.as_mut() {
                core.set_netmap(now, netmap);
            }
            self.remap();
        }
    }

    /// Replace the whole netmap (peers missing from `peers` leave it), as a coordination
    /// server's netmap does.
    pub(crate) fn set_peers(&mut self, now: Instant, peers: Vec<(NodeId, NetmapPeer)>) -> Result<(), SimError> {
        if let Some((node, _)) = peers.iter().find(|(n, _)| *n == self.id) {
            return Err(SimError::SelfPeer(*node));
        }
        self.peer_nodes = peers.iter().map(|(n, _)| *n).collect();
        self.peers = peers;
        self.push_netmap(now);
        Ok(())
    }

    /// Replace the filter (kept for restarts) and hand it to the running core.
    pub(crate) fn set_filter(&mut self, now: Instant, filter: Filter) {
        if let Some(core) = self.core.as_mut() {
            core.set_filter(now, filter.clone());
        }
        self.filter = filter;
    }

    /// Count (and keep, if it is not an application packet) a packet from the TUN side.
    pub(crate) fn record_tun(&mut self, now: Instant, packet: &BytesMut, app: bool) {
        self.tun.packets += 1;
        self.tun.bytes += packet.len() as u64;
        if app {
            self.tun.app_packets += 1;
            return;
        }
        match PacketInfo::parse(packet).map(|info| info.proto) {
            Ok(Proto::Tcp) => self.tun.tcp += 1,
            Ok(Proto::Udp) => self.tun.udp += 1,
            Ok(Proto::Icmp) => self.tun.icmp += 1,
            _ => self.tun.other += 1,
        }
        self.tun.last_other_at = Some(now);
        if self.tun_capture.len() == TUN_CAPTURE_LEN {
            self.tun_capture.pop_front();
        }
        self.tun_capture.push_back((now, packet.clone()));
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The static public key (the same across restarts).
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Where its WireGuard listens on the underlay.
    pub fn underlay_addr(&self) -> SocketAddr {
        underlay_addr(self.id)
    }

    /// Its address inside the mesh.
    pub fn mesh_addr(&self) -> Ipv4Addr {
        mesh_addr(self.id)
    }

    /// How it is built.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Its current filter (the one a restart starts with).
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Its netmap: the peers it is configured with, in the order they were added.
    pub fn netmap_peers(&self) -> impl Iterator<Item = (NodeId, &NetmapPeer)> {
        self.peers.iter().map(|(n, p)| (*n, p))
    }

    /// Whether it is running (not crashed).
    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// The running core node, for inspection (its counters, `peer_id`, `netmap_peer`);
    /// `None` while crashed.
    pub fn core(&self) -> Option<&CoreNode> {
        self.core.as_ref()
    }

    /// The running WireGuard, for inspection; `None` while crashed.
    pub fn wireguard(&self) -> Option<&WireGuard> {
        self.core.as_ref().map(CoreNode::wireguard)
    }

    /// Counts boots and crashes; events of other generations are stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The nodes configured as peers, in the order they were added.
    pub fn peer_nodes(&self) -> &[NodeId] {
        &self.peer_nodes
    }

    /// The `PeerId` the running node gave `node` (what its TCP stack tags connections from
    /// `node` with).
    pub fn peer_id(&self, node: NodeId) -> Option<PeerId> {
        self.by_node.get(&node).copied()
    }

    /// The node behind a `PeerId` of the running node.
    pub fn peer_node(&self, peer: PeerId) -> Option<NodeId> {
        self.by_peer_id.get(&peer).copied()
    }

    /// The running WireGuard's view of its peer `node` (session, endpoint, counters).
    pub fn peer_status(&self, node: NodeId) -> Option<PeerStatus> {
        self.wireguard()?.peer_status(self.peer_id(node)?)
    }

    /// Whether the running WireGuard holds a current session with `node`.
    pub fn has_session_with(&self, node: NodeId) -> bool {
        self.peer_status(node).is_some_and(|s| s.session.is_some())
    }

    /// Whether the traffic application sends from this node.
    pub fn sends_traffic(&self) -> bool {
        self.traffic
    }

    /// Counters (kept across crashes).
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// What arrived at its TUN side (kept across crashes).
    pub fn tun_stats(&self) -> &TunStats {
        &self.tun
    }

    /// The last [`TUN_CAPTURE_LEN`] packets that arrived at its TUN side and were not
    /// traffic-application packets, oldest first, with their arrival time.
    pub fn tun_captured(&self) -> impl Iterator<Item = &(Instant, BytesMut)> {
        self.tun_capture.iter()
    }

    /// WireGuard's counters over all incarnations.
    pub fn wg_totals(&self) -> WgTotals {
        self.wireguard().map_or(self.retired, |wg| self.retired + WgTotals::of(wg))
    }
}
