//! The coordination server and its nodes in the simulator: a real [`ControlServer`] and one
//! real [`ControlClient`] per node, talking the real protocol (HTTP upgrade, Noise IK
//! channel, encoded messages) over simulated connections, while the [`World`] runs the
//! nodes' data plane with whatever netmaps the clients receive.
//!
//! A control connection is a reliable ordered byte stream (it stands for TCP): each chunk
//! arrives after the link's latency plus jitter, and a lost chunk arrives one
//! retransmission timeout later instead of never. A partition between a node and the
//! server silently swallows that node's bytes both ways (its client notices through its
//! 120 s watchdog, the server when TCP gives up 30 s after its first lost chunk); new
//! connections fail while it lasts. A crashed server resets every connection at once and
//! refuses new ones; a restarted server starts from what it persisted, so the test sees
//! exactly what a write-ahead database would hold.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use mesh_core::control::channel::{ChannelConfig, ChannelServer};
use mesh_core::control::client::{ClientConfig, ClientEvent, ControlClient};
use mesh_core::control::messages::{decode, encode, NodeMessage, RegisterAuth, Registered};
use mesh_core::control::server::{Change, ConnId, ControlServer, Output, ServerConfig, State};
use mesh_core::control::upgrade::{upgrade_response, RequestReader, UpgradeStatus};
use mesh_core::rng::Rng;
use mesh_core::time::Instant;
use mesh_core::wireguard::{PrivateKey, PublicKey};

use crate::addresses::{mesh_addr, node_at_mesh, underlay_addr};
use crate::events::EventQueue;
use crate::ids::NodeId;
use crate::seed::seeded_rng;
use crate::world::World;

/// How control connections behave.
#[derive(Clone, Copy, Debug)]
pub struct ControlLinkConfig {
    pub latency: Duration,
    pub jitter: Duration,
    /// Chance that a chunk needs a retransmission.
    pub loss: f64,
    pub retransmit: Duration,
}

impl Default for ControlLinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            retransmit: Duration::from_millis(300),
        }
    }
}

/// A node of the control simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub usize);

#[derive(Debug)]
struct SimClient {
    client: ControlClient,
    /// Its data plane in the world, if it has one.
    node: Option<NodeId>,
    conn: Option<ConnId>,
    partitioned: bool,
    registered: Option<Registered>,
    rejected: Vec<String>,
    events: Vec<ClientEvent>,
    timer: u64,
}

#[derive(Debug)]
struct ServerConn {
    client: ClientId,
    reader: Option<RequestReader>,
    channel: ChannelServer,
    connected: bool,
    /// When the stream broke (a chunk was lost to a partition).
    broken: bool,
}

#[derive(Debug)]
enum Event {
    Connected { client: ClientId, conn: ConnId },
    Refused { client: ClientId },
    ToServer { conn: ConnId, bytes: Bytes },
    ToClient { client: ClientId, conn: ConnId, bytes: Bytes },
    ClientClosed { client: ClientId, conn: ConnId },
    ServerClosed { conn: ConnId },
    ClientTimer { client: ClientId, generation: u64 },
    ServerTimer { generation: u64 },
}

/// The control plane of a simulated tailnet.
#[derive(Debug)]
pub struct ControlSim {
    pub world: World,
    config: ServerConfig,
    server: Option<ControlServer>,
    server_key: [u8; 32],
    server_public: PublicKey,
    /// What the server persisted: its database.
    db: State,
    persisted: usize,
    conns: BTreeMap<ConnId, ServerConn>,
    clients: Vec<SimClient>,
    queue: EventQueue<Event>,
    link: ControlLinkConfig,
    rng: Rng,
    next_conn: u64,
    server_timer: u64,
    /// Last arrival time per (connection, direction), to keep each stream in order.
    last_arrival: BTreeMap<(ConnId, bool), Instant>,
}

