//! The coordination server as a state machine: users, nodes, pre-auth keys, the policy and
//! each streaming node's view of the netmap.
//!
//! It never touches a database or a socket. Durable changes are [`Output::Persist`]
//! outputs, emitted *before* the replies that depend on them: the shell drains outputs in
//! order and commits each `Persist` before it sends anything after it (write-ahead), so a
//! node is never told about a change that a crash could lose. [`State`] is what the shell
//! loads back at start.
//!
//! Netmaps: after a change the policy is compiled for the tailnet and each streaming node
//! gets a [`MapDelta`] computed against what it was last sent (peers added, changed,
//! removed; a new filter; new SSH rules), or nothing when nothing it sees changed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::messages::{
    CheckAnswer, CheckRequest, MapDelta, Netmap, NodeMessage, Peer, Register, RegisterAuth, Registered, ServerMessage,
};
use crate::ct;
use crate::policy::{compile, NodeId, NodeInfo, NodeSshRule, Policy, PolicyError};
use crate::rng::Rng;
use crate::time::{Instant, UnixTime};
use crate::wireguard::PublicKey;

/// A user of the tailnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct UserId(pub u64);

/// One control connection, numbered by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserRecord {
    pub id: UserId,
    /// `alice@example.com`: the name policies use.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub machine_key: PublicKey,
    pub node_key: PublicKey,
    pub user: UserId,
    /// Unique DNS label.
    pub name: String,
    pub tags: Vec<String>,
    pub addresses: Vec<IpAddr>,
    pub endpoints: Vec<SocketAddr>,
    pub ssh_host_keys: Vec<String>,
    pub ssh: bool,
    /// Unix seconds; `None`: never (tagged nodes).
    pub key_expiry: Option<u64>,
    pub ephemeral: bool,
}

/// A pre-authentication key. Only the SHA-256 of its secret is kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuthKeyRecord {
    pub id: u64,
    pub user: UserId,
    pub hash: [u8; 32],
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    /// Unix seconds.
    pub expires: u64,
    pub used: bool,
    pub revoked: bool,
}

/// A durable change, for the shell to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    User(UserRecord),
    Node(NodeRecord),
    NodeRemoved(NodeId),
    AuthKey(AuthKeyRecord),
    Policy(String),
}

/// Everything the shell keeps, loaded back at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub users: Vec<UserRecord>,
    pub nodes: Vec<NodeRecord>,
    pub auth_keys: Vec<AuthKeyRecord>,
    /// `None`: the default policy.
    pub policy: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Commit this before acting on any later output.
    Persist(Change),
    Send {
        conn: ConnId,
        message: ServerMessage,
    },
    Close {
        conn: ConnId,
        reason: String,
    },
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub dns_domain: String,
    /// The URL nodes and people reach the server at (login links).
    pub server_url: String,
    /// How long a user's node key is valid (Tailscale and headscale: 180 days).
    pub node_key_lifetime: Duration,
    pub keepalive: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            dns_domain: "mesh.internal".into(),
            server_url: "http://127.0.0.1:8080".into(),
            node_key_lifetime: Duration::from_secs(180 * 86_400),
            keepalive: Duration::from_secs(50),
        }
    }
}

/// Why an admin operation was refused. Nothing changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AdminError {
    #[error("user {0} exists")]
    UserExists(String),
    #[error("no user {0}")]
    NoUser(String),
    #[error("no node {0}")]
    NoNode(u64),
    #[error("no pre-auth key {0}")]
    NoKey(u64),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Invalid(String),
}

/// Options of a new pre-auth key.
#[derive(Clone, Debug, Default)]
pub struct AuthKeyOptions {
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    pub lifetime: Duration,
}

