//! How the world drives the SSH apps: the world-level state (server apps, records, the
//! RNG everything SSH draws from) and the driver's entry points: open a client, accept on
//! port 22, TCP events, timers, crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use ed25519_dalek::SigningKey;
use mesh_core::node::SSH_PORT;
use mesh_core::rng::Rng;
use mesh_core::ssh::client::{ClientConfig, ClientSession};
use mesh_core::ssh::server::{ServerConfig, ServerSession};
use mesh_core::tcp::{ConnId, TcpEvent};
use mesh_core::time::Instant;
use mesh_core::wireguard::PeerId;

use super::pipe::{Ctx, Pipe};
use super::records::{SshClientConfig, SshClientId, SshClientRecord, SshServerRecord};
use super::{ClientConn, ServerConn, SshNodeApps};
use crate::driver::Driver;
use crate::error::SimError;
use crate::network;
use crate::node::{Node, NodeId};
use crate::trace::TraceRecord;

/// Bytes read from TCP per `tcp_recv` (and scratch for the apps).
const IO_CHUNK: usize = 64 << 10;

/// The SSH server app of one node: kept across crashes, like a daemon's configuration and
/// host key.
pub(crate) struct ServerApp {
    pub(crate) allow: BTreeSet<NodeId>,
    pub(crate) config: ServerConfig,
    host_key: SigningKey,
    /// Each accepted connection's session RNG is forked from this.
    rng: Rng,
}

impl std::fmt::Debug for ServerApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerApp").field("allow", &self.allow).finish_non_exhaustive()
    }
}

impl ServerApp {
    pub(crate) fn public_key(&self) -> [u8; 32] {
        self.host_key.verifying_key().to_bytes()
    }
}

/// The world's SSH state.
#[derive(Debug)]
pub(crate) struct SshApps {
    pub(crate) servers: BTreeMap<NodeId, ServerApp>,
    pub(crate) clients: Vec<SshClientRecord>,
    pub(crate) accepted: Vec<SshServerRecord>,
    rng: Rng,
    buf: Vec<u8>,
}

impl SshApps {
    /// `rng`: forked from the world's seed, the source of host keys and session RNGs.
    pub(crate) fn new(rng: Rng) -> Self {
        Self { servers: BTreeMap::new(), clients: Vec::new(), accepted: Vec::new(), rng, buf: vec![0; IO_CHUNK] }
    }

    /// Install (or reconfigure, keeping its host key) the server app of `node`; returns the
    /// host's public key.
    pub(crate) fn serve(&mut self, node: NodeId, allow: BTreeSet<NodeId>, config: ServerConfig) -> [u8; 32] {
        if let Some(app) = self.servers.get_mut(&node) {
            app.allow = allow;
            app.config = config;
            return app.public_key();
        }
        let host_key = SigningKey::from_bytes(&self.rng.gen_bytes());
        let rng = self.rng.fork();
        let app = ServerApp { allow, config, host_key, rng };
        let public = app.public_key();
        self.servers.insert(node, app);
        public
    }
}

/// The earliest deadline of the SSH sessions running on a node.
pub(crate) fn ssh_deadline(apps: &SshNodeApps) -> Option<Instant> {
    let servers = apps.servers.values().filter_map(ServerConn::deadline);
    let clients = apps.clients.values().filter_map(|c| c.session.poll_timeout());
    servers.chain(clients).min()
}

