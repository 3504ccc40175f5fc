//! A simulated node: a static key, two addresses, the peers it is configured with and, while
//! it runs, a [`WireGuard`] state machine.
//!
//! The node keeps its peer configuration outside WireGuard so a crash can throw the whole
//! state machine away and a restart can build a fresh one with the same identity and the
//! same peers, as a rebooted daemon would. Each boot is a new *generation*: events scheduled
//! for an older generation (timers, traffic ticks) are recognised as stale and ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mesh_core::rng::Rng;
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::{Config, PeerConfig, PeerId, PeerStatus, PrivateKey, PublicKey, WireGuard};

use crate::error::SimError;
use crate::network::{mesh_addr, underlay_addr};

/// A node's index in its world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
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
    /// Datagrams WireGuard refused (`handle_datagram` returned an error).
    pub datagrams_rejected: u64,
    /// Application packets handed to WireGuard.
    pub app_sent: u64,
    /// Application packets WireGuard refused outright (`handle_packet` returned an error).
    pub app_send_failed: u64,
    /// Application packets received.
    pub app_received: u64,
    pub crashes: u64,
    pub restarts: u64,
}

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
    /// Peers in the order they were added; replayed on restart so `PeerId`s come out the same.
    peers: Vec<(NodeId, PeerConfig)>,
    /// Nodes this node may send application traffic to (its peers, in order).
    peer_nodes: Vec<NodeId>,
    by_peer_id: BTreeMap<PeerId, NodeId>,
    by_node: BTreeMap<NodeId, PeerId>,
    pub(crate) wg: Option<WireGuard>,
    generation: u64,
    /// The earliest timer event scheduled for this generation and not yet fired.
    pub(crate) timer_at: Option<Instant>,
    /// Whether the traffic application runs on this node.
    pub(crate) traffic: bool,
    /// The current chain of traffic ticks (see `World::start_app_chain`).
    pub(crate) app_chain: u64,
    pub(crate) stats: NodeStats,
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

impl Node {
    /// A node with this key, not yet running.
    pub(crate) fn new(id: NodeId, private_key: PrivateKey) -> Self {
        let public_key = private_key.public_key();
        Self {
            id,
            private_key,
            public_key,
            peers: Vec::new(),
            peer_nodes: Vec::new(),
            by_peer_id: BTreeMap::new(),
            by_node: BTreeMap::new(),
            wg: None,
            generation: 0,
            timer_at: None,
            traffic: true,
            app_chain: 0,
            stats: NodeStats::default(),
            retired: WgTotals::default(),
        }
    }

    /// Start a fresh WireGuard with this node's key and every configured peer.
    pub(crate) fn boot(&mut self, now: Instant, unix: UnixTime, rng: Rng) -> Result<(), SimError> {
        let mut wg = WireGuard::new(Config::new(self.private_key.clone()), rng, now, unix)?;
        self.by_peer_id.clear();
        self.by_node.clear();
        for (node, config) in &self.peers {
            let id = wg.add_peer(now, config.clone())?;
            self.by_peer_id.insert(id, *node);
            self.by_node.insert(*node, id);
        }
        self.wg = Some(wg);
        self.generation += 1;
        self.timer_at = None;
        Ok(())
    }

    /// Drop all running state.
    pub(crate) fn crash(&mut self) {
        if let Some(wg) = self.wg.take() {
            self.retired = self.retired + WgTotals::of(&wg);
        }
        self.generation += 1;
        self.timer_at = None;
    }

    /// Configure `node` as a peer (and add it to the running WireGuard, if any).
    pub(crate) fn add_peer(&mut self, now: Instant, node: NodeId, config: PeerConfig) -> Result<(), SimError> {
        if let Some(wg) = self.wg.as_mut() {
            let id = wg.add_peer(now, config.clone())?;
            self.by_peer_id.insert(id, node);
            self.by_node.insert(node, id);
        }
        self.peers.push((node, config));
        self.peer_nodes.push(node);
        Ok(())
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

    /// Whether it is running (not crashed).
    pub fn is_up(&self) -> bool {
        self.wg.is_some()
    }

    /// The running WireGuard, for inspection; `None` while crashed.
    pub fn wireguard(&self) -> Option<&WireGuard> {
        self.wg.as_ref()
    }

    /// Counts boots and crashes; events of other generations are stale.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The nodes configured as peers, in the order they were added.
    pub fn peer_nodes(&self) -> &[NodeId] {
        &self.peer_nodes
    }

    /// The `PeerId` the running WireGuard gave `node`.
    pub fn peer_id(&self, node: NodeId) -> Option<PeerId> {
        self.by_node.get(&node).copied()
    }

    /// The node behind a `PeerId` of the running WireGuard.
    pub fn peer_node(&self, peer: PeerId) -> Option<NodeId> {
        self.by_peer_id.get(&peer).copied()
    }

    /// The running WireGuard's view of its peer `node` (session, endpoint, counters).
    pub fn peer_status(&self, node: NodeId) -> Option<PeerStatus> {
        self.wg.as_ref()?.peer_status(self.peer_id(node)?)
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

    /// WireGuard's counters over all incarnations.
    pub fn wg_totals(&self) -> WgTotals {
        self.wg.as_ref().map_or(self.retired, |wg| self.retired + WgTotals::of(wg))
    }
}
