//! How the SSH apps are driven: the world-level state (server apps, records, the RNG the
//! clients draw from) and the entry points the driver calls: open a client, the core's SSH
//! server events, the clients' TCP events, timers, crashes. Each entry point is handed the
//! node it acts on and that node's connections ([`NodeCtx`]); driving the node afterwards
//! is the driver's business, so this module does not know the driver.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use mesh_core::node::{SshEvent, SSH_PORT};
use mesh_core::rng::Rng;
use mesh_core::ssh::client::{ClientConfig, ClientSession};
use mesh_core::tcp::{ConnId, TcpEvent};
use mesh_core::time::Instant;

use super::client::ClientConn;
use super::connections::SshNodeApps;
use super::pipe::{Ctx, Pipe};
use super::records::{SshClientConfig, SshClientId, SshClientRecord, SshServerRecord};
use super::server::ServerConn;
use super::server::ServerCtx;
use crate::addresses::mesh_addr;
use crate::error::SimError;
use crate::ids::NodeId;
use crate::node::Node;
use crate::trace::{Trace, TraceRecord};

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

/// One node as an SSH entry point sees it: the clock, the node, the SSH connections of its
/// running incarnation, and the trace.
pub(crate) struct NodeCtx<'a> {
    pub(crate) now: Instant,
    pub(crate) node: &'a mut Node,
    pub(crate) apps: &'a mut SshNodeApps,
    pub(crate) trace: &'a mut Trace,
}

/// The earliest deadline of the SSH sessions running on a node.
pub(crate) fn ssh_deadline(apps: &SshNodeApps) -> Option<Instant> {
    let servers = apps.servers.values().filter_map(ServerConn::deadline);
    let clients = apps.clients.values().filter_map(|c| c.session.poll_timeout());
    servers.chain(clients).min()
}