impl ControlSim {
    /// A control server (empty database) beside `world`.
    pub fn new(world: World, config: ServerConfig, link: ControlLinkConfig) -> Self {
        let mut rng = seeded_rng(world.seed() ^ 0xc0117201);
        let server_key: [u8; 32] = rng.gen_bytes();
        let server_public = PrivateKey::from_bytes(server_key).public_key();
        let mut sim = Self {
            world,
            config,
            server: None,
            server_key,
            server_public,
            db: State::default(),
            persisted: 0,
            conns: BTreeMap::new(),
            clients: Vec::new(),
            queue: EventQueue::new(),
            link,
            rng,
            next_conn: 1,
            server_timer: 0,
            last_arrival: BTreeMap::new(),
        };
        sim.start_server();
        sim
    }

    pub fn server(&mut self) -> Option<&mut ControlServer> {
        self.server.as_mut()
    }

    pub fn server_public_key(&self) -> PublicKey {
        self.server_public
    }

    /// Runs an admin operation on the live server and processes what it outputs.
    pub fn admin<T>(&mut self, f: impl FnOnce(&mut ControlServer, Instant) -> T) -> Option<T> {
        let now = self.world.now();
        let result = self.server.as_mut().map(|s| f(s, now));
        self.drain_server();
        result
    }

    /// Adds a client for world node `node` (or a control-only client with `None`),
    /// registering with `auth`. It connects at once.
    pub fn add_client(&mut self, node: Option<NodeId>, hostname: &str, auth: RegisterAuth) -> ClientId {
        let id = ClientId(self.clients.len());
        let machine = PrivateKey::from_bytes(self.rng.gen_bytes());
        let node_key = match node {
            Some(n) => self.world.node(n).public_key(),
            None => PrivateKey::from_bytes(self.rng.gen_bytes()).public_key(),
        };
        let config = ClientConfig::new(self.server_public, "control.sim", hostname, auth);
        let mut client = ControlClient::new(config, machine, node_key, self.rng.gen_bytes(), self.world.now());
        if let Some(n) = node {
            client.set_endpoints(vec![underlay_addr(n)]);
        }
        self.clients.push(SimClient {
            client,
            node,
            conn: None,
            partitioned: false,
            registered: None,
            rejected: Vec::new(),
            events: Vec::new(),
            timer: 0,
        });
        self.drain_client(id);
        id
    }

    pub fn client(&self, id: ClientId) -> &ControlClient {
        &self.clients[id.0].client
    }

    pub fn registered(&self, id: ClientId) -> Option<&Registered> {
        self.clients[id.0].registered.as_ref()
    }

    pub fn rejections(&self, id: ClientId) -> &[String] {
        &self.clients[id.0].rejected
    }

    /// Everything the client reported, in order.
    pub fn client_events(&self, id: ClientId) -> &[ClientEvent] {
        &self.clients[id.0].events
    }

    pub fn clients(&self) -> impl Iterator<Item = ClientId> {
        (0..self.clients.len()).map(ClientId)
    }

    /// The database as the server persisted it.
    pub fn database(&self) -> &State {
        &self.db
    }

    pub fn persisted_changes(&self) -> usize {
        self.persisted
    }

    // ---- faults ------------------------------------------------------------------------

    /// Cuts `client` off from the server (both directions), silently.
    pub fn partition(&mut self, client: ClientId) {
        self.clients[client.0].partitioned = true;
    }

    pub fn heal(&mut self, client: ClientId) {
        self.clients[client.0].partitioned = false;
    }

    /// Kills the server: every connection is reset; nothing unpersisted survives.
    pub fn crash_server(&mut self) {
        self.server = None;
        let conns: Vec<(ConnId, ClientId)> = self.conns.iter().map(|(id, c)| (*id, c.client)).collect();
        self.conns.clear();
        for (conn, client) in conns {
            let at = self.world.now() + self.delay();
            self.queue.schedule(at, Event::ClientClosed { client, conn });
        }
    }

    /// Starts the server again from its database.
    pub fn restart_server(&mut self) {
        self.start_server();
    }

    fn start_server(&mut self) {
        let seed = self.rng.gen_bytes();
        let unix = self.world.unix_time();
        match ControlServer::new(self.config.clone(), seed, self.db.clone(), unix) {
            Ok(server) => self.server = Some(server),
            Err(e) => panic!("the server cannot start from its own database: {e}"),
        }
        self.schedule_server_timer();
    }

    // ---- running -----------------------------------------------------------------------

