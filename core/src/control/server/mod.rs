//! The coordination server as a state machine: users, nodes, pre-auth keys, the policy and
//! each streaming node's view of the netmap.
//!
//! It never touches a database or a socket. Durable changes are [`Output::Persist`]
//! outputs, emitted *before* the replies that depend on them: the shell drains outputs in
//! order and commits each `Persist` before it sends anything after it (write-ahead), so a
//! node is never told about a change that a crash could lose. [`State`] is what the shell
//! loads back at start.
//!
//! Netmaps: the policy is compiled for the tailnet once and then kept up to date one node
//! at a time; after a change, each streaming node the change matters to gets a
//! [`MapDelta`] computed against what it was last sent (peers added, changed, removed; a
//! new filter; new SSH rules). Nodes it does not matter to are not looked at.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod admin;
mod check;
mod index;
mod netmap;
mod records;
mod ssh_audit;
mod tokens;

pub use records::*;
pub use ssh_audit::clean as audit_text;

use sha2::{Digest, Sha256};

use super::messages::{
    CheckAnswer, CheckRequest, NodeMessage, Peer, Register, RegisterAuth, Registered, ServerMessage,
};
use crate::ct;
use crate::policy::{NodeId, NodeSet, NodeSshRule, Policy, PolicyError, Tailnet};
use crate::rng::Rng;
use crate::time::{Instant, UnixTime};
use crate::wireguard::PublicKey;

/// A connected node.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) machine_key: PublicKey,
    pub(super) node: Option<NodeId>,
    /// What it may still report to the audit log this minute.
    pub(super) audit: ssh_audit::AuditBudget,
}

/// A node's map stream: the one connection it streams on (a newer one replaces it).
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) conn: ConnId,
    /// What the node was last sent.
    pub(super) view: View,
    pub(super) next_keepalive: Instant,
}

/// What a streaming node was last sent.
#[derive(Clone, Debug, Default)]
pub(super) struct View {
    pub(super) version: u64,
    /// Whether its full map went out.
    pub(super) started: bool,
    pub(super) seen: Arc<NodeSet>,
    pub(super) filter: Arc<Vec<crate::ip::filter::FilterRule>>,
    pub(super) ssh: Arc<Vec<NodeSshRule>>,
}

/// The coordination server's logic.
#[derive(Debug)]
pub struct ControlServer {
    pub(super) config: ServerConfig,
    pub(super) rng: Rng,
    pub(super) users: BTreeMap<UserId, UserRecord>,
    pub(super) nodes: BTreeMap<NodeId, NodeRecord>,
    pub(super) keys: BTreeMap<u64, AuthKeyRecord>,
    pub(super) policy: Arc<Policy>,
    pub(super) policy_text: Option<String>,
    pub(super) conns: BTreeMap<ConnId, Conn>,
    /// Nodes with a live connection.
    pub(super) online: BTreeSet<NodeId>,
    /// When each node was last connected (unix seconds; since this server started: it is
    /// not persisted, as Tailscale's "last seen" it is for people, not decisions).
    pub(super) last_seen: BTreeMap<NodeId, u64>,
    /// Registered nodes by key, name and address.
    pub(super) index: index::NodeIndex,
    /// Map streams by node slot (see `netmap::slot`).
    pub(super) streams: Vec<Option<Stream>>,
    /// Connections per registered node.
    pub(super) node_conns: netmap::NodeConns,
    /// The policy compiled for every node whose key is valid (slot = node id).
    pub(super) tailnet: Tailnet,
    /// What a node outside the compiled tailnet gets (shared, so views compare by pointer).
    pub(super) empty: EmptyView,
    /// Each node's map entry, shared, by slot (see `netmap::slot`).
    pub(super) peer_cache: Vec<Option<Arc<Peer>>>,
    /// Counters for metrics.
    pub(super) compiles: u64,
    pub(super) maps_sent: u64,
    pub(super) api_keys: BTreeMap<u64, ApiKeyRecord>,
    /// Check-mode approvals by (source node, destination node, local user).
    pub(super) approvals: BTreeMap<(NodeId, NodeId, String), ApprovalRecord>,
    /// Interactive registrations waiting for a login, by URL token.
    pub(super) pending_logins: tokens::TokenMap<PendingLogin>,
    /// SSH logins held for a check, by URL token.
    pub(super) pending_checks: tokens::TokenMap<PendingCheck>,
    /// Ephemeral nodes without a stream, and since when; removed after
    /// [`EPHEMERAL_GRACE`]. Every ephemeral node starts here when the server starts.
    pub(super) ephemeral_offline: BTreeMap<NodeId, Instant>,
    /// Ephemeral nodes loaded at start, given their grace at the first input with a time.
    pub(super) ephemeral_start: Vec<NodeId>,
    pub(super) next_api_key: u64,
    pub(super) next_node: u64,
    pub(super) next_user: u64,
    pub(super) next_key: u64,
    pub(super) unix: u64,
    pub(super) out: VecDeque<Output>,
}

