//! The world: nodes, the applications running on them, the network between them, the event
//! queue and the virtual clock.
//!
//! The world drives every node's composed [`mesh_core::node::Node`] exactly as the sans-IO
//! contract says a shell must (see [`crate::driver`]): each input (`handle_datagram`,
//! `handle_tun_packet`, `handle_timeout`, a netmap or filter change, a TCP call of an
//! application) is followed by draining `poll_transmit`, `poll_tun_packet` and `poll_event`
//! until they are empty, and then by one `poll_timeout` for that node, which schedules a
//! timer event. Timer events that an earlier deadline superseded, or that belong to a
//! crashed incarnation, are ignored.
//!
//! Everything random (keys, WireGuard's own randomness, link behaviour, traffic targets,
//! chaos) comes from forks of one [`Rng`] seeded with the world's seed, taken in a fixed
//! order, and no container is iterated in hash order: the run is a pure function of the
//! seed and the calls made on the world, which the trace hash makes checkable.

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use mesh_core::ip::Filter;
use mesh_core::node::NetmapPeer;
use mesh_core::rng::Rng;
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::PrivateKey;
use tracing::debug;

use crate::addresses::MAX_NODES;
use crate::apps::{AcceptedConn, TcpApps, Transfer};
use crate::driver::Driver;
use crate::error::SimError;
use crate::events::{Event, EventQueue};
use crate::faults::{Chaos, ChaosConfig, Fault};
use crate::ids::{NodeId, SshClientId, TransferId};
use crate::link::{DropCause, LinkConfig};
use crate::network::Network;
use crate::node::{netmap_entry, unix_time, Node, NodeConfig, WgTotals};
use crate::node_apps::NodeApps;
use crate::seed::seeded_rng;
use crate::ssh_apps::{SshApps, SshClientConfig, SshClientRecord, SshServerRecord};
use crate::stats::{PairMatrix, PairStats, SimStats, Summary};
use crate::trace::{hex, Trace, TraceRecord};
use crate::traffic::TrafficConfig;

/// The wall-clock time at virtual time zero (2023-11-14T22:13:20Z). WireGuard's handshake
/// timestamps are this plus virtual time, so they increase across a node's restarts.
pub const VIRTUAL_EPOCH: Duration = Duration::from_secs(1_700_000_000);

/// How long before the end of a run a pair's last delivery must be for
/// [`World::summary`] to call the pair stalled.
pub const STALL_WINDOW: Duration = Duration::from_secs(60);

/// Independent random streams, forked from the seed in a fixed order.
struct Rngs {
    keys: Rng,
    nodes: Rng,
    links: Rng,
    traffic: Rng,
    chaos: Rng,
}

/// The simulated world.
pub struct World {
    seed: u64,
    now: Instant,
    epoch: UnixTime,
    queue: EventQueue<Event>,
    net: Network,
    nodes: Vec<Node>,
    /// The applications running on each node (`node_apps[i]` beside `nodes[i]`); a crash
    /// takes a node's away.
    node_apps: Vec<NodeApps>,
    pairs: PairMatrix,
    trace: Trace,
    stats: SimStats,
    rng: Rngs,
    traffic: Option<TrafficConfig>,
    chaos: Option<Chaos>,
    /// Identifies the current tick chains (traffic per node, chaos).
    next_chain: u64,
    chaos_chain: u64,
    connect_on_restart: bool,
    rerun_hint: String,
    /// The TCP apps' records of every transfer and accepted connection.
    tcp: TcpApps,
    /// The SSH apps: server apps (they survive crashes), records, the clients' RNG.
    ssh: SshApps,
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .field("queued", &self.queue.len())
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

impl World {
    /// An empty world whose every random choice derives from `seed`, with `default_link`
    /// for links between nodes added later.
    pub fn new(seed: u64, default_link: LinkConfig) -> Self {
        let mut root = seeded_rng(seed);
        // The order of these forks is part of the seed's meaning: append, never reorder.
        let rng = Rngs {
            keys: root.fork(),
            nodes: root.fork(),
            links: root.fork(),
            traffic: root.fork(),
            chaos: root.fork(),
        };
        let ssh = root.fork();
        Self {
            seed,
            now: Instant::ZERO,
            epoch: UnixTime(VIRTUAL_EPOCH),
            queue: EventQueue::new(),
            net: Network::new(default_link),
            nodes: Vec::new(),
            node_apps: Vec::new(),
            pairs: PairMatrix::default(),
            trace: Trace::new(),
            stats: SimStats::default(),
            rng,
            traffic: None,
            chaos: None,
            next_chain: 0,
            chaos_chain: 0,
            connect_on_restart: false,
            rerun_hint: format!("cargo run --release -p mesh-sim --bin meshsim -- --seed {seed}"),
            tcp: TcpApps::new(seed),
            ssh: SshApps::new(ssh),
        }
    }