    /// Runs the world and the control plane until `deadline`.
    pub fn run_until(&mut self, deadline: Instant) {
        while let Some(at) = self.queue.peek_time().filter(|t| *t <= deadline) {
            self.world.run_until(at);
            if let Some((_, event)) = self.queue.pop() {
                self.handle(event);
            }
        }
        self.world.run_until(deadline);
    }

    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.world.now() + duration;
        self.run_until(deadline);
    }

    /// Runs until `done` holds (checked every 100 ms of virtual time) or `limit` passes;
    /// whether it held.
    pub fn run_until_true(&mut self, limit: Duration, mut done: impl FnMut(&ControlSim) -> bool) -> bool {
        let deadline = self.world.now() + limit;
        while self.world.now() < deadline {
            if done(self) {
                return true;
            }
            self.run_for(Duration::from_millis(100));
        }
        done(self)
    }

    fn delay(&mut self) -> Duration {
        let jitter = self.link.jitter.as_micros() as u64;
        let mut d = self.link.latency + Duration::from_micros(if jitter > 0 { self.rng.below(jitter) } else { 0 });
        if self.link.loss > 0.0 && self.rng.chance(self.link.loss) {
            d += self.link.retransmit;
        }
        d
    }

    /// When a chunk sent now on `conn` in one direction arrives (streams stay in order).
    fn arrival(&mut self, conn: ConnId, to_server: bool) -> Instant {
        let at = self.world.now() + self.delay();
        let last = self.last_arrival.entry((conn, to_server)).or_insert(at);
        let at = at.max(*last);
        *last = at;
        at
    }

    fn handle(&mut self, event: Event) {
        let now = self.world.now();
        match event {
            Event::Connected { client, conn } => {
                if self.clients[client.0].conn == Some(conn) && self.conns.contains_key(&conn) {
                    self.clients[client.0].client.handle_connected(now);
                    self.drain_client(client);
                }
            }
            Event::Refused { client } => {
                self.clients[client.0].conn = None;
                self.clients[client.0].client.handle_disconnected(now);
                self.drain_client(client);
            }
            Event::ToServer { conn, bytes } => self.server_input(conn, &bytes),
            Event::ToClient { client, conn, bytes } => {
                if self.clients[client.0].conn == Some(conn) {
                    self.clients[client.0].client.handle_input(now, &bytes);
                    self.drain_client(client);
                }
            }
            Event::ClientClosed { client, conn } => {
                if self.clients[client.0].conn == Some(conn) {
                    self.clients[client.0].conn = None;
                    self.clients[client.0].client.handle_disconnected(now);
                    self.drain_client(client);
                }
            }
            Event::ServerClosed { conn } => self.close_server_side(conn),
            Event::ClientTimer { client, generation } => {
                if self.clients[client.0].timer == generation {
                    self.clients[client.0].client.handle_timeout(now);
                    self.drain_client(client);
                }
            }
            Event::ServerTimer { generation } => {
                if generation == self.server_timer {
                    let unix = self.world.unix_time();
                    if let Some(s) = self.server.as_mut() {
                        s.handle_timeout(now, unix);
                    }
                    self.drain_server();
                }
            }
        }
    }

    /// Bytes from a client reach the server's side of `conn`.
    fn server_input(&mut self, conn: ConnId, bytes: &[u8]) {
        let now = self.world.now();
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let mut data = Bytes::copy_from_slice(bytes);
        if let Some(reader) = c.reader.as_mut() {
            match reader.handle_input(bytes) {
                Ok(UpgradeStatus::Pending) => return,
                Ok(UpgradeStatus::Switched { rest }) => {
                    c.reader = None;
                    data = rest;
                    let client = c.client;
                    self.send_to_client(client, conn, Bytes::from(upgrade_response()));
                }
                Err(_) => return self.close(conn),
            }
        }
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.channel.handle_input(&data).is_err() {
            return self.close(conn);
        }
        let mut messages = Vec::new();
        while let Some(m) = c.channel.poll_message() {
            messages.push(m);
        }
        if !c.connected {
            if let Some(key) = c.channel.remote_static() {
                c.connected = true;
                if let Some(s) = self.server.as_mut() {
                    s.handle_connect(now, conn, key);
                }
            }
        }
        self.flush_server_conn(conn);
        for m in messages {
            match decode::<NodeMessage>(&m) {
                Ok(message) => {
                    if let Some(s) = self.server.as_mut() {
                        s.handle_message(now, conn, message);
                    }
                }
                Err(_) => return self.close(conn),
            }
        }
        self.drain_server();
    }

    fn flush_server_conn(&mut self, conn: ConnId) {
        let mut out = Vec::new();
        let Some(c) = self.conns.get_mut(&conn) else { return };
        while let Some(b) = c.channel.poll_transmit() {
            out.push(b);
        }
        let client = c.client;
        for b in out {
            self.send_to_client(client, conn, b);
        }
    }

    fn send_to_client(&mut self, client: ClientId, conn: ConnId, bytes: Bytes) {
        if self.clients[client.0].partitioned {
            self.lost(conn);
            return;
        }
        let at = self.arrival(conn, false);
        self.queue.schedule(at, Event::ToClient { client, conn, bytes });
    }

    /// A chunk fell into a partition: the stream is broken; TCP gives up later.
    fn lost(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.broken {
                c.broken = true;
                let at = self.world.now() + Duration::from_secs(30);
                self.queue.schedule(at, Event::ServerClosed { conn });
            }
        }
    }

    /// The server closes `conn`: the client learns after the latency.
    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            let client = c.client;
            let at = self.world.now() + self.delay();
            self.queue.schedule(at, Event::ClientClosed { client, conn });
        }
        self.close_server_side(conn);
    }

    fn close_server_side(&mut self, conn: ConnId) {
        let now = self.world.now();
        if self.conns.remove(&conn).is_some() {
            if let Some(s) = self.server.as_mut() {
                s.handle_disconnect(now, conn);
            }
            self.drain_server();
        }
    }

    /// Processes the server's outputs in order: each `Persist` is committed before
    /// anything after it happens.
    fn drain_server(&mut self) {
        while let Some(output) = self.server.as_mut().and_then(ControlServer::poll_output) {
            match output {
                Output::Persist(change) => self.commit(change),
                Output::Send { conn, message } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if c.channel.send_message(&encode(&message)).is_ok() {
                            self.flush_server_conn(conn);
                        }
                    }
                }
                Output::Close { conn, .. } => {
                    self.close(conn);
                }
            }
        }
        self.schedule_server_timer();
    }

    /// The server's next timer, and at least one a second: wall-clock deadlines (key and
    /// approval expiry) are not in `poll_timeout`, so the shell ticks every second and the
    /// simulator does the same.
    fn schedule_server_timer(&mut self) {
        self.server_timer += 1;
        let Some(server) = self.server.as_ref() else { return };
        let tick = self.world.now() + Duration::from_secs(1);
        let at = server.poll_timeout().map_or(tick, |t| t.min(tick)).max(self.world.now());
        let generation = self.server_timer;
        self.queue.schedule(at, Event::ServerTimer { generation });
    }

    fn commit(&mut self, change: Change) {
        self.persisted += 1;
        let db = &mut self.db;
        match change {
            Change::User(u) => {
                db.users.retain(|x| x.id != u.id);
                db.users.push(u);
            }
            Change::UserRemoved(id) => db.users.retain(|x| x.id != id),
            Change::Node(n) => {
                db.nodes.retain(|x| x.id != n.id);
                db.nodes.push(n);
            }
            Change::NodeRemoved(id) => db.nodes.retain(|x| x.id != id),
            Change::AuthKey(k) => {
                db.auth_keys.retain(|x| x.id != k.id);
                db.auth_keys.push(k);
            }
            Change::ApiKey(k) => {
                db.api_keys.retain(|x| x.id != k.id);
                db.api_keys.push(k);
            }
            Change::Approval(a) => {
                db.approvals.retain(|x| (x.src, x.dst, &x.local_user) != (a.src, a.dst, &a.local_user));
                db.approvals.push(a);
            }
            Change::ApprovalRemoved { src, dst, local_user } => {
                db.approvals.retain(|x| (x.src, x.dst, &x.local_user) != (src, dst, &local_user))
            }
            Change::Policy(p) => db.policy = Some(p),
            Change::Audit(_) => {}
        }
    }

    /// Acts on what a client wants and reports.
    fn drain_client(&mut self, id: ClientId) {
        let now = self.world.now();
        loop {
            let c = &mut self.clients[id.0];
            let transmit: Vec<Bytes> = std::iter::from_fn(|| c.client.poll_transmit()).collect();
            let events: Vec<ClientEvent> = std::iter::from_fn(|| c.client.poll_event()).collect();
            if transmit.is_empty() && events.is_empty() {
                break;
            }
            if let Some(conn) = c.conn {
                for bytes in transmit {
                    if self.clients[id.0].partitioned {
                        self.lost(conn);
                        continue;
                    }
                    let at = self.arrival(conn, true);
                    self.queue.schedule(at, Event::ToServer { conn, bytes });
                }
            }
            for event in events {
                self.client_event(id, event);
            }
        }
        let c = &mut self.clients[id.0];
        c.timer += 1;
        let generation = c.timer;
        if let Some(at) = c.client.poll_timeout() {
            self.queue.schedule(at.max(now), Event::ClientTimer { client: id, generation });
        }
    }

    fn client_event(&mut self, id: ClientId, event: ClientEvent) {
        self.clients[id.0].events.push(event.clone());
        match event {
            ClientEvent::Connect => {
                let at = self.world.now() + self.delay() * 2;
                if self.server.is_none() || self.clients[id.0].partitioned {
                    self.queue.schedule(at, Event::Refused { client: id });
                    return;
                }
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                let mut rng = Rng::new(self.rng.gen_bytes());
                let key = PrivateKey::from_bytes(self.server_key);
                match ChannelServer::new(key, &mut rng, ChannelConfig::default()) {
                    Ok(channel) => {
                        self.conns.insert(
                            conn,
                            ServerConn {
                                client: id,
                                reader: Some(RequestReader::new()),
                                channel,
                                connected: false,
                                broken: false,
                            },
                        );
                        self.clients[id.0].conn = Some(conn);
                        self.queue.schedule(at, Event::Connected { client: id, conn });
                    }
                    Err(_) => self.queue.schedule(at, Event::Refused { client: id }),
                }
            }
            ClientEvent::Disconnect { .. } => {
                if let Some(conn) = self.clients[id.0].conn.take() {
                    let at = self.world.now() + self.delay();
                    self.queue.schedule(at, Event::ServerClosed { conn });
                }
            }
            ClientEvent::Registered(r) => {
                if let Some(node) = self.clients[id.0].node {
                    let want = std::net::IpAddr::V4(mesh_addr(node));
                    assert_eq!(
                        r.addresses.first(),
                        Some(&want),
                        "seed {}: node {node} was given another address than the simulator's plan",
                        self.world.seed()
                    );
                }
                self.clients[id.0].registered = Some(r);
            }
            ClientEvent::Rejected { reason } => self.clients[id.0].rejected.push(reason),
            ClientEvent::NetmapChanged => self.apply_netmap(id),
            ClientEvent::LoginNeeded { .. } | ClientEvent::CheckAnswer { .. } => {}
        }
    }

    /// Gives the client's netmap to its world node: peers (by their mesh address) and filter.
    fn apply_netmap(&mut self, id: ClientId) {
        let Some(node) = self.clients[id.0].node else { return };
        let Some(state) = self.clients[id.0].client.netmap() else { return };
        let count = self.world.node_count();
        let peers: Vec<(NodeId, mesh_core::node::NetmapPeer)> = state
            .node_peers()
            .into_iter()
            .filter_map(|p| node_at_mesh(p.mesh_v4).filter(|n| n.0 < count && *n != node).map(|n| (n, p)))
            .collect();
        let filter = state.node_filter();
        if let Err(e) = self.world.set_peers(node, peers) {
            panic!("seed {}: netmap for {node}: {e}", self.world.seed());
        }
        if let Err(e) = self.world.set_filter(node, filter) {
            panic!("seed {}: filter for {node}: {e}", self.world.seed());
        }
    }
}
