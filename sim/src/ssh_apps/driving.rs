//! How the world drives the SSH apps: the world-level state (server apps, records, the
//! RNG the clients draw from) and the driver's entry points: open a client, the core's SSH
//! server events, the clients' TCP events, timers, crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use mesh_core::node::{SshEvent, SSH_PORT};
use mesh_core::rng::Rng;
use mesh_core::ssh::client::{ClientConfig, ClientSession};
use mesh_core::tcp::{ConnId, TcpEvent};
use mesh_core::time::Instant;

use super::pipe::{Ctx, Pipe};
use super::records::{SshClientConfig, SshClientId, SshClientRecord, SshServerRecord};
use super::server::ServerCtx;
use super::{ClientConn, ServerConn, SshNodeApps};
use crate::driver::Driver;
use crate::error::SimError;
use crate::network;
use crate::node::{Node, NodeId};
use crate::trace::TraceRecord;

/// Bytes read from TCP per `tcp_recv` (and scratch for the apps).
const IO_CHUNK: usize = 64 << 10;

/// The SSH server app of one node: who may log in (kept across crashes, like a daemon's
/// configuration), and the node's host key as clients pin it.
#[derive(Debug)]
pub(crate) struct ServerApp {
    pub(crate) allow: BTreeSet<NodeId>,
    host_key: [u8; 32],
}

impl ServerApp {
    pub(crate) fn public_key(&self) -> [u8; 32] {
        self.host_key
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
    /// `rng`: forked from the world's seed, the source of the clients' session RNGs.
    pub(crate) fn new(rng: Rng) -> Self {
        Self { servers: BTreeMap::new(), clients: Vec::new(), accepted: Vec::new(), rng, buf: vec![0; IO_CHUNK] }
    }

    /// Install (or reconfigure) the server app of `node`, whose host key is `host_key`.
    pub(crate) fn serve(&mut self, node: NodeId, allow: BTreeSet<NodeId>, host_key: [u8; 32]) {
        self.servers.insert(node, ServerApp { allow, host_key });
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

    /// An event of the core's SSH server on `node`.
    pub(crate) fn ssh_event(&mut self, node: &mut Node, event: SshEvent) {
        let id = node.id();
        let now = self.now;
        let ssh = &mut self.apps.ssh;
        match event {
            SshEvent::Opened { session, peer, .. } => {
                // Identity is the peer WireGuard authenticated, resolved through the netmap:
                // never the source address, never anything the client says.
                let peer_node = node.peer_node(peer);
                let allowed = ssh.servers.get(&id).is_some_and(|app| peer_node.is_some_and(|n| app.allow.contains(&n)));
                ssh.accepted.push(SshServerRecord::new(id, session, (Some(peer), peer_node), now));
                let record = ssh.accepted.len() - 1;
                node.apps.ssh.servers.insert(session, ServerConn::new(record, session, allowed));
            }
            SshEvent::Session { session, event, .. } => {
                let Some(core) = node.core.as_mut() else { return };
                let Some(server) = node.apps.ssh.servers.get_mut(&session) else { return };
                let mut cx = ServerCtx { now, node: id, core, trace: &mut *self.trace };
                server.event(&mut cx, &mut ssh.accepted[server.record], event);
            }
            SshEvent::Writable { session } => {
                let Some(core) = node.core.as_mut() else { return };
                let Some(server) = node.apps.ssh.servers.get_mut(&session) else { return };
                let mut cx = ServerCtx { now, node: id, core, trace: &mut *self.trace };
                server.produce(&mut cx, &mut ssh.accepted[server.record]);
            }
            SshEvent::Closed { session, .. } => {
                if let Some(server) = node.apps.ssh.servers.remove(&session) {
                    let r = &mut ssh.accepted[server.record];
                    r.closed_at = Some(now);
                    r.session_end.get_or_insert_with(|| "TCP connection lost".into());
                }
            }
        }
    }

    /// A TCP event of one of `node`'s SSH client connections; `false` if the connection is
    /// not a client app's.
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
                if !apps.clients.contains_key(&conn) {
                    return false;
                }
                self.ssh_service(node, conn, matches!(event, TcpEvent::Readable { .. }));
            }
            TcpEvent::Closed { conn } => {
                let now = self.now;
                let ssh = &mut self.apps.ssh;
                let Some(client) = apps.clients.remove(&conn) else { return false };
                let r = &mut ssh.clients[client.record];
                r.closed_at = Some(now);
                r.session_end.get_or_insert_with(|| "TCP connection lost".into());
            }
            TcpEvent::Accepted { .. } => return false,
        }
        true
    }

    /// Run one SSH client connection of `node` after an input (`readable`: TCP has data).
    fn ssh_service(&mut self, node: &mut Node, conn: ConnId, readable: bool) {
        let id = node.id();
        let Some(core) = node.core.as_mut() else { return };
        let ssh = &mut self.apps.ssh;
        let mut cx = Ctx { now: self.now, node: id, core, trace: &mut *self.trace, buf: &mut ssh.buf };
        if let Some(client) = node.apps.ssh.clients.get_mut(&conn) {
            client.service(&mut cx, &mut ssh.clients[client.record], readable);
        }
    }

    /// The node's timer fired: run the client sessions and the server's sleeping programs
    /// whose deadline has come (the core runs its own sessions' timers).
    pub(crate) fn ssh_timeouts(&mut self, node: &mut Node) {
        let now = self.now;
        let id = node.id();
        let apps = &mut node.apps.ssh;
        if let Some(core) = node.core.as_mut() {
            for server in apps.servers.values_mut().filter(|s| s.deadline().is_some_and(|t| t <= now)) {
                let mut cx = ServerCtx { now, node: id, core, trace: &mut *self.trace };
                server.produce(&mut cx, &mut self.apps.ssh.accepted[server.record]);
            }
        }
        let mut due = Vec::new();
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