    /// The driver, with `node` and its applications lent beside it.
    ///
    /// # Panics
    /// If the node does not exist.
    fn driver(&mut self, node: NodeId) -> (Driver<'_>, &mut Node, &mut NodeApps) {
        let driver = Driver {
            now: self.now,
            net: &mut self.net,
            queue: &mut self.queue,
            trace: &mut self.trace,
            stats: &mut self.stats,
            pairs: &mut self.pairs,
            tcp: &mut self.tcp,
            ssh: &mut self.ssh,
            link_rng: &mut self.rng.links,
        };
        (driver, &mut self.nodes[node.0], &mut self.node_apps[node.0])
    }

    fn check_node(&self, node: NodeId) -> Result<(), SimError> {
        if node.0 < self.nodes.len() {
            Ok(())
        } else {
            Err(SimError::NoSuchNode(node))
        }
    }

    // ----- building ---------------------------------------------------------------------

    /// Add a running node with a fresh static key and the default [`NodeConfig`] (SSH off),
    /// linked to every existing node with the default link. It has no peers yet (see
    /// [`Self::add_peer`]) and the filter [`crate::allow_mesh_filter`].
    pub fn add_node(&mut self) -> Result<NodeId, SimError> {
        self.add_node_with(NodeConfig::default())
    }