/// A connected node.
#[derive(Debug)]
struct Conn {
    machine_key: PublicKey,
    node: Option<NodeId>,
    /// What the node was last sent, if it streams its map.
    view: Option<View>,
    next_keepalive: Instant,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct View {
    version: u64,
    node: Option<Peer>,
    peers: BTreeMap<NodeId, Peer>,
    filter: Vec<crate::ip::filter::FilterRule>,
    ssh: Vec<NodeSshRule>,
}

/// The coordination server's logic.
#[derive(Debug)]
pub struct ControlServer {
    config: ServerConfig,
    rng: Rng,
    users: BTreeMap<UserId, UserRecord>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    keys: BTreeMap<u64, AuthKeyRecord>,
    policy: Policy,
    policy_text: Option<String>,
    conns: BTreeMap<ConnId, Conn>,
    /// Nodes with a live connection.
    online: BTreeSet<NodeId>,
    /// The compiled view of every node, by id (recomputed after each change).
    compiled: BTreeMap<NodeId, Compiled>,
    next_node: u64,
    next_user: u64,
    next_key: u64,
    unix: u64,
    out: VecDeque<Output>,
}

#[derive(Clone, Debug)]
struct Compiled {
    peers: Vec<NodeId>,
    filter: Vec<crate::ip::filter::FilterRule>,
    ssh: Vec<NodeSshRule>,
}

/// The CGNAT range nodes get IPv4 addresses from, and the ULA /48 of IPv6 addresses.
const V4_BASE: u32 = 0x6440_0000; // 100.64.0.0/10
const V4_SIZE: u32 = 1 << 22;
const V6_BASE: u128 = 0xfd7a_115c_a1e0_0000_0000_0000_0000_0000;

impl ControlServer {
    /// A server over `state`; `seed` is 32 bytes from the OS (or the simulator).
    pub fn new(config: ServerConfig, seed: [u8; 32], state: State, now: UnixTime) -> Result<Self, PolicyError> {
        let policy = match &state.policy {
            Some(text) => Policy::parse("policy", text)?,
            None => Policy::default_policy(),
        };
        let mut server = Self {
            config,
            rng: Rng::new(seed),
            next_node: state.nodes.iter().map(|n| n.id.0).max().unwrap_or(0) + 1,
            next_user: state.users.iter().map(|u| u.id.0).max().unwrap_or(0) + 1,
            next_key: state.auth_keys.iter().map(|k| k.id).max().unwrap_or(0) + 1,
            users: state.users.into_iter().map(|u| (u.id, u)).collect(),
            nodes: state.nodes.into_iter().map(|n| (n.id, n)).collect(),
            keys: state.auth_keys.into_iter().map(|k| (k.id, k)).collect(),
            policy,
            policy_text: state.policy,
            conns: BTreeMap::new(),
            online: BTreeSet::new(),
            compiled: BTreeMap::new(),
            unix: now.0.as_secs(),
            out: VecDeque::new(),
        };
        server.recompile();
        Ok(server)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns.values().filter(|c| c.view.is_some()).map(|c| c.next_keepalive).min()
    }

    /// Keepalives for quiet streams; nodes whose key expired leave their peers' maps.
    pub fn handle_timeout(&mut self, now: Instant, unix: UnixTime) {
        let ids: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| c.view.is_some() && c.next_keepalive <= now).map(|(id, _)| *id).collect();
        for id in ids {
            self.send(now, id, ServerMessage::KeepAlive);
        }
        let before = self.unix;
        self.unix = unix.0.as_secs();
        let expired = self.nodes.values().any(|n| n.key_expiry.is_some_and(|e| before < e && e <= self.unix));
        if expired {
            self.changed(now);
        }
    }

    // ---- connections -------------------------------------------------------------------

    /// A node finished the secure channel's handshake with this machine key.
    pub fn handle_connect(&mut self, now: Instant, conn: ConnId, machine_key: PublicKey) {
        let node = self.nodes.values().find(|n| n.machine_key == machine_key).map(|n| n.id);
        self.conns.insert(conn, Conn { machine_key, node, view: None, next_keepalive: now });
    }

    pub fn handle_disconnect(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else { return };
        let Some(node) = c.node else { return };
        if self.conns.values().any(|o| o.node == Some(node) && o.view.is_some()) {
            return;
        }
        self.online.remove(&node);
        if self.nodes.get(&node).is_some_and(|n| n.ephemeral) {
            self.remove_node(node);
        }
        self.changed(now);
    }