impl Driver<'_> {
    /// Open an SSH client `node -> to:22` running `config.script`.
    pub(crate) fn open_ssh(
        &mut self,
        node: &mut Node,
        to: NodeId,
        config: SshClientConfig,
    ) -> Result<SshClientId, SimError> {
        let from = node.id();
        let ssh = &mut self.apps.ssh;
        let host_key = match (config.host_key, ssh.servers.get(&to)) {
            (Some(key), _) => key,
            (None, Some(app)) => app.public_key(),
            (None, None) => return Err(SimError::NoSshServer(to)),
        };
        let core = node.core.as_mut().ok_or(SimError::NodeDown(from))?;
        let remote = SocketAddr::new(network::mesh_addr(to).into(), SSH_PORT);
        let conn = core.tcp_connect(self.now, remote).map_err(SimError::Tcp)?;
        let id = SshClientId(ssh.clients.len() as u64);
        ssh.clients.push(SshClientRecord {
            id,
            from,
            to,
            conn,
            opened_at: self.now,
            connected_at: None,
            keyed_at: None,
            authenticated_at: None,
            auth_failed: false,
            banners: Vec::new(),
            commands: Vec::new(),
            script_len: config.script.len(),
            rekeys: 0,
            finished_at: None,
            session_end: None,
            closed_at: None,
            tcp_sent: 0,
            tcp_received: 0,
        });
        let client = ClientConfig {
            transport: config.transport,
            connection: config.connection,
            user: config.user,
            host_key: Some(host_key),
            key: None,
        };
        let session = ClientSession::new(client, ssh.rng.fork(), self.now);
        let record = ssh.clients.len() - 1;
        node.apps.ssh.clients.insert(conn, ClientConn::new(record, session, Pipe::new(conn, false), config.script));
        self.stats.tcp_opened += 1;
        self.trace.record(self.now, TraceRecord::SshOpened { from, to, client: id.0 });
        self.drive(node, false);
        Ok(id)
    }

    /// A connection accepted on port 22 of a node that runs the server app: start a
    /// session. `false` if the connection is not the app's (the sink takes it).
    pub(crate) fn ssh_accept(
        &mut self,
        node: &mut Node,
        conn: ConnId,
        peer: (Option<PeerId>, Option<NodeId>),
        local: SocketAddr,
    ) -> bool {
        let id = node.id();
        let ssh = &mut self.apps.ssh;
        let Some(app) = ssh.servers.get_mut(&id).filter(|_| local.port() == SSH_PORT) else { return false };
        // Identity is the peer WireGuard authenticated, resolved through the netmap: never
        // the source address, never anything the client says.
        let allowed = peer.1.is_some_and(|n| app.allow.contains(&n));
        let session = ServerSession::new(app.host_key.clone(), app.config.clone(), app.rng.fork(), self.now);
        ssh.accepted.push(SshServerRecord::new(id, conn, peer, self.now));
        let record = ssh.accepted.len() - 1;
        node.apps.ssh.servers.insert(conn, ServerConn::new(record, session, conn, allowed));
        self.ssh_service(node, conn, false);
        true
    }

    /// A TCP event of one of `node`'s SSH connections; `false` if the connection is not
    /// an SSH app's. (`Accepted` goes through [`Self::ssh_accept`].)
    pub(crate) fn ssh_tcp_event(&mut self, node: &mut Node, event: TcpEvent) -> bool {
        let apps = &mut node.apps.ssh;
        match event {
            TcpEvent::Connected { conn } => {
                let Some(client) = apps.clients.get_mut(&conn) else { return false };
                client.pipe.connected = true;
                self.apps.ssh.clients[client.record].connected_at = Some(self.now);
                self.ssh_service(node, conn, false);
            }
            TcpEvent::Readable { conn } | TcpEvent::Writable { conn } => {
                if !apps.clients.contains_key(&conn) && !apps.servers.contains_key(&conn) {
                    return false;
                }
                self.ssh_service(node, conn, matches!(event, TcpEvent::Readable { .. }));
            }
            TcpEvent::Closed { conn } => {
                let now = self.now;
                let ssh = &mut self.apps.ssh;
                if let Some(client) = apps.clients.remove(&conn) {
                    let r = &mut ssh.clients[client.record];
                    r.closed_at = Some(now);
                    r.session_end.get_or_insert_with(|| "TCP connection lost".into());
                } else if let Some(server) = apps.servers.remove(&conn) {
                    let r = &mut ssh.accepted[server.record];
                    r.closed_at = Some(now);
                    r.session_end.get_or_insert_with(|| "TCP connection lost".into());
                } else {
                    return false;
                }
            }
            TcpEvent::Accepted { .. } => return false,
        }
        true
    }

    /// Run one SSH connection of `node` after an input (`readable`: TCP has data).
    fn ssh_service(&mut self, node: &mut Node, conn: ConnId, readable: bool) {
        let id = node.id();
        let Some(core) = node.core.as_mut() else { return };
        let ssh = &mut self.apps.ssh;
        let mut cx = Ctx { now: self.now, node: id, core, trace: &mut *self.trace, buf: &mut ssh.buf };
        if let Some(server) = node.apps.ssh.servers.get_mut(&conn) {
            server.service(&mut cx, &mut ssh.accepted[server.record], readable);
        } else if let Some(client) = node.apps.ssh.clients.get_mut(&conn) {
            client.service(&mut cx, &mut ssh.clients[client.record], readable);
        }
    }

    /// The node's timer fired: run the sessions (and sleeping programs) whose deadline has
    /// come.
    pub(crate) fn ssh_timeouts(&mut self, node: &mut Node) {
        let now = self.now;
        let apps = &mut node.apps.ssh;
        let mut due = Vec::new();
        for (conn, server) in &mut apps.servers {
            if server.session.poll_timeout().is_some_and(|t| t <= now) {
                server.session.handle_timeout(now);
                due.push(*conn);
            } else if server.deadline().is_some_and(|t| t <= now) {
                due.push(*conn);
            }
        }
        for (conn, client) in &mut apps.clients {
            if client.session.poll_timeout().is_some_and(|t| t <= now) {
                client.session.handle_timeout(now);
                due.push(*conn);
            }
        }
        for conn in due {
            self.ssh_service(node, conn, false);
        }
    }

    /// The SSH part of a crash: every connection of the node ends now.
    pub(crate) fn crash_ssh(&mut self, apps: &SshNodeApps) {
        let now = self.now;
        let ssh = &mut self.apps.ssh;
        for client in apps.clients.values() {
            let r = &mut ssh.clients[client.record];
            r.closed_at.get_or_insert(now);
            r.session_end.get_or_insert_with(|| "node crashed".into());
        }
        for server in apps.servers.values() {
            let r = &mut ssh.accepted[server.record];
            r.closed_at.get_or_insert(now);
            r.session_end.get_or_insert_with(|| "node crashed".into());
        }
    }
}
