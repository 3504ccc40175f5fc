//! The node side of the control protocol as a state machine: connect, upgrade, secure
//! channel, register, stream the map, apply deltas, hold check requests across
//! reconnects, and reconnect with backoff when the connection fails or goes silent.
//!
//! The shell opens and closes the TCP connection when told ([`ClientEvent::Connect`],
//! [`ClientEvent::Disconnect`]) and moves bytes. The current netmap survives every
//! disconnect: the data plane keeps working on it while the server is away.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::channel::{ChannelClient, ChannelConfig};
use super::messages::{
    decode, encode, CheckAnswer, CheckRequest, MapDelta, Netmap, NodeMessage, Peer, Register, RegisterAuth, Registered,
    ServerMessage, SshAudit,
};
use super::upgrade::{upgrade_request, UpgradeReader, UpgradeStatus};
use crate::ip::filter::{Filter, FilterRule};
use crate::node::NetmapPeer;
use crate::policy::{NodeId, NodeSshRule};
use crate::rng::Rng;
use crate::time::Instant;
use crate::wireguard::{PrivateKey, PublicKey};

/// SSH audit reports kept while the control connection is down.
pub const MAX_QUEUED_AUDITS: usize = 256;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's static key, known beforehand (pinned; never learned over the wire).
    pub server_key: PublicKey,
    /// The `Host` of the upgrade request.
    pub host: String,
    pub hostname: String,
    /// How to register the first time; [`RegisterAuth::Known`] once registered.
    pub auth: RegisterAuth,
    pub ssh_host_keys: Vec<String>,
    pub requested_tags: Vec<String>,
    pub ssh: bool,
    /// Reconnect after this long without a message (the server sends keepalives about
    /// every 50 s).
    pub watchdog: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl ClientConfig {
    pub fn new(server_key: PublicKey, host: &str, hostname: &str, auth: RegisterAuth) -> Self {
        Self {
            server_key,
            host: host.into(),
            hostname: hostname.into(),
            auth,
            ssh_host_keys: Vec::new(),
            requested_tags: Vec::new(),
            ssh: false,
            watchdog: Duration::from_secs(120),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// What the shell must do or know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Open a TCP connection to the server, then call [`ControlClient::handle_connected`].
    Connect,
    /// Close the connection; a `Connect` follows after a backoff.
    Disconnect {
        reason: String,
    },
    Registered(Registered),
    /// Interactive registration: show this URL to the user.
    LoginNeeded {
        url: String,
    },
    /// The server refused (a bad auth key, a deleted node...). The client stops; nothing
    /// is retried until the application builds a new client.
    Rejected {
        reason: String,
    },
    /// The netmap changed: read [`ControlClient::netmap`].
    NetmapChanged,
    /// The answer to a check request; `Pending` answers are followed by a final one.
    CheckAnswer {
        id: u64,
        answer: CheckAnswer,
    },
}

/// The netmap as the node holds it after applying every message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetmapState {
    pub version: u64,
    pub node: Arc<Peer>,
    pub peers: BTreeMap<NodeId, Arc<Peer>>,
    pub filter: Arc<Vec<FilterRule>>,
    pub ssh: Arc<Vec<NodeSshRule>>,
    pub dns_domain: String,
}

impl NetmapState {
    pub(crate) fn from_map(map: Netmap) -> Self {
        Self {
            version: map.version,
            node: map.node,
            peers: map.peers.into_iter().map(|p| (p.id, p)).collect(),
            filter: map.filter,
            ssh: map.ssh,
            dns_domain: map.dns_domain,
        }
    }

    pub(crate) fn apply(&mut self, delta: MapDelta) {
        self.version = delta.version;
        for id in delta.remove {
            self.peers.remove(&id);
        }
        for p in delta.upsert {
            self.peers.insert(p.id, p);
        }
        if let Some(f) = delta.filter {
            self.filter = f;
        }
        if let Some(s) = delta.ssh {
            self.ssh = s;
        }
        if let Some(n) = delta.node {
            self.node = n;
        }
    }

    /// The peers in the form [`crate::node::Node::set_netmap`] takes (peers without an
    /// IPv4 address are skipped: the data plane needs one).
    pub fn node_peers(&self) -> Vec<NetmapPeer> {
        self.peers
            .values()
            .filter_map(|p| {
                let mesh_v4 = p.addresses.iter().find_map(|a| match a {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                })?;
                let mesh_v6 = p.addresses.iter().find_map(|a| match a {
                    IpAddr::V6(v6) => Some(*v6),
                    IpAddr::V4(_) => None,
                });
                Some(NetmapPeer {
                    name: p.name.clone(),
                    public_key: p.node_key,
                    endpoint: p.endpoints.first().copied(),
                    mesh_v4,
                    mesh_v6,
                    routes: p.routes.clone(),
                })
            })
            .collect()
    }

    /// The packet filter for [`crate::node::Node::set_filter`].
    pub fn node_filter(&self) -> Filter {
        Filter::new((*self.filter).clone())
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting to (re)connect at this time.
    Idle {
        retry_at: Instant,
    },
    /// `Connect` was emitted; waiting for the shell.
    Connecting,
    /// The upgrade request is out; waiting for the 101.
    Upgrading {
        reader: UpgradeReader,
        channel: ChannelClient,
    },
    Open {
        channel: ChannelClient,
        registered: bool,
    },
    /// Refused by the server: nothing more to do.
    Stopped,
}

/// The control client of one node.
#[derive(Debug)]
pub struct ControlClient {
    config: ClientConfig,
    machine_key: PrivateKey,
    node_key: PublicKey,
    rng: Rng,
    phase: Phase,
    last_rx: Instant,
    backoff: Duration,
    endpoints: Vec<SocketAddr>,
    netmap: Option<NetmapState>,
    /// Check requests without a final answer, re-sent after every reconnect.
    checks: BTreeMap<u64, CheckRequest>,
    /// SSH decisions for the audit log not yet sent (kept across reconnects, bounded).
    audits: VecDeque<SshAudit>,
    transmit: VecDeque<Bytes>,
    events: VecDeque<ClientEvent>,
}

impl ControlClient {
    pub fn new(
        config: ClientConfig,
        machine_key: PrivateKey,
        node_key: PublicKey,
        seed: [u8; 32],
        now: Instant,
    ) -> Self {
        Self {
            backoff: config.backoff_min,
            config,
            machine_key,
            node_key,
            rng: Rng::new(seed),
            phase: Phase::Idle { retry_at: now },
            last_rx: now,
            endpoints: Vec::new(),
            netmap: None,
            checks: BTreeMap::new(),
            audits: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn netmap(&self) -> Option<&NetmapState> {
        self.netmap.as_ref()
    }

    pub fn is_streaming(&self) -> bool {
        matches!(self.phase, Phase::Open { registered: true, .. }) && self.netmap.is_some()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Bytes to write to the connection.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle { retry_at } => Some(retry_at),
            Phase::Upgrading { .. } | Phase::Open { .. } => Some(self.last_rx + self.config.watchdog),
            Phase::Connecting | Phase::Stopped => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle { retry_at } if retry_at <= now => {
                self.phase = Phase::Connecting;
                self.events.push_back(ClientEvent::Connect);
            }
            Phase::Upgrading { .. } | Phase::Open { .. } if self.last_rx + self.config.watchdog <= now => {
                let secs = self.config.watchdog.as_secs();
                self.fail(now, format!("nothing from the server for {secs} s"));
            }
            _ => {}
        }
    }

    /// The shell's TCP connection is up: send the upgrade and the first handshake record
    /// right behind it.
    pub fn handle_connected(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Connecting) {
            return;
        }
        let key = PrivateKey::from_bytes(*self.machine_key.as_bytes());
        let mut channel = match ChannelClient::new(key, self.config.server_key, &mut self.rng, ChannelConfig::default())
        {
            Ok(c) => c,
            Err(e) => return self.fail(now, format!("cannot start the secure channel: {e}")),
        };
        self.transmit.push_back(Bytes::from(upgrade_request(&self.config.host)));
        let register = NodeMessage::Register(Register {
            node_key: self.node_key,
            hostname: self.config.hostname.clone(),
            ssh_host_keys: self.config.ssh_host_keys.clone(),
            requested_tags: self.config.requested_tags.clone(),
            ssh: self.config.ssh,
            auth: self.config.auth.clone(),
        });
        if let Err(e) = channel.send_message(&encode(&register)) {
            return self.fail(now, format!("cannot queue the registration: {e}"));
        }
        while let Some(b) = channel.poll_transmit() {
            self.transmit.push_back(b);
        }
        self.last_rx = now;
        self.phase = Phase::Upgrading { reader: UpgradeReader::new(), channel };
    }

    /// The connection closed or failed.
    pub fn handle_disconnected(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Stopped | Phase::Idle { .. }) {
            return;
        }
        self.idle(now);
    }

    /// Bytes read from the connection.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.last_rx = now;
        let rest = match &mut self.phase {
            Phase::Upgrading { reader, .. } => match reader.handle_input(bytes) {
                Ok(UpgradeStatus::Pending) => return,
                Ok(UpgradeStatus::Switched { rest }) => rest,
                Err(e) => return self.fail(now, format!("the server refused the upgrade: {e}")),
            },
            Phase::Open { .. } => Bytes::copy_from_slice(bytes),
            _ => return,
        };
        if let Phase::Upgrading { .. } = self.phase {
            let Phase::Upgrading { channel, .. } = std::mem::replace(&mut self.phase, Phase::Connecting) else {
                return;
            };
            self.phase = Phase::Open { channel, registered: false };
        }
        let Phase::Open { channel, .. } = &mut self.phase else { return };
        if let Err(e) = channel.handle_input(&rest) {
            return self.fail(now, format!("secure channel: {e}"));
        }
        let mut messages = Vec::new();
        while let Some(m) = channel.poll_message() {
            messages.push(m);
        }
        self.flush_channel();
        for m in messages {
            match decode::<ServerMessage>(&m) {
                Ok(message) => self.handle_message(now, message),
                Err(e) => return self.fail(now, format!("bad message from the server: {e}")),
            }
            if matches!(self.phase, Phase::Stopped | Phase::Idle { .. }) {
                return;
            }
        }
    }

    fn handle_message(&mut self, now: Instant, message: ServerMessage) {
        match message {
            ServerMessage::Registered(r) => {
                self.config.auth = RegisterAuth::Known;
                if let Phase::Open { registered, .. } = &mut self.phase {
                    *registered = true;
                }
                self.events.push_back(ClientEvent::Registered(r));
                self.send(NodeMessage::Map { endpoints: self.endpoints.clone() });
                let checks: Vec<CheckRequest> = self.checks.values().cloned().collect();
                for c in checks {
                    self.send(NodeMessage::Check(c));
                }
                while let Some(a) = self.audits.pop_front() {
                    self.send(NodeMessage::SshAudit(a));
                }
            }
            ServerMessage::LoginNeeded { url } => self.events.push_back(ClientEvent::LoginNeeded { url }),
            ServerMessage::Rejected { reason } => {
                self.phase = Phase::Stopped;
                self.events.push_back(ClientEvent::Rejected { reason });
            }
            ServerMessage::Map(map) => {
                self.backoff = self.config.backoff_min;
                self.netmap = Some(NetmapState::from_map(map));
                self.events.push_back(ClientEvent::NetmapChanged);
            }
            ServerMessage::Delta(delta) => match &mut self.netmap {
                Some(state) => {
                    state.apply(delta);
                    self.events.push_back(ClientEvent::NetmapChanged);
                }
                None => self.fail(now, "a netmap delta before the netmap".into()),
            },
            ServerMessage::KeepAlive => {}
            ServerMessage::CheckAnswer { id, answer } => {
                if !matches!(answer, CheckAnswer::Pending { .. }) {
                    self.checks.remove(&id);
                }
                self.events.push_back(ClientEvent::CheckAnswer { id, answer });
            }
        }
    }

    /// Asks the server about a login held by a `check` rule; re-sent after reconnects
    /// until a final answer arrives.
    pub fn request_check(&mut self, request: CheckRequest) {
        self.checks.insert(request.id, request.clone());
        if matches!(self.phase, Phase::Open { registered: true, .. }) {
            self.send(NodeMessage::Check(request));
        }
    }

    /// An SSH decision for the server's audit log: sent now, or after the next registration
    /// (the oldest are dropped beyond [`MAX_QUEUED_AUDITS`] while disconnected).
    pub fn report_ssh(&mut self, audit: SshAudit) {
        if matches!(self.phase, Phase::Open { registered: true, .. }) {
            self.send(NodeMessage::SshAudit(audit));
        } else {
            if self.audits.len() >= MAX_QUEUED_AUDITS {
                self.audits.pop_front();
            }
            self.audits.push_back(audit);
        }
    }

    /// The held login gave up (the client went away): stop asking.
    pub fn cancel_check(&mut self, id: u64) {
        self.checks.remove(&id);
    }

    pub fn set_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        if endpoints == self.endpoints {
            return;
        }
        self.endpoints = endpoints.clone();
        if matches!(self.phase, Phase::Open { registered: true, .. }) {
            self.send(NodeMessage::Endpoints(endpoints));
        }
    }

    fn send(&mut self, message: NodeMessage) {
        if let Phase::Open { channel, .. } = &mut self.phase {
            if channel.send_message(&encode(&message)).is_err() {
                return;
            }
        }
        self.flush_channel();
    }

    fn flush_channel(&mut self) {
        if let Phase::Open { channel, .. } | Phase::Upgrading { channel, .. } = &mut self.phase {
            while let Some(b) = channel.poll_transmit() {
                self.transmit.push_back(b);
            }
        }
    }

    fn fail(&mut self, now: Instant, reason: String) {
        self.events.push_back(ClientEvent::Disconnect { reason });
        self.idle(now);
    }

    /// Back to waiting, with exponential backoff and jitter.
    fn idle(&mut self, now: Instant) {
        self.transmit.clear();
        let jitter = Duration::from_millis(self.rng.below(self.backoff.as_millis().max(1) as u64 / 4 + 1));
        self.phase = Phase::Idle { retry_at: now + self.backoff + jitter };
        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
    }
}