impl SshApps {
    /// Open an SSH client `cx.node -> to:22` running `config.script`. The caller drives the
    /// node afterwards.
    pub(crate) fn open(
        &mut self,
        cx: &mut NodeCtx<'_>,
        to: NodeId,
        config: SshClientConfig,
    ) -> Result<SshClientId, SimError> {
        let now = cx.now;
        let from = cx.node.id();
        let host_key = match (config.host_key, self.servers.get(&to)) {
            (Some(key), _) => key,
            (None, Some(app)) => app.public_key(),
            (None, None) => return Err(SimError::NoSshServer(to)),
        };
        let core = cx.node.core.as_mut().ok_or(SimError::NodeDown(from))?;
        let remote = SocketAddr::new(mesh_addr(to).into(), SSH_PORT);
        let conn = core.tcp_connect(now, remote).map_err(SimError::Tcp)?;
        let id = SshClientId(self.clients.len() as u64);
        self.clients.push(SshClientRecord {
            id,
            from,
            to,
            conn,
            opened_at: now,
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
        let session = ClientSession::new(client, self.rng.fork(), now);
        let record = self.clients.len() - 1;
        cx.apps.clients.insert(conn, ClientConn::new(record, session, Pipe::new(conn, false), config.script));
        cx.trace.record(now, TraceRecord::SshOpened { from, to, client: id.0 });
        Ok(id)
    }

    /// An event of the core's SSH server on `cx.node`.
    pub(crate) fn event(&mut self, cx: &mut NodeCtx<'_>, event: SshEvent) {
        let id = cx.node.id();
        let now = cx.now;
        match event {
            SshEvent::Opened { session, peer, .. } => {
                // Identity is the peer WireGuard authenticated, resolved through the netmap:
                // never the source address, never anything the client says.
                let peer_node = cx.node.peer_node(peer);
                let allowed =
                    self.servers.get(&id).is_some_and(|app| peer_node.is_some_and(|n| app.allow.contains(&n)));
                self.accepted.push(SshServerRecord::new(id, session, (Some(peer), peer_node), now));
                let record = self.accepted.len() - 1;
                cx.apps.servers.insert(session, ServerConn::new(record, session, allowed));
            }
            SshEvent::Session { session, event, .. } => {
                let Some(core) = cx.node.core.as_mut() else { return };
                let Some(server) = cx.apps.servers.get_mut(&session) else { return };
                let mut server_cx = ServerCtx { now, node: id, core, trace: &mut *cx.trace };
                server.event(&mut server_cx, &mut self.accepted[server.record], event);
            }
            SshEvent::Writable { session } => {
                let Some(core) = cx.node.core.as_mut() else { return };
                let Some(server) = cx.apps.servers.get_mut(&session) else { return };
                let mut server_cx = ServerCtx { now, node: id, core, trace: &mut *cx.trace };
                server.produce(&mut server_cx, &mut self.accepted[server.record]);
            }
            SshEvent::Closed { session, .. } => {
                if let Some(server) = cx.apps.servers.remove(&session) {
                    let r = &mut self.accepted[server.record];
                    r.closed_at = Some(now);
                    r.session_end.get_or_insert_with(|| "TCP connection lost".into());
                }
            }
        }
    }

    /// A TCP event of one of `cx.node`'s SSH client connections; `false` if the connection
    /// is not a client app's.
    pub(crate) fn tcp_event(&mut self, cx: &mut NodeCtx<'_>, event: TcpEvent) -> bool {
        match event {
            TcpEvent::Connected { conn } => {
                let Some(client) = cx.apps.clients.get_mut(&conn) else { return false };
                client.pipe.connected = true;
                self.clients[client.record].connected_at = Some(cx.now);
                self.service(cx, conn, false);
            }
            TcpEvent::Readable { conn } | TcpEvent::Writable { conn } => {
                if !cx.apps.clients.contains_key(&conn) {
                    return false;
                }
                self.service(cx, conn, matches!(event, TcpEvent::Readable { .. }));
            }
            TcpEvent::Closed { conn } => {
                let Some(client) = cx.apps.clients.remove(&conn) else { return false };
                let r = &mut self.clients[client.record];
                r.closed_at = Some(cx.now);
                r.session_end.get_or_insert_with(|| "TCP connection lost".into());
            }
            TcpEvent::Accepted { .. } => return false,
        }
        true
    }

    /// Run one SSH client connection of `cx.node` after an input (`readable`: TCP has data).
    fn service(&mut self, cx: &mut NodeCtx<'_>, conn: ConnId, readable: bool) {
        let id = cx.node.id();
        let Some(core) = cx.node.core.as_mut() else { return };
        let mut pipe_cx = Ctx { now: cx.now, node: id, core, trace: &mut *cx.trace, buf: &mut self.buf };
        if let Some(client) = cx.apps.clients.get_mut(&conn) {
            client.service(&mut pipe_cx, &mut self.clients[client.record], readable);
        }
    }

    /// The node's timer fired: run the client sessions and the server's sleeping programs
    /// whose deadline has come (the core runs its own sessions' timers).
    pub(crate) fn timeouts(&mut self, cx: &mut NodeCtx<'_>) {
        let now = cx.now;
        let id = cx.node.id();
        if let Some(core) = cx.node.core.as_mut() {
            for server in cx.apps.servers.values_mut().filter(|s| s.deadline().is_some_and(|t| t <= now)) {
                let mut server_cx = ServerCtx { now, node: id, core, trace: &mut *cx.trace };
                server.produce(&mut server_cx, &mut self.accepted[server.record]);
            }
        }
        let mut due = Vec::new();
        for (conn, client) in &mut cx.apps.clients {
            if client.session.poll_timeout().is_some_and(|t| t <= now) {
                client.session.handle_timeout(now);
                due.push(*conn);
            }
        }
        for conn in due {
            self.service(cx, conn, false);
        }
    }

    /// The SSH part of a crash at `now`: every connection in `apps` (the crashed node's)
    /// ends.
    pub(crate) fn crash(&mut self, now: Instant, apps: &SshNodeApps) {
        for client in apps.clients.values() {
            let r = &mut self.clients[client.record];
            r.closed_at.get_or_insert(now);
            r.session_end.get_or_insert_with(|| "node crashed".into());
        }
        for server in apps.servers.values() {
            let r = &mut self.accepted[server.record];
            r.closed_at.get_or_insert(now);
            r.session_end.get_or_insert_with(|| "node crashed".into());
        }
    }
}