/// Visibility, filter and SSH rules of a node outside the compiled tailnet.
pub(super) type EmptyView = (Arc<NodeSet>, Arc<Vec<crate::ip::filter::FilterRule>>, Arc<Vec<NodeSshRule>>);

/// When a stream that was just sent something next needs a keepalive.
pub(super) fn keepalive_deadline(config: &ServerConfig, rng: &mut Rng, now: Instant) -> Instant {
    now + config.keepalive + Duration::from_millis(rng.below(5_000))
}

/// An interactive registration waiting for its user to log in.
#[derive(Clone, Debug)]
pub(super) struct PendingLogin {
    pub(super) conn: ConnId,
    pub(super) machine_key: PublicKey,
    pub(super) request: Register,
    pub(super) expires: Instant,
}

/// An SSH login held on a node until someone approves it.
#[derive(Clone, Debug)]
pub(super) struct PendingCheck {
    pub(super) conn: ConnId,
    pub(super) request: CheckRequest,
    pub(super) dst: NodeId,
    pub(super) fingerprint: String,
    pub(super) always: bool,
    pub(super) period: u64,
    pub(super) expires: Instant,
}

/// How long an ephemeral node may stay offline before it is removed (headscale's
/// default inactivity timeout), so a reconnect or a server restart does not lose it.
pub(super) const EPHEMERAL_GRACE: Duration = Duration::from_secs(30 * 60);

/// Interactive registrations waiting at once, and SSH logins held per destination node.
pub(super) const MAX_PENDING_LOGINS: usize = 1024;
pub(super) const MAX_HOLDS_PER_NODE: usize = 64;

/// How long a login link works.
pub(super) const PENDING_LOGIN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How long a node holds a check-mode login (DESIGN.md).
pub(super) const CHECK_HOLD: Duration = Duration::from_secs(30 * 60);

impl ControlServer {
    /// A server over `state`; `seed` is 32 bytes from the OS (or the simulator).
    pub fn new(config: ServerConfig, seed: [u8; 32], state: State, now: UnixTime) -> Result<Self, PolicyError> {
        let policy = Arc::new(match &state.policy {
            Some(text) => Policy::parse("policy", text)?,
            None => Policy::default_policy(),
        });
        let mut server = Self {
            config,
            rng: Rng::new(seed),
            next_node: state.nodes.iter().map(|n| n.id.0).max().unwrap_or(0) + 1,
            next_user: state.users.iter().map(|u| u.id.0).max().unwrap_or(0) + 1,
            next_key: state.auth_keys.iter().map(|k| k.id).max().unwrap_or(0) + 1,
            next_api_key: state.api_keys.iter().map(|k| k.id).max().unwrap_or(0) + 1,
            api_keys: state.api_keys.into_iter().map(|k| (k.id, k)).collect(),
            approvals: state.approvals.into_iter().map(|a| ((a.src, a.dst, a.local_user.clone()), a)).collect(),
            pending_logins: tokens::TokenMap::default(),
            pending_checks: tokens::TokenMap::default(),
            ephemeral_offline: BTreeMap::new(),
            ephemeral_start: Vec::new(),
            users: state.users.into_iter().map(|u| (u.id, u)).collect(),
            nodes: state.nodes.into_iter().map(|n| (n.id, n)).collect(),
            keys: state.auth_keys.into_iter().map(|k| (k.id, k)).collect(),
            tailnet: Tailnet::new(policy.clone(), Vec::new()),
            index: index::NodeIndex::default(),
            policy,
            policy_text: state.policy,
            conns: BTreeMap::new(),
            node_conns: BTreeMap::new(),
            streams: Vec::new(),
            online: BTreeSet::new(),
            last_seen: BTreeMap::new(),
            empty: Default::default(),
            peer_cache: Vec::new(),
            compiles: 0,
            maps_sent: 0,
            unix: now.0.as_secs(),
            out: VecDeque::new(),
        };
        for n in server.nodes.values() {
            server.index.add(n);
        }
        server.recompile();
        // Ephemeral nodes are offline until they stream again; the grace starts at the
        // first timer (the constructor has no monotonic time).
        server.ephemeral_start = server.nodes.values().filter(|n| n.ephemeral).map(|n| n.id).collect();
        Ok(server)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let keepalives = self.streams.iter().flatten().map(|s| s.next_keepalive);
        let logins = self.pending_logins.values().map(|p| p.expires);
        let checks = self.pending_checks.values().map(|p| p.expires);
        let ephemeral = self.ephemeral_offline.values().map(|t| *t + EPHEMERAL_GRACE);
        let start = (!self.ephemeral_start.is_empty()).then_some(Instant::from_micros(0));
        keepalives.chain(logins).chain(checks).chain(ephemeral).chain(start).min()
    }