    pub fn handle_message(&mut self, now: Instant, conn: ConnId, message: NodeMessage) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        match message {
            NodeMessage::Register(r) => self.register(now, conn, r),
            NodeMessage::Map { endpoints } => self.start_map(now, conn, endpoints),
            NodeMessage::Endpoints(endpoints) => {
                if let Some(node) = self.conn_node(conn) {
                    self.set_endpoints(node, endpoints);
                    self.changed(now);
                }
            }
            NodeMessage::Check(request) => self.check(now, conn, request),
            NodeMessage::RotateKey { node_key } => self.rotate(now, conn, node_key),
            NodeMessage::Logout => {
                if let Some(node) = self.conn_node(conn) {
                    self.remove_node(node);
                    self.changed(now);
                    self.out.push_back(Output::Close { conn, reason: "logged out".into() });
                }
            }
        }
    }

    fn conn_node(&self, conn: ConnId) -> Option<NodeId> {
        self.conns.get(&conn).and_then(|c| c.node)
    }

    fn send(&mut self, now: Instant, conn: ConnId, message: ServerMessage) {
        let jitter = Duration::from_millis(self.rng.below(5_000));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.next_keepalive = now + self.config.keepalive + jitter;
        }
        self.out.push_back(Output::Send { conn, message });
    }

    fn reject(&mut self, now: Instant, conn: ConnId, reason: impl Into<String>) {
        self.send(now, conn, ServerMessage::Rejected { reason: reason.into() });
    }

    // ---- registration ------------------------------------------------------------------

    fn register(&mut self, now: Instant, conn: ConnId, r: Register) {
        let Some(machine_key) = self.conns.get(&conn).map(|c| c.machine_key) else { return };
        if let Some(id) = self.conn_node(conn) {
            match self.nodes.get(&id) {
                Some(n) if n.node_key == r.node_key => {
                    let registered = self.registered(id);
                    self.send(now, conn, registered);
                }
                _ => self.reject(now, conn, "this machine is registered with another node key; rotate it instead"),
            }
            return;
        }
        if self.nodes.values().any(|n| n.node_key == r.node_key) {
            return self.reject(now, conn, "this node key belongs to another node");
        }
        let key = match &r.auth {
            RegisterAuth::AuthKey(secret) => match self.redeem(secret) {
                Ok(key) => key,
                Err(why) => return self.reject(now, conn, why),
            },
            RegisterAuth::Interactive | RegisterAuth::Known => {
                return self.reject(now, conn, "an auth key is required (interactive login is not available yet)")
            }
        };
        let user = key.user;
        let user_name = self.users.get(&user).map(|u| u.name.clone()).unwrap_or_default();
        let tags = if key.tags.is_empty() { r.requested_tags.clone() } else { key.tags.clone() };
        let mut tags: Vec<String> = tags;
        tags.sort();
        tags.dedup();
        if key.tags.is_empty() {
            if let Some(t) = tags.iter().find(|t| !self.policy.may_own_tag(t, &user_name, &[])) {
                return self.reject(now, conn, format!("{user_name} may not assign {t} (tagOwners)"));
            }
        }
        let Some(addresses) = self.allocate() else {
            return self.reject(now, conn, "the tailnet has no free addresses");
        };
        if !key.reusable {
            let mut used = key.clone();
            used.used = true;
            self.keys.insert(used.id, used.clone());
            self.out.push_back(Output::Persist(Change::AuthKey(used)));
        }
        let id = NodeId(self.next_node);
        self.next_node += 1;
        let lifetime = self.config.node_key_lifetime.as_secs();
        let node = NodeRecord {
            id,
            machine_key,
            node_key: r.node_key,
            user,
            name: self.unique_name(&r.hostname),
            key_expiry: tags.is_empty().then(|| self.unix.saturating_add(lifetime)),
            tags,
            addresses,
            endpoints: Vec::new(),
            ssh_host_keys: r.ssh_host_keys.into_iter().take(8).collect(),
            ssh: r.ssh,
            ephemeral: key.ephemeral,
        };
        self.nodes.insert(id, node.clone());
        self.out.push_back(Output::Persist(Change::Node(node)));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.node = Some(id);
        }
        let registered = self.registered(id);
        self.send(now, conn, registered);
        self.changed(now);
    }

    /// Checks a pre-auth key's secret (`mskey-<id>-<hex>`), in constant time.
    fn redeem(&self, secret: &str) -> Result<AuthKeyRecord, &'static str> {
        let (id, hex) = parse_auth_key(secret).ok_or("malformed auth key")?;
        let key = self.keys.get(&id).ok_or("unknown auth key")?;
        let hash: [u8; 32] = Sha256::digest(hex.as_bytes()).into();
        if !ct::eq(&hash, &key.hash) {
            return Err("unknown auth key");
        }
        if key.revoked {
            return Err("the auth key was revoked");
        }
        if key.expires <= self.unix {
            return Err("the auth key has expired");
        }
        if key.used && !key.reusable {
            return Err("the auth key was already used");
        }
        if !self.users.contains_key(&key.user) {
            return Err("the auth key's user no longer exists");
        }
        Ok(key.clone())
    }

    fn registered(&self, id: NodeId) -> ServerMessage {
        match self.nodes.get(&id) {
            Some(n) => ServerMessage::Registered(Registered {
                node: n.id,
                name: n.name.clone(),
                user: self.users.get(&n.user).map(|u| u.name.clone()).unwrap_or_default(),
                addresses: n.addresses.clone(),
                key_expiry: n.key_expiry,
            }),
            None => ServerMessage::Rejected { reason: "no such node".into() },
        }
    }

    /// The lowest free IPv4 address of 100.64.0.0/10 and its IPv6 twin in the ULA /48.
    fn allocate(&self) -> Option<Vec<IpAddr>> {
        let used: BTreeSet<IpAddr> = self.nodes.values().flat_map(|n| n.addresses.iter().copied()).collect();
        (1..V4_SIZE - 1).find_map(|offset| {
            let v4 = IpAddr::V4(Ipv4Addr::from(V4_BASE + offset));
            let v6 = IpAddr::V6(Ipv6Addr::from(V6_BASE + u128::from(offset)));
            (!used.contains(&v4) && !used.contains(&v6)).then(|| vec![v4, v6])
        })
    }

    /// A DNS label from a hostname, made unique with `-2`, `-3`, ...
    fn unique_name(&self, hostname: &str) -> String {
        let mut base: String = hostname
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .take(48)
            .collect();
        base = base.trim_matches('-').to_string();
        if base.is_empty() {
            base = "node".into();
        }
        let taken = |name: &str| self.nodes.values().any(|n| n.name == name);
        if !taken(&base) {
            return base;
        }
        (2u32..).map(|i| format!("{base}-{i}")).find(|n| !taken(n)).unwrap_or(base)
    }

    fn rotate(&mut self, now: Instant, conn: ConnId, node_key: PublicKey) {
        let Some(id) = self.conn_node(conn) else { return self.reject(now, conn, "not registered") };
        if self.nodes.values().any(|n| n.node_key == node_key && n.id != id) {
            return self.reject(now, conn, "this node key belongs to another node");
        }
        let lifetime = self.config.node_key_lifetime.as_secs();
        let unix = self.unix;
        if let Some(n) = self.nodes.get_mut(&id) {
            n.node_key = node_key;
            if n.tags.is_empty() {
                n.key_expiry = Some(unix.saturating_add(lifetime));
            }
            let record = n.clone();
            self.out.push_back(Output::Persist(Change::Node(record)));
        }
        let registered = self.registered(id);
        self.send(now, conn, registered);
        self.changed(now);
    }

    fn set_endpoints(&mut self, node: NodeId, mut endpoints: Vec<SocketAddr>) {
        endpoints.truncate(16);
        if let Some(n) = self.nodes.get_mut(&node) {
            if n.endpoints != endpoints {
                n.endpoints = endpoints;
                let record = n.clone();
                self.out.push_back(Output::Persist(Change::Node(record)));
            }
        }
    }

    // ---- the map stream ----------------------------------------------------------------

    fn start_map(&mut self, now: Instant, conn: ConnId, endpoints: Vec<SocketAddr>) {
        let Some(node) = self.conn_node(conn) else { return self.reject(now, conn, "register first") };
        if self.expired(node) {
            return self.reject(now, conn, "the node key has expired; log in again");
        }
        self.set_endpoints(node, endpoints);
        self.online.insert(node);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.view = Some(View::default());
        }
        self.changed(now);
    }

    fn expired(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.key_expiry.is_some_and(|e| e <= self.unix))
    }

    fn peer(&self, n: &NodeRecord) -> Peer {
        Peer {
            id: n.id,
            name: n.name.clone(),
            user: self.users.get(&n.user).map(|u| u.name.clone()).unwrap_or_default(),
            tags: n.tags.clone(),
            node_key: n.node_key,
            addresses: n.addresses.clone(),
            routes: Vec::new(),
            endpoints: n.endpoints.clone(),
            ssh_host_keys: if n.ssh { n.ssh_host_keys.clone() } else { Vec::new() },
            key_expiry: n.key_expiry,
            online: self.online.contains(&n.id),
        }
    }

    /// Compiles the policy for every node whose key is valid.
    fn recompile(&mut self) {
        let live: Vec<&NodeRecord> = self.nodes.values().filter(|n| !self.expired(n.id)).collect();
        let inventory: Vec<NodeInfo> = live
            .iter()
            .map(|n| NodeInfo {
                id: n.id,
                name: n.name.clone(),
                user: self.users.get(&n.user).map(|u| u.name.clone()).unwrap_or_default(),
                tags: n.tags.clone(),
                addresses: n.addresses.clone(),
                routes: Vec::new(),
            })
            .collect();
        let compiled = compile(&self.policy, &inventory);
        self.compiled = inventory
            .iter()
            .zip(compiled.nodes)
            .map(|(info, p)| {
                let peers = p.peers().into_iter().map(|i| inventory[i].id).collect();
                (info.id, Compiled { peers, filter: p.filter, ssh: p.ssh })
            })
            .collect();
    }

    /// After any change: recompile and send each streaming node what it does not have.
    fn changed(&mut self, now: Instant) {
        self.recompile();
        let conns: Vec<ConnId> = self.conns.iter().filter(|(_, c)| c.view.is_some()).map(|(id, _)| *id).collect();
        for conn in conns {
            let Some(node) = self.conn_node(conn) else { continue };
            let fresh = self.view_of(node);
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            let Some(old) = c.view.take() else { continue };
            let version = old.version + 1;
            let message = if old.node.is_none() {
                fresh.node.clone().map(|me| {
                    ServerMessage::Map(Netmap {
                        version,
                        node: me,
                        peers: fresh.peers.values().cloned().collect(),
                        filter: fresh.filter.clone(),
                        ssh: fresh.ssh.clone(),
                        dns_domain: self.config.dns_domain.clone(),
                    })
                })
            } else {
                let delta = delta(&old, &fresh, version);
                (!delta.is_empty()).then_some(ServerMessage::Delta(delta))
            };
            let sent = message.is_some();
            if let Some(c) = self.conns.get_mut(&conn) {
                c.view = Some(View { version: if sent { version } else { old.version }, ..fresh });
            }
            if let Some(m) = message {
                self.send(now, conn, m);
            }
        }
    }

    fn view_of(&self, node: NodeId) -> View {
        let Some(record) = self.nodes.get(&node) else { return View::default() };
        let Some(c) = self.compiled.get(&node) else {
            // Expired: itself only, no peers, deny everything.
            return View { node: Some(self.peer(record)), ..View::default() };
        };
        View {
            version: 0,
            node: Some(self.peer(record)),
            peers: c.peers.iter().filter_map(|id| self.nodes.get(id)).map(|n| (n.id, self.peer(n))).collect(),
            filter: c.filter.clone(),
            ssh: c.ssh.clone(),
        }
    }

    fn remove_node(&mut self, id: NodeId) {
        if self.nodes.remove(&id).is_some() {
            self.online.remove(&id);
            self.out.push_back(Output::Persist(Change::NodeRemoved(id)));
            for (conn, c) in &mut self.conns {
                if c.node == Some(id) {
                    c.node = None;
                    c.view = None;
                    self.out.push_back(Output::Close { conn: *conn, reason: "the node was removed".into() });
                }
            }
        }
    }

    // ---- check mode ----------------------------------------------------------------------

    fn check(&mut self, now: Instant, conn: ConnId, request: CheckRequest) {
        let answer = match self.nodes.get(&request.src) {
            None => CheckAnswer::Rejected { reason: "unknown source node".into() },
            Some(n) if !n.tags.is_empty() => {
                CheckAnswer::Rejected { reason: "tagged nodes cannot pass check mode: no person is behind them".into() }
            }
            Some(_) => CheckAnswer::Rejected { reason: "check approval is not available on this server yet".into() },
        };
        self.send(now, conn, ServerMessage::CheckAnswer { id: request.id, answer });
    }

    // ---- administration ------------------------------------------------------------------

    pub fn create_user(&mut self, name: &str) -> Result<UserId, AdminError> {
        crate::policy::alias::check_user_name(name).map_err(AdminError::Invalid)?;
        if self.users.values().any(|u| u.name == name) {
            return Err(AdminError::UserExists(name.into()));
        }
        let id = UserId(self.next_user);
        self.next_user += 1;
        let record = UserRecord { id, name: name.into() };
        self.users.insert(id, record.clone());
        self.out.push_back(Output::Persist(Change::User(record)));
        Ok(id)
    }

    pub fn user_id(&self, name: &str) -> Option<UserId> {
        self.users.values().find(|u| u.name == name).map(|u| u.id)
    }

    /// A new pre-auth key; the secret is returned once and only its hash is kept.
    pub fn create_auth_key(&mut self, user: &str, options: AuthKeyOptions) -> Result<(u64, String), AdminError> {
        let user_id = self.user_id(user).ok_or_else(|| AdminError::NoUser(user.into()))?;
        for t in &options.tags {
            if !self.policy.tag_owners.contains_key(t) {
                return Err(AdminError::Invalid(format!("{t} is not defined in the policy's tagOwners")));
            }
        }
        let id = self.next_key;
        self.next_key += 1;
        let hex: String = self.rng.gen_bytes::<24>().iter().map(|b| format!("{b:02x}")).collect();
        let record = AuthKeyRecord {
            id,
            user: user_id,
            hash: Sha256::digest(hex.as_bytes()).into(),
            reusable: options.reusable,
            ephemeral: options.ephemeral,
            tags: options.tags,
            expires: self.unix.saturating_add(options.lifetime.as_secs()),
            used: false,
            revoked: false,
        };
        self.keys.insert(id, record.clone());
        self.out.push_back(Output::Persist(Change::AuthKey(record)));
        Ok((id, format!("mskey-{id}-{hex}")))
    }

    pub fn revoke_auth_key(&mut self, id: u64) -> Result<(), AdminError> {
        let key = self.keys.get_mut(&id).ok_or(AdminError::NoKey(id))?;
        key.revoked = true;
        let record = key.clone();
        self.out.push_back(Output::Persist(Change::AuthKey(record)));
        Ok(())
    }

    /// Replaces the policy; a policy that fails to parse or fails its tests changes nothing.
    pub fn set_policy(&mut self, now: Instant, text: &str) -> Result<(), AdminError> {
        let policy = Policy::parse("policy", text)?;
        self.policy = policy;
        self.policy_text = Some(text.to_string());
        self.out.push_back(Output::Persist(Change::Policy(text.to_string())));
        self.changed(now);
        Ok(())
    }

    pub fn policy_text(&self) -> Option<&str> {
        self.policy_text.as_deref()
    }

    pub fn delete_node(&mut self, now: Instant, id: NodeId) -> Result<(), AdminError> {
        if !self.nodes.contains_key(&id) {
            return Err(AdminError::NoNode(id.0));
        }
        self.remove_node(id);
        self.changed(now);
        Ok(())
    }

    /// Expires a node's key now: it leaves every peer's map and must log in again.
    pub fn expire_node(&mut self, now: Instant, id: NodeId) -> Result<(), AdminError> {
        let unix = self.unix;
        let node = self.nodes.get_mut(&id).ok_or(AdminError::NoNode(id.0))?;
        node.key_expiry = Some(unix);
        let record = node.clone();
        self.out.push_back(Output::Persist(Change::Node(record)));
        self.changed(now);
        Ok(())
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    pub fn users(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values()
    }

    pub fn auth_keys(&self) -> impl Iterator<Item = &AuthKeyRecord> {
        self.keys.values()
    }

    pub fn is_online(&self, id: NodeId) -> bool {
        self.online.contains(&id)
    }
}

/// `mskey-<id>-<secret>` -> (id, secret).
fn parse_auth_key(text: &str) -> Option<(u64, &str)> {
    let rest = text.strip_prefix("mskey-")?;
    let (id, secret) = rest.split_once('-')?;
    let good = !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()) && secret.len() == 48;
    good.then(|| id.parse().ok().map(|id| (id, secret))).flatten()
}

/// What `fresh` has that `old` does not.
fn delta(old: &View, fresh: &View, version: u64) -> MapDelta {
    let upsert = fresh.peers.iter().filter(|(id, p)| old.peers.get(id) != Some(p)).map(|(_, p)| p.clone()).collect();
    let remove = old.peers.keys().filter(|id| !fresh.peers.contains_key(id)).copied().collect();
    MapDelta {
        version,
        upsert,
        remove,
        filter: (old.filter != fresh.filter).then(|| fresh.filter.clone()),
        ssh: (old.ssh != fresh.ssh).then(|| fresh.ssh.clone()),
        node: (old.node != fresh.node).then(|| fresh.node.clone()).flatten(),
    }
}