    /// [`Self::add_node`] with a configuration (e.g. `serve_ssh`, TCP sizes).
    pub fn add_node_with(&mut self, config: NodeConfig) -> Result<NodeId, SimError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(SimError::TooManyNodes);
        }
        let key = PrivateKey::from_bytes(self.rng.keys.gen_bytes());
        let id = self.net.add_node();
        self.pairs.add_node();
        let host_key = ed25519_dalek::SigningKey::from_bytes(&self.rng.keys.gen_bytes());
        let mut node = Node::new(id, key, host_key, config);
        node.boot(self.now, unix_time(self.epoch, self.now), self.rng.nodes.gen_bytes())?;
        self.nodes.push(node);
        self.node_apps.push(NodeApps::default());
        let (mut driver, node, apps) = self.driver(id);
        driver.drive(node, apps, false);
        self.start_app_chain(id);
        Ok(id)
    }

    /// The netmap entry describing `peer`: its public key, endpoint = its underlay address,
    /// mesh address (the allowed IP, /32), name `n<i>`.
    pub fn netmap_entry(&self, peer: NodeId) -> Result<NetmapPeer, SimError> {
        self.check_node(peer)?;
        Ok(netmap_entry(peer, self.nodes[peer.0].public_key()))
    }

    /// Make `peer` a peer of `node` (add it to `node`'s netmap, see [`Self::netmap_entry`]).
    /// One direction only; see [`Self::connect_full_mesh`].
    pub fn add_peer(&mut self, node: NodeId, peer: NodeId) -> Result<(), SimError> {
        let entry = self.netmap_entry(peer)?;
        self.add_peer_with(node, peer, entry)
    }

    /// Make `peer` a peer of `node` with an explicit netmap entry (e.g. no endpoint, extra
    /// routes). Re-adding a peer replaces its entry.
    pub fn add_peer_with(&mut self, node: NodeId, peer: NodeId, entry: NetmapPeer) -> Result<(), SimError> {
        self.add_peers(node, vec![(peer, entry)])
    }

    fn add_peers(&mut self, node: NodeId, peers: Vec<(NodeId, NetmapPeer)>) -> Result<(), SimError> {
        self.check_node(node)?;
        for (peer, _) in &peers {
            self.check_node(*peer)?;
            if *peer == node {
                return Err(SimError::SelfPeer(node));
            }
        }
        let now = self.now;
        let (mut driver, n, apps) = self.driver(node);
        n.add_peers(now, peers)?;
        driver.drive(n, apps, false);
        Ok(())
    }

    /// Replace `node`'s whole netmap with `peers` (each with the simulator node it is).
    pub fn set_peers(&mut self, node: NodeId, peers: Vec<(NodeId, NetmapPeer)>) -> Result<(), SimError> {
        self.check_node(node)?;
        for (peer, _) in &peers {
            self.check_node(*peer)?;
        }
        let now = self.now;
        let (mut driver, n, apps) = self.driver(node);
        n.set_peers(now, peers)?;
        driver.drive(n, apps, false);
        Ok(())
    }

    /// Make every node a peer of every other node (one netmap update per node).
    pub fn connect_full_mesh(&mut self) -> Result<(), SimError> {
        let n = self.nodes.len();
        let entries: Vec<NetmapPeer> = (0..n).map(|i| netmap_entry(NodeId(i), self.nodes[i].public_key())).collect();
        for a in 0..n {
            let peers = (0..n).filter(|b| *b != a).map(|b| (NodeId(b), entries[b].clone())).collect();
            self.add_peers(NodeId(a), peers)?;
        }
        Ok(())
    }

    /// Replace `node`'s packet filter (it keeps it across restarts). Flows opened by peers
    /// that the new filter no longer allows are cut at once (see
    /// `mesh_core::node::Node::set_filter`).
    pub fn set_filter(&mut self, node: NodeId, filter: Filter) -> Result<(), SimError> {
        self.check_node(node)?;
        let now = self.now;
        let (mut driver, n, apps) = self.driver(node);
        n.set_filter(now, filter);
        driver.drive(n, apps, false);
        Ok(())
    }

    /// Start the traffic application on every node that has it enabled (all, unless
    /// [`Self::set_node_traffic`] turned it off): each sends a packet to a random peer about
    /// every `config.interval`.
    pub fn start_traffic(&mut self, config: TrafficConfig) {
        self.traffic = Some(config);
        for i in 0..self.nodes.len() {
            self.start_app_chain(NodeId(i));
        }
    }

    /// Stop the traffic application everywhere (pending ticks become stale).
    pub fn stop_traffic(&mut self) {
        self.traffic = None;
    }

    /// Turn the traffic application of one node on or off.
    ///
    /// # Panics
    /// If the node does not exist.
    pub fn set_node_traffic(&mut self, node: NodeId, enabled: bool) {
        let was = std::mem::replace(&mut self.nodes[node.0].traffic, enabled);
        if enabled && !was {
            self.start_app_chain(node);
        }
    }

    /// Begin a new chain of traffic ticks for `node` (if traffic runs and the node is up),
    /// making any older chain stale.
    fn start_app_chain(&mut self, node: NodeId) {
        self.next_chain += 1;
        let chain = self.next_chain;
        let n = &mut self.nodes[node.0];
        n.app_chain = chain;
        if let (Some(traffic), true) = (self.traffic, n.is_up() && n.traffic) {
            let at = self.now + traffic.next_gap(&mut self.rng.traffic);
            self.queue.schedule(at, Event::AppTick { node, chain });
        }
    }

    /// Inject random faults from now on (see [`ChaosConfig`]); `None` stops.
    pub fn set_chaos(&mut self, config: Option<ChaosConfig>) {
        self.next_chain += 1;
        self.chaos_chain = self.next_chain;
        self.chaos = config.map(|c| Chaos::new(c, self.rng.chaos.fork()));
        if let Some(chaos) = self.chaos.as_mut() {
            let at = self.now + chaos.next_gap();
            self.queue.schedule(at, Event::Chaos { chain: self.chaos_chain });
        }
    }

    /// Whether a restarted node immediately starts a handshake with every peer (`true`), or
    /// waits for traffic to trigger them (`false`, the default; what a daemon without
    /// persistent keepalives does). The core node has no "connect" call, so a restarted
    /// node that should connect sends one traffic-application packet to each peer, which
    /// starts the handshakes.
    pub fn set_connect_on_restart(&mut self, connect: bool) {
        self.connect_on_restart = connect;
    }

    /// The command a failure report tells the reader to run (see [`Self::check`]).
    pub fn set_rerun_hint(&mut self, hint: impl Into<String>) {
        self.rerun_hint = hint.into();
    }

    // ----- faults -----------------------------------------------------------------------

    /// Apply `fault` at `at` (immediately if `at` is not in the future).
    pub fn schedule_fault(&mut self, at: Instant, fault: Fault) {
        self.queue.schedule(at.max(self.now), Event::Fault(fault));
    }

    /// Apply `fault` now.
    ///
    /// # Panics
    /// If it names a node that does not exist.
    pub fn apply(&mut self, fault: Fault) -> Result<(), SimError> {
        match fault {
            Fault::Partition(a, b) => self.partition(a, b),
            Fault::PartitionOneWay { from, to } => self.partition_one_way(from, to),
            Fault::Heal(a, b) => self.heal(a, b),
            Fault::HealOneWay { from, to } => self.heal_one_way(from, to),
            Fault::Isolate(n) => self.isolate(n),
            Fault::HealAll => self.heal_all(),
            Fault::Crash(n) => self.crash(n),
            Fault::Restart(n) => return self.restart(n),
        }
        Ok(())
    }

    fn record_fault(&mut self, fault: Fault) {
        debug!(now = self.now.as_micros(), %fault, "fault");
        self.trace.record(self.now, TraceRecord::Fault(fault));
    }

    /// Cut both directions between `a` and `b`. Datagrams in flight are lost when they
    /// arrive while the cut is in force.
    ///
    /// # Panics
    /// If a node does not exist (as do the other partition methods).
    pub fn partition(&mut self, a: NodeId, b: NodeId) {
        self.net.partition(a, b);
        self.stats.partitions += 1;
        self.record_fault(Fault::Partition(a, b));
    }

    /// Cut `from -> to` only.
    pub fn partition_one_way(&mut self, from: NodeId, to: NodeId) {
        self.net.partition_one_way(from, to);
        self.stats.partitions += 1;
        self.record_fault(Fault::PartitionOneWay { from, to });
    }

    /// Cut `node` off from every other node.
    pub fn isolate(&mut self, node: NodeId) {
        self.net.isolate(node);
        self.stats.partitions += 1;
        self.record_fault(Fault::Isolate(node));
    }

    /// Restore both directions between `a` and `b`.
    pub fn heal(&mut self, a: NodeId, b: NodeId) {
        self.net.heal(a, b);
        self.record_fault(Fault::Heal(a, b));
    }

    /// Restore `from -> to`.
    pub fn heal_one_way(&mut self, from: NodeId, to: NodeId) {
        self.net.heal_one_way(from, to);
        self.record_fault(Fault::HealOneWay { from, to });
    }

    /// Remove every partition.
    pub fn heal_all(&mut self) {
        self.net.heal_all();
        self.record_fault(Fault::HealAll);
    }

    /// Crash `node`: its WireGuard and all session state are gone, its pending timers and
    /// traffic become stale, and datagrams arriving while it is down are lost. No-op if it
    /// is already down.
    ///
    /// # Panics
    /// If the node does not exist.
    pub fn crash(&mut self, node: NodeId) {
        if !self.nodes[node.0].is_up() {
            return;
        }
        let (mut driver, n, apps) = self.driver(node);
        driver.crash_apps(std::mem::take(apps));
        n.crash();
        n.stats.crashes += 1;
        self.stats.crashes += 1;
        self.record_fault(Fault::Crash(node));
    }

    /// Restart a crashed `node`: a fresh core node with the same static key, configuration,
    /// peers and filter, a fresh seed from the RNG, and its traffic application resumes. It re-handshakes
    /// as traffic demands (or at once, see [`Self::set_connect_on_restart`]). No-op if it
    /// is running.
    pub fn restart(&mut self, node: NodeId) -> Result<(), SimError> {
        self.check_node(node)?;
        if self.nodes[node.0].is_up() {
            return Ok(());
        }
        let now = self.now;
        let unix = unix_time(self.epoch, now);
        let seed = self.rng.nodes.gen_bytes();
        let connect = self.connect_on_restart;
        {
            let n = &mut self.nodes[node.0];
            n.boot(now, unix, seed)?;
            n.stats.restarts += 1;
            // The crash took the old incarnation's applications; the new one starts bare.
            self.node_apps[node.0] = NodeApps::default();
        }
        self.stats.restarts += 1;
        self.record_fault(Fault::Restart(node));
        let (mut driver, n, apps) = self.driver(node);
        driver.drive(n, apps, false);
        if connect {
            let peers: Vec<NodeId> = n.peer_nodes().to_vec();
            for peer in peers {
                driver.send_app_packet(n, apps, peer)?;
            }
        }
        self.start_app_chain(node);
        Ok(())
    }

    /// Replace the link configuration of both directions between `a` and `b`.
    ///
    /// # Panics
    /// If a node does not exist.
    pub fn set_link(&mut self, a: NodeId, b: NodeId, config: LinkConfig) {
        self.net.set_link(a, b, config);
    }

    /// Replace the configuration of `from -> to` only.
    pub fn set_link_one_way(&mut self, from: NodeId, to: NodeId, config: LinkConfig) {
        self.net.set_link_one_way(from, to, config);
    }

    /// Replace every link's configuration (and the default for nodes added later).
    pub fn set_all_links(&mut self, config: LinkConfig) {
        self.net.set_all_links(config);
    }

    // ----- running ----------------------------------------------------------------------

    /// Send one application packet `from -> to` now (outside the traffic schedule).
    pub fn send_app_packet(&mut self, from: NodeId, to: NodeId) -> Result<(), SimError> {
        self.check_node(from)?;
        self.check_node(to)?;
        if from == to {
            return Err(SimError::SelfPeer(from));
        }
        let (mut driver, node, apps) = self.driver(from);
        driver.send_app_packet(node, apps, to)
    }

    /// Hand a raw IP packet to `node`'s TUN side, as if a program on it had sent it (the
    /// node does not check its source address: a compromised node can send anything).
    pub fn inject_tun_packet(&mut self, node: NodeId, packet: &[u8]) -> Result<(), SimError> {
        self.check_node(node)?;
        let (mut driver, n, apps) = self.driver(node);
        driver.inject(n, apps, packet)
    }

    /// Open a TCP connection from `from` to `to`'s mesh address and `port`, and stream
    /// `bytes` payload bytes over it (see [`crate::apps`]); the destination's sink verifies
    /// them. Returns the transfer's id ([`Self::transfer`]).
    pub fn open_tcp(&mut self, from: NodeId, to: NodeId, port: u16, bytes: u64) -> Result<TransferId, SimError> {
        self.check_node(from)?;
        self.check_node(to)?;
        let (mut driver, node, apps) = self.driver(from);
        driver.open_tcp(node, apps, to, port, bytes)
    }

    /// Run the SSH server app on `node` (see [`crate::ssh_apps`]): the node's core runs an
    /// SSH server session with the node's host key for every connection on port 22, with
    /// `config`, and the app accepts a login exactly when the WireGuard peer the session
    /// is bound to is one of `allow`. Calling again changes the allow set and
    /// configuration. Returns the host's ssh-ed25519 public key. The app survives crashes
    /// (the connections do not).
    pub fn serve_ssh(
        &mut self,
        node: NodeId,
        allow: impl IntoIterator<Item = NodeId>,
        config: mesh_core::ssh::server::ServerConfig,
    ) -> Result<[u8; 32], SimError> {
        self.check_node(node)?;
        if !self.nodes[node.0].config().serve_ssh {
            return Err(SimError::NoSshPort(node));
        }
        let n = &mut self.nodes[node.0];
        n.set_ssh_session(config);
        let host_key = n.ssh_host_public();
        self.ssh.serve(node, allow.into_iter().collect(), host_key);
        Ok(host_key)
    }

    /// The host key of `node`'s SSH server (what clients pin), if it serves SSH.
    pub fn ssh_host_key(&self, node: NodeId) -> Option<[u8; 32]> {
        let n = self.nodes.get(node.0)?;
        n.config().serve_ssh.then(|| n.ssh_host_public())
    }

    /// Open an SSH client app `from -> to:22` that logs in and runs `config.script` (see
    /// [`crate::ssh_apps`]), pinning `to`'s host key unless the configuration names one.
    pub fn open_ssh(&mut self, from: NodeId, to: NodeId, config: SshClientConfig) -> Result<SshClientId, SimError> {
        self.check_node(from)?;
        self.check_node(to)?;
        let (mut driver, node, apps) = self.driver(from);
        driver.open_ssh(node, apps, to, config)
    }

    /// Run until SSH client `id`'s connection has closed (or its node crashed), or until
    /// `limit` of virtual time has passed. Returns whether it closed.
    ///
    /// # Panics
    /// If no such client was opened.
    pub fn run_until_ssh_closed(&mut self, id: SshClientId, limit: Duration) -> bool {
        let deadline = self.now + limit;
        let closed = |w: &Self| w.ssh.clients[id.0 as usize].closed_at.is_some();
        while !closed(self) && self.queue.peek_time().is_some_and(|t| t <= deadline) {
            self.step();
        }
        if !closed(self) {
            self.now = self.now.max(deadline);
        }
        closed(self)
    }

    /// Process the next event. Returns `false` if nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some((at, event)) = self.queue.pop() else { return false };
        self.now = self.now.max(at);
        self.stats.events += 1;
        match event {
            Event::Deliver { from, to, payload } => self.deliver(from, to, payload),
            Event::Timer { node, generation } => self.fire_timer(node, generation, at),
            Event::AppTick { node, chain } => self.app_tick(node, chain),
            Event::Fault(fault) => {
                if let Err(error) = self.apply(fault) {
                    debug!(%fault, %error, "scheduled fault failed");
                }
            }
            Event::Chaos { chain } => self.chaos_tick(chain),
        }
        true
    }

    /// Process every event due at or before `deadline`, then set the clock to `deadline`.
    pub fn run_until(&mut self, deadline: Instant) {
        while self.queue.peek_time().is_some_and(|t| t <= deadline) {
            self.step();
        }
        self.now = self.now.max(deadline);
    }

    /// Run for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, payload: BytesMut) {
        let (mut driver, node, apps) = self.driver(to);
        if driver.net.is_blocked(from, to) {
            driver.drop_datagram(from, Some(to), DropCause::Partition);
            return;
        }
        if !node.is_up() {
            driver.drop_datagram(from, Some(to), DropCause::NodeDown);
            return;
        }
        driver.deliver(node, apps, from, payload);
    }

    fn fire_timer(&mut self, id: NodeId, generation: u64, at: Instant) {
        let (mut driver, node, apps) = self.driver(id);
        if node.generation() != generation || node.timer_at != Some(at) {
            driver.stats.stale_events += 1;
            return;
        }
        node.timer_at = None;
        driver.timeout(node, apps);
    }

    fn app_tick(&mut self, id: NodeId, chain: u64) {
        let Some(traffic) = self.traffic else {
            self.stats.stale_events += 1;
            return;
        };
        let node = &self.nodes[id.0];
        if node.app_chain != chain || !node.is_up() || !node.traffic {
            self.stats.stale_events += 1;
            return;
        }
        let peers = node.peer_nodes();
        if !peers.is_empty() {
            let to = peers[self.rng.traffic.below(peers.len() as u64) as usize];
            let (mut driver, node, apps) = self.driver(id);
            // The node is up (checked above), so this cannot fail.
            let _ = driver.send_app_packet(node, apps, to);
        }
        let at = self.now + traffic.next_gap(&mut self.rng.traffic);
        self.queue.schedule(at, Event::AppTick { node: id, chain });
    }

    fn chaos_tick(&mut self, chain: u64) {
        let crashed = self.nodes.iter().filter(|n| !n.is_up()).count();
        let nodes = &self.nodes;
        let Some(chaos) = self.chaos.as_mut().filter(|_| chain == self.chaos_chain) else {
            self.stats.stale_events += 1;
            return;
        };
        let plan = chaos.plan(nodes.len(), crashed, |n| nodes.get(n.0).is_some_and(Node::is_up));
        let gap = chaos.next_gap();
        self.queue.schedule(self.now + gap, Event::Chaos { chain });
        if let Some(plan) = plan {
            if let Err(error) = self.apply(plan.fault) {
                debug!(fault = %plan.fault, %error, "chaos fault failed");
            }
            self.schedule_fault(self.now + plan.lasts, plan.repair);
        }
    }

    // ----- inspection -------------------------------------------------------------------

    /// The seed everything random derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.now.as_micros())
    }

    /// The wall-clock time nodes see now.
    pub fn unix_time(&self) -> UnixTime {
        unix_time(self.epoch, self.now)
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// All node ids.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len()).map(NodeId)
    }

    /// A node, for inspection (`world.node(n).wireguard()`, `.peer_status(m)`, ...).
    ///
    /// # Panics
    /// If the node does not exist.
    pub fn node(&self, node: NodeId) -> &Node {
        &self.nodes[node.0]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The network (link configurations, partitions, per-direction counters).
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Application traffic `from -> to`.
    ///
    /// # Panics
    /// If a node does not exist.
    pub fn pair(&self, from: NodeId, to: NodeId) -> &PairStats {
        self.pairs.get(from, to)
    }

    /// Every ordered pair's traffic.
    pub fn pairs(&self) -> &PairMatrix {
        &self.pairs
    }

    /// Whether an application packet `from -> to` arrived strictly after `t`.
    pub fn delivered_after(&self, from: NodeId, to: NodeId, t: Instant) -> bool {
        self.pairs.get(from, to).delivered_after(t)
    }

    /// Every client transfer opened so far ([`Self::open_tcp`]), in order.
    pub fn transfers(&self) -> &[Transfer] {
        &self.tcp.transfers
    }

    /// One client transfer.
    ///
    /// # Panics
    /// If no such transfer was opened.
    pub fn transfer(&self, id: TransferId) -> &Transfer {
        &self.tcp.transfers[id.0 as usize]
    }

    /// Every connection any node accepted, in order.
    pub fn accepted_conns(&self) -> &[AcceptedConn] {
        &self.tcp.accepted
    }

    /// The connections `node` accepted.
    pub fn accepted_on(&self, node: NodeId) -> impl Iterator<Item = &AcceptedConn> {
        self.tcp.accepted.iter().filter(move |a| a.node == node)
    }

    /// The connection that accepted transfer `id` (by the stream header it sent).
    pub fn accepted_for(&self, id: TransferId) -> Option<&AcceptedConn> {
        self.tcp.accepted.iter().find(|a| a.transfer == Some(id))
    }

    /// Every SSH client app opened so far, in order.
    pub fn ssh_clients(&self) -> &[SshClientRecord] {
        &self.ssh.clients
    }

    /// One SSH client app.
    ///
    /// # Panics
    /// If no such client was opened.
    pub fn ssh_client(&self, id: SshClientId) -> &SshClientRecord {
        &self.ssh.clients[id.0 as usize]
    }

    /// Every connection an SSH server app accepted, in order.
    pub fn ssh_accepted(&self) -> &[SshServerRecord] {
        &self.ssh.accepted
    }

    /// World-wide counters.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// `SessionEstablished` events so far, all nodes together.
    pub fn handshakes(&self) -> u64 {
        self.stats.sessions_established
    }

    /// Events processed so far.
    pub fn events_processed(&self) -> u64 {
        self.stats.events
    }

    /// Events waiting in the queue.
    pub fn events_pending(&self) -> usize {
        self.queue.len()
    }

    /// The trace (hash, record count, recent records).
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// BLAKE2s-256 over the ordered trace of everything that happened so far.
    pub fn trace_hash(&self) -> [u8; 32] {
        self.trace.hash()
    }

    /// [`Self::trace_hash`] as 64 lower-case hex digits.
    pub fn trace_hash_hex(&self) -> String {
        hex(&self.trace.hash())
    }

    /// The run so far in a few numbers.
    pub fn summary(&self) -> Summary {
        let end = self.now;
        let window_start = end - STALL_WINDOW;
        let both_up = |a: NodeId, b: NodeId| self.nodes[a.0].is_up() && self.nodes[b.0].is_up();
        let silent_pairs = self.pairs.iter().filter(|(_, _, p)| p.sent > 0 && p.delivered == 0).count();
        let stalled_pairs = if self.elapsed() > STALL_WINDOW * 2 {
            self.pairs
                .iter()
                .filter(|(a, b, p)| {
                    both_up(*a, *b)
                        && p.last_sent.is_some_and(|t| t > window_start)
                        && p.last_delivery.is_none_or(|t| t <= window_start)
                })
                .count()
        } else {
            0
        };
        Summary {
            seed: self.seed,
            nodes: self.nodes.len(),
            virtual_time: self.elapsed(),
            stats: self.stats.clone(),
            wireguard: self.nodes.iter().fold(WgTotals::default(), |t, n| t + n.wg_totals()),
            silent_pairs,
            stalled_pairs,
            trace_records: self.trace.len(),
            trace_hash: self.trace.hash(),
        }
    }

    // ----- failure reports --------------------------------------------------------------

    /// Panic with `message`, the seed, the command to rerun, and the last trace records.
    pub fn fail(&self, message: impl fmt::Display) -> ! {
        let mut report = format!(
            "simulation check failed at t={:.6}s: {message}\n  seed: {}\n  rerun: {}\n  last trace records:",
            self.elapsed().as_secs_f64(),
            self.seed,
            self.rerun_hint
        );
        for (at, record) in self.trace.recent() {
            report
                .push_str(&format!("\n    {:>12.6}s {record:?}", Duration::from_micros(at.as_micros()).as_secs_f64()));
        }
        panic!("{report}");
    }

    /// [`Self::fail`] unless `condition` holds.
    pub fn check(&self, condition: bool, message: impl fmt::Display) {
        if !condition {
            self.fail(message);
        }
    }
}