    /// Keepalives for quiet streams; nodes whose key expired leave their peers' maps.
    pub fn handle_timeout(&mut self, now: Instant, unix: UnixTime) {
        let ids: Vec<ConnId> =
            self.streams.iter().flatten().filter(|s| s.next_keepalive <= now).map(|s| s.conn).collect();
        for id in ids {
            self.send(now, id, ServerMessage::KeepAlive);
        }
        self.pending_logins.retain(|_, p| p.expires > now);
        for id in std::mem::take(&mut self.ephemeral_start) {
            if !self.online.contains(&id) {
                self.ephemeral_offline.entry(id).or_insert(now);
            }
        }
        let stale: Vec<NodeId> =
            self.ephemeral_offline.iter().filter(|(_, t)| **t + EPHEMERAL_GRACE <= now).map(|(id, _)| *id).collect();
        if !stale.is_empty() {
            for &id in &stale {
                self.ephemeral_offline.remove(&id);
                self.remove_node(id);
                self.audit("server", "node-delete", format!("ephemeral node {} offline for 30 minutes", id.0));
            }
            self.nodes_changed(now, &stale);
        }
        let expired: Vec<String> =
            self.pending_checks.iter().filter(|(_, p)| p.expires <= now).map(|(t, _)| t.clone()).collect();
        for token in expired {
            self.answer_check(
                now,
                &token,
                CheckAnswer::Rejected { reason: "the check was not approved in time".into() },
            );
        }
        let before = self.unix;
        self.unix = unix.0.as_secs();
        let expired: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.key_expiry.is_some_and(|e| before < e && e <= self.unix))
            .map(|n| n.id)
            .collect();
        if !expired.is_empty() {
            self.nodes_changed(now, &expired);
        }
    }

    // ---- connections -------------------------------------------------------------------

    /// A node finished the secure channel's handshake with this machine key.
    pub fn handle_connect(&mut self, _now: Instant, conn: ConnId, machine_key: PublicKey) {
        let node = self.index.by_machine_key(&machine_key);
        if let Some(old) = self.conns.insert(conn, Conn { machine_key, node, audit: Default::default() }) {
            self.forget_conn(conn, old.node);
        }
        if let Some(node) = node {
            self.node_conns.entry(node).or_default().insert(conn);
        }
    }

    /// Drops `conn` from its node's connections.
    fn forget_conn(&mut self, conn: ConnId, node: Option<NodeId>) {
        let Some(node) = node else { return };
        if let Some(conns) = self.node_conns.get_mut(&node) {
            conns.remove(&conn);
            if conns.is_empty() {
                self.node_conns.remove(&node);
            }
        }
    }

    pub fn handle_disconnect(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else { return };
        self.forget_conn(conn, c.node);
        let Some(node) = c.node else { return };
        // Only the end of its stream takes a node offline (an older, replaced connection
        // closing does not).
        if self.stream_mut(node).is_none_or(|s| s.conn != conn) {
            return;
        }
        if let Some(s) = netmap::slot(node).and_then(|s| self.streams.get_mut(s)) {
            *s = None;
        }
        self.online.remove(&node);
        self.last_seen.insert(node, self.unix);
        if self.nodes.get(&node).is_some_and(|n| n.ephemeral) {
            self.ephemeral_offline.insert(node, now);
        }
        self.nodes_changed(now, &[node]);
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
                    self.nodes_changed(now, &[node]);
                }
            }
            NodeMessage::Check(request) => self.check(now, conn, request),
            NodeMessage::RotateKey { node_key } => self.rotate(now, conn, node_key),
            NodeMessage::SshAudit(report) => self.ssh_audit(now, conn, report),
            NodeMessage::Logout => {
                if let Some(node) = self.conn_node(conn) {
                    self.remove_node(node);
                    self.nodes_changed(now, &[node]);
                    self.out.push_back(Output::Close { conn, reason: "logged out".into() });
                }
            }
        }
    }

    pub(super) fn conn_node(&self, conn: ConnId) -> Option<NodeId> {
        self.conns.get(&conn).and_then(|c| c.node)
    }

    pub(super) fn send(&mut self, now: Instant, conn: ConnId, message: ServerMessage) {
        let deadline = keepalive_deadline(&self.config, &mut self.rng, now);
        if let Some(node) = self.conn_node(conn) {
            if let Some(stream) = self.stream_mut(node).filter(|s| s.conn == conn) {
                stream.next_keepalive = deadline;
            }
        }
        self.out.push_back(Output::Send { conn, message });
    }

    /// Node `node`'s map stream.
    pub(super) fn stream_mut(&mut self, node: NodeId) -> Option<&mut Stream> {
        netmap::slot(node).and_then(|s| self.streams.get_mut(s)).and_then(Option::as_mut)
    }

    pub(super) fn reject(&mut self, now: Instant, conn: ConnId, reason: impl Into<String>) {
        self.send(now, conn, ServerMessage::Rejected { reason: reason.into() });
    }

    // ---- registration ------------------------------------------------------------------

    pub(super) fn register(&mut self, now: Instant, conn: ConnId, r: Register) {
        let Some(machine_key) = self.conns.get(&conn).map(|c| c.machine_key) else { return };
        if let Err(why) = check_register(&r) {
            return self.reject(now, conn, why);
        }
        if let Some(id) = self.conn_node(conn) {
            match self.nodes.get_mut(&id) {
                Some(n) if n.node_key == r.node_key => {
                    // What the node says about itself may change between logins (`up
                    // --ssh`); what the admin decides (name, tags, user) does not.
                    let host_keys: Vec<String> = r.ssh_host_keys.into_iter().take(MAX_HOST_KEYS).collect();
                    if n.ssh != r.ssh || n.ssh_host_keys != host_keys {
                        n.ssh = r.ssh;
                        n.ssh_host_keys = host_keys;
                        self.out.push_back(Output::Persist(Change::Node(n.clone())));
                        self.nodes_changed(now, &[id]);
                    }
                    let registered = self.registered(id);
                    self.send(now, conn, registered);
                }
                _ => self.reject(now, conn, "this machine is registered with another node key; rotate it instead"),
            }
            return;
        }
        if self.index.by_node_key(&r.node_key).is_some() {
            return self.reject(now, conn, "this node key belongs to another node");
        }
        if self.index.by_machine_key(&machine_key).is_some() {
            return self.reject(now, conn, "this machine is registered already; reconnect");
        }
        match &r.auth {
            RegisterAuth::AuthKey(secret) => match self.redeem(secret) {
                Ok(key) => {
                    let tags = if key.tags.is_empty() { r.requested_tags.clone() } else { key.tags.clone() };
                    let checked = !key.tags.is_empty();
                    let (user, reusable, ephemeral) = (key.user, key.reusable, key.ephemeral);
                    if let Err(why) = self.check_tags(user, &tags, checked) {
                        return self.reject(now, conn, why);
                    }
                    if self.index.free_addresses().is_none() {
                        return self.reject(now, conn, "the tailnet has no free addresses");
                    }
                    if !reusable {
                        let mut used = key;
                        used.used = true;
                        self.keys.insert(used.id, used.clone());
                        self.out.push_back(Output::Persist(Change::AuthKey(used)));
                    }
                    self.create_node(now, conn, machine_key, r, user, tags, ephemeral);
                }
                Err(why) => self.reject(now, conn, why),
            },
            RegisterAuth::Interactive => {
                // One pending login per connection, and a bound on them all: anyone with
                // the server's public key can ask.
                self.pending_logins.retain(|_, p| p.conn != conn);
                if self.pending_logins.len() >= MAX_PENDING_LOGINS {
                    return self.reject(now, conn, "too many logins in progress; try again later");
                }
                let token = self.token();
                let url = format!("{}/register/{token}", self.config.server_url.trim_end_matches('/'));
                self.pending_logins.insert(
                    token.clone(),
                    PendingLogin { conn, machine_key, request: r, expires: now + PENDING_LOGIN_LIFETIME },
                );
                self.send(now, conn, ServerMessage::LoginNeeded { url });
            }
            RegisterAuth::Known => self.reject(now, conn, "this machine key is not registered"),
        }
    }

    /// Whether `user` may put these tags on a node (`checked`: an admin already did).
    pub(super) fn check_tags(&self, user: UserId, tags: &[String], checked: bool) -> Result<(), String> {
        let name = self.users.get(&user).map(|u| u.name.as_str()).unwrap_or_default();
        match tags
            .iter()
            .find(|t| !self.policy.tag_owners.contains_key(*t) || !checked && !self.policy.may_own_tag(t, name, &[]))
        {
            Some(t) => Err(format!("{name} may not assign {t} (tagOwners)")),
            None => Ok(()),
        }
    }

    /// A fresh unguessable token for URLs (login links, check holds).
    pub(super) fn token(&mut self) -> String {
        self.rng.gen_bytes::<16>().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Registers a node for `user` on `conn` and tells everyone.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_node(
        &mut self,
        now: Instant,
        conn: ConnId,
        machine_key: PublicKey,
        r: Register,
        user: UserId,
        mut tags: Vec<String>,
        ephemeral: bool,
    ) -> Option<NodeId> {
        let Some((offset, addresses)) = self.index.free_addresses() else {
            self.reject(now, conn, "the tailnet has no free addresses");
            return None;
        };
        self.index.handed_out(offset);
        tags.sort();
        tags.dedup();
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
            ephemeral,
        };
        self.index.add(&node);
        self.nodes.insert(id, node.clone());
        self.out.push_back(Output::Persist(Change::Node(node.clone())));
        self.audit("node", "node-register", format!("{} ({}) for {}", node.name, id.0, self.user_name(user)));
        if let Some(c) = self.conns.get_mut(&conn) {
            let old = c.node.replace(id);
            self.forget_conn(conn, old);
            self.node_conns.entry(id).or_default().insert(conn);
        }
        let registered = self.registered(id);
        self.send(now, conn, registered);
        self.nodes_changed(now, &[id]);
        Some(id)
    }

    pub(super) fn user_name(&self, user: UserId) -> String {
        self.users.get(&user).map(|u| u.name.clone()).unwrap_or_default()
    }

    /// The policy groups `user`'s IdP groups name (`eng` -> `group:eng`), for the compiler.
    pub(super) fn idp_groups(&self, user: UserId) -> Vec<String> {
        let groups = self.users.get(&user).map_or(&[][..], |u| &u.groups[..]);
        groups.iter().filter_map(|g| crate::policy::idp_policy_group(g)).collect()
    }

    /// An audit entry, persisted with everything else.
    pub(super) fn audit(&mut self, actor: &str, action: &str, detail: String) {
        let entry = AuditEntry { unix: self.unix, actor: actor.to_string(), action: action.to_string(), detail };
        self.out.push_back(Output::Persist(Change::Audit(entry)));
    }

    /// Checks a pre-auth key's secret (`mskey-<id>-<hex>`), in constant time.
    pub(super) fn redeem(&self, secret: &str) -> Result<AuthKeyRecord, &'static str> {
        let (id, hex) = admin::parse_secret("mskey", secret).ok_or("malformed auth key")?;
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

    pub(super) fn registered(&self, id: NodeId) -> ServerMessage {
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
    /// A DNS label from a hostname, made unique with `-2`, `-3`, ...
    pub(super) fn unique_name(&self, hostname: &str) -> String {
        let mut base: String = hostname
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .take(48)
            .collect();
        base = base.trim_matches('-').to_string();
        if base.is_empty() {
            base = "node".into();
        }
        let taken = |name: &str| self.index.by_name(name).is_some();
        if !taken(&base) {
            return base;
        }
        (2u32..).map(|i| format!("{base}-{i}")).find(|n| !taken(n)).unwrap_or(base)
    }

    pub(super) fn rotate(&mut self, now: Instant, conn: ConnId, node_key: PublicKey) {
        let Some(id) = self.conn_node(conn) else { return self.reject(now, conn, "not registered") };
        if self.expired(id) {
            // Rotation renews a valid key; an expired one (or one an admin expired) needs
            // a new login.
            return self.reject(now, conn, "the node key has expired; log in again");
        }
        if self.index.by_node_key(&node_key).is_some_and(|other| other != id) {
            return self.reject(now, conn, "this node key belongs to another node");
        }
        let lifetime = self.config.node_key_lifetime.as_secs();
        let unix = self.unix;
        if let Some(n) = self.nodes.get_mut(&id) {
            self.index.remove(n);
            n.node_key = node_key;
            self.index.add(n);
            if n.tags.is_empty() {
                n.key_expiry = Some(unix.saturating_add(lifetime));
            }
            let record = n.clone();
            self.out.push_back(Output::Persist(Change::Node(record)));
        }
        let registered = self.registered(id);
        self.send(now, conn, registered);
        self.nodes_changed(now, &[id]);
    }

    pub(super) fn set_endpoints(&mut self, node: NodeId, mut endpoints: Vec<SocketAddr>) {
        endpoints.truncate(16);
        if let Some(n) = self.nodes.get_mut(&node) {
            if n.endpoints != endpoints {
                n.endpoints = endpoints;
                let record = n.clone();
                self.out.push_back(Output::Persist(Change::Node(record)));
            }
        }
    }

    pub(super) fn remove_node(&mut self, id: NodeId) {
        if let Some(record) = self.nodes.remove(&id) {
            self.index.remove(&record);
            self.online.remove(&id);
            self.last_seen.remove(&id);
            self.ephemeral_offline.remove(&id);
            // Its approvals (as source or destination) go with it: a node id must never
            // inherit another node's check-mode approval.
            let stale: Vec<(NodeId, NodeId, String)> =
                self.approvals.keys().filter(|(s, d, _)| *s == id || *d == id).cloned().collect();
            for (src, dst, local_user) in stale {
                self.approvals.remove(&(src, dst, local_user.clone()));
                self.out.push_back(Output::Persist(Change::ApprovalRemoved { src, dst, local_user }));
            }
            self.pending_checks.retain(|_, p| p.dst != id && p.request.src != id);
            self.out.push_back(Output::Persist(Change::NodeRemoved(id)));
            if let Some(s) = netmap::slot(id).and_then(|s| self.streams.get_mut(s)) {
                *s = None;
            }
            for conn in self.node_conns.remove(&id).unwrap_or_default() {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.node = None;
                    self.out.push_back(Output::Close { conn, reason: "the node was removed".into() });
                }
            }
        }
    }
}

/// Bounds on what a node may send about itself.
const MAX_HOSTNAME: usize = 255;
const MAX_HOST_KEYS: usize = 8;
const MAX_HOST_KEY_LEN: usize = 2048;
const MAX_REQUESTED_TAGS: usize = 32;

fn check_register(r: &Register) -> Result<(), String> {
    if r.hostname.len() > MAX_HOSTNAME || r.hostname.chars().any(char::is_control) {
        return Err(format!("the hostname must be at most {MAX_HOSTNAME} bytes without control characters"));
    }
    if r.ssh_host_keys.len() > MAX_HOST_KEYS
        || r.ssh_host_keys.iter().any(|k| k.len() > MAX_HOST_KEY_LEN || k.chars().any(char::is_control))
    {
        return Err(format!(
            "at most {MAX_HOST_KEYS} SSH host keys of at most {MAX_HOST_KEY_LEN} bytes, one line each"
        ));
    }
    if r.requested_tags.len() > MAX_REQUESTED_TAGS {
        return Err(format!("at most {MAX_REQUESTED_TAGS} tags"));
    }
    if let Some(t) =
        r.requested_tags.iter().find(|t| crate::policy::alias::check_tag_name(t).is_err() || !t.starts_with("tag:"))
    {
        return Err(format!("{t:?} is not a tag"));
    }
    Ok(())
}

/// Counters for the shell's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub nodes: usize,
    pub online: usize,
    pub connections: usize,
    /// Full maps and deltas sent.
    pub map_messages: u64,
    /// Whole-tailnet policy compilations.
    pub compiles: u64,
    pub pending_logins: usize,
    pub pending_checks: usize,
}

impl ControlServer {
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            nodes: self.nodes.len(),
            online: self.online.len(),
            connections: self.conns.len(),
            map_messages: self.maps_sent,
            compiles: self.compiles,
            pending_logins: self.pending_logins.len(),
            pending_checks: self.pending_checks.len(),
        }
    }
}
