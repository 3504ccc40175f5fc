//! SSH on port 22, composed into the node: every connection the core TCP stack accepts on
//! port 22 of a mesh address gets a [`ServerSession`] bound to the [`PeerId`] that carried
//! its SYN, and the node moves the bytes between the two itself. The application sees
//! [`SshEvent`]s tagged with that `PeerId` and acts on a session through
//! [`super::Node::ssh_session`]; it never handles the connection or carries identity by
//! hand, so a session cannot be attributed to anyone but the peer WireGuard authenticated.
//!
//! Fairness: unauthenticated sessions (the login grace time, a held `check` decision) are
//! bounded per peer and in all, as OpenSSH's MaxStartups/PerSourceMaxStartups bound them,
//! so one peer, allowed or not, cannot hold every login slot. A connection over its
//! peer's share is reset at once.
//!
//! Back-pressure: session output goes to the TCP send buffer as far as it takes it; the
//! rest of a packet waits here for the connection to become writable. The application
//! stops writing channel data while [`super::Node::ssh_budget`] is 0 and is told by
//! [`SshEvent::Writable`] when there is room again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use ed25519_dalek::SigningKey;

use super::NodeEvent;
use crate::rng::Rng;
use crate::ssh::event::SessionEvent;
use crate::ssh::server::{ServerConfig, ServerSession};
use crate::ssh::validate::SshConfigError;
use crate::tcp::{ConnId, TcpStack};
use crate::time::Instant;
use crate::wireguard::PeerId;

/// Session output (queued in the session plus waiting here) above which the application
/// should stop writing channel data: well below the TCP send buffer, well above one packet.
pub const SSH_HIGH_WATER: usize = 512 << 10;
/// Bytes read from TCP per call.
const READ_CHUNK: usize = 64 << 10;

/// The node's SSH server.
#[derive(Clone)]
pub struct SshServerConfig {
    pub host_key: SigningKey,
    pub session: ServerConfig,
    /// Sessions one peer may have before authentication (OpenSSH: PerSourceMaxStartups).
    /// 16: a node running a burst of logins (Ansible's forks, a CI fan-out) gets them all,
    /// and a held check counts here while it waits.
    pub max_unauthenticated_per_peer: usize,
    /// Sessions before authentication in all (OpenSSH: MaxStartups).
    pub max_unauthenticated: usize,
}

impl SshServerConfig {
    pub fn new(host_key: SigningKey) -> Self {
        Self { host_key, session: ServerConfig::default(), max_unauthenticated_per_peer: 16, max_unauthenticated: 128 }
    }

    /// The session settings, and shares that let at least one login in.
    pub fn validate(&self) -> Result<(), SshConfigError> {
        self.session.validate()?;
        if self.max_unauthenticated_per_peer == 0 {
            return Err(SshConfigError::Zero("max_unauthenticated_per_peer"));
        }
        if self.max_unauthenticated == 0 {
            return Err(SshConfigError::Zero("max_unauthenticated"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for SshServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshServerConfig")
            .field("host_key", &self.host_key.verifying_key())
            .field("session", &self.session)
            .field("max_unauthenticated_per_peer", &self.max_unauthenticated_per_peer)
            .field("max_unauthenticated", &self.max_unauthenticated)
            .finish()
    }
}

/// A session's handle. Made only by the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u64);

impl SessionId {
    /// The id as a number (for logs and traces).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// What the application hears of the SSH server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshEvent {
    /// A peer connected to port 22; its session runs.
    Opened { session: SessionId, peer: PeerId, remote: SocketAddr },
    /// Something the session reports (an auth request to decide, channel events, ...).
    Session { session: SessionId, peer: PeerId, event: SessionEvent },
    /// The session's output drained below [`SSH_HIGH_WATER`]: write channel data again.
    Writable { session: SessionId },
    /// The session and its connection are gone.
    Closed { session: SessionId, peer: PeerId },
}

/// Counters of the SSH server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SshStats {
    pub sessions: u64,
    /// Connections reset because their peer (or everyone) had too many logins under way.
    pub refused_over_share: u64,
}

#[derive(Debug)]
struct Hosted {
    session: ServerSession,
    conn: ConnId,
    peer: PeerId,
    /// The rest of a session packet the TCP send buffer did not take.
    unsent: Option<BytesMut>,
    /// Counted against the peer's unauthenticated share until authenticated.
    unauthenticated: bool,
    /// Output went above the high-water mark: a `Writable` is owed.
    blocked: bool,
    /// We closed our direction (the session ended and its last bytes are in TCP).
    closing: bool,
    /// The peer's FIN was read.
    peer_eof: bool,
    deadline: Option<Instant>,
}

impl Hosted {
    fn queued(&self) -> usize {
        self.session.pending_transmit() + self.unsent.as_ref().map_or(0, BytesMut::len)
    }
}

/// The SSH sessions of one node.
#[derive(Debug)]
pub(super) struct SshServer {
    config: SshServerConfig,
    rng: Rng,
    sessions: BTreeMap<SessionId, Hosted>,
    by_conn: BTreeMap<ConnId, SessionId>,
    deadlines: BTreeSet<(Instant, SessionId)>,
    unauthenticated: BTreeMap<PeerId, usize>,
    unauthenticated_total: usize,
    next: u64,
    buf: Box<[u8]>,
    stats: SshStats,
}

/// What a service call may touch besides the SSH server.
pub(super) struct Io<'a> {
    pub(super) now: Instant,
    pub(super) tcp: &'a mut TcpStack,
    pub(super) events: &'a mut VecDeque<NodeEvent>,
}

impl SshServer {
    pub(super) fn new(config: SshServerConfig, rng: Rng) -> Self {
        Self {
            config,
            rng,
            sessions: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            unauthenticated: BTreeMap::new(),
            unauthenticated_total: 0,
            next: 0,
            buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
            stats: SshStats::default(),
        }
    }

    pub(super) fn host_key(&self) -> &SigningKey {
        &self.config.host_key
    }

    pub(super) fn set_session_config(&mut self, config: ServerConfig) {
        self.config.session = config;
    }

    pub(super) fn stats(&self) -> &SshStats {
        &self.stats
    }

    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.by_conn.contains_key(&conn)
    }

    pub(super) fn peer(&self, session: SessionId) -> Option<PeerId> {
        self.sessions.get(&session).map(|h| h.peer)
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Room for channel data before the session's output counts as full.
    pub(super) fn budget(&mut self, session: SessionId) -> usize {
        let Some(hosted) = self.sessions.get_mut(&session) else { return 0 };
        let room = SSH_HIGH_WATER.saturating_sub(hosted.queued());
        if room == 0 {
            hosted.blocked = true;
        }
        room
    }

    /// A connection accepted on port 22 from `peer`: start its session, or reset it when
    /// the peer (or everyone) has too many logins under way.
    pub(super) fn accepted(&mut self, io: &mut Io<'_>, conn: ConnId, peer: PeerId, remote: SocketAddr) {
        let share = self.unauthenticated.get(&peer).copied().unwrap_or(0);
        if share >= self.config.max_unauthenticated_per_peer
            || self.unauthenticated_total >= self.config.max_unauthenticated
        {
            self.stats.refused_over_share += 1;
            tracing::debug!(%peer, share, "SSH connection over the login share reset");
            let _ = io.tcp.abort(io.now, conn);
            return;
        }
        *self.unauthenticated.entry(peer).or_default() += 1;
        self.unauthenticated_total += 1;
        let id = SessionId(self.next);
        self.next += 1;
        self.stats.sessions += 1;
        let session =
            ServerSession::new(self.config.host_key.clone(), self.config.session.clone(), self.rng.fork(), io.now);
        let hosted = Hosted {
            session,
            conn,
            peer,
            unsent: None,
            unauthenticated: true,
            blocked: false,
            closing: false,
            peer_eof: false,
            deadline: None,
        };
        self.sessions.insert(id, hosted);
        self.by_conn.insert(conn, id);
        io.events.push_back(NodeEvent::Ssh(SshEvent::Opened { session: id, peer, remote }));
        self.service(io, id);
    }

    /// TCP has data (or the peer's FIN) for an SSH connection.
    pub(super) fn readable(&mut self, io: &mut Io<'_>, conn: ConnId) {
        let Some(&id) = self.by_conn.get(&conn) else { return };
        let Some(hosted) = self.sessions.get_mut(&id) else { return };
        while !hosted.peer_eof {
            match io.tcp.recv(conn, &mut self.buf) {
                Ok(0) => {
                    // The end of the stream is the stack's word, not an empty read.
                    hosted.peer_eof = io.tcp.peer_finished(conn).unwrap_or(true);
                    break;
                }
                Ok(n) => hosted.session.handle_input(io.now, &self.buf[..n]),
                Err(_) => break,
            }
        }
        self.service(io, id);
    }

    /// The connection's send buffer has room again.
    pub(super) fn writable(&mut self, io: &mut Io<'_>, conn: ConnId) {
        if let Some(&id) = self.by_conn.get(&conn) {
            self.service(io, id);
        }
    }

    /// The connection is gone: so is its session.
    pub(super) fn closed(&mut self, io: &mut Io<'_>, conn: ConnId) {
        let Some(id) = self.by_conn.remove(&conn) else { return };
        let Some(hosted) = self.sessions.remove(&id) else { return };
        if let Some(at) = hosted.deadline {
            self.deadlines.remove(&(at, id));
        }
        if hosted.unauthenticated {
            self.release(hosted.peer);
        }
        io.events.push_back(NodeEvent::Ssh(SshEvent::Closed { session: id, peer: hosted.peer }));
    }

    /// Run the sessions whose deadline has come.
    pub(super) fn timeout(&mut self, io: &mut Io<'_>) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > io.now {
                break;
            }
            self.deadlines.remove(&(at, id));
            if let Some(hosted) = self.sessions.get_mut(&id) {
                hosted.deadline = None;
                hosted.session.handle_timeout(io.now);
            }
            self.service(io, id);
        }
    }

    /// Let the application act on a session, then carry out what it did.
    pub(super) fn with<R>(
        &mut self,
        io: &mut Io<'_>,
        id: SessionId,
        f: impl FnOnce(&mut ServerSession) -> R,
    ) -> Option<R> {
        let result = f(&mut self.sessions.get_mut(&id)?.session);
        self.service(io, id);
        Some(result)
    }

    fn release(&mut self, peer: PeerId) {
        self.unauthenticated_total = self.unauthenticated_total.saturating_sub(1);
        if let Some(n) = self.unauthenticated.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.unauthenticated.remove(&peer);
            }
        }
    }

    /// After any input: the session's events to the application, its output to TCP, the
    /// connection closed when the session is over, its deadline rescheduled.
    fn service(&mut self, io: &mut Io<'_>, id: SessionId) {
        let Some(hosted) = self.sessions.get_mut(&id) else { return };
        if hosted.peer_eof && !hosted.session.is_closed() {
            hosted.session.disconnect(io.now, "connection closed by peer");
        }
        // The login share is released once the session is authenticated, or over (a peer
        // that never closes its TCP side after a denial must not keep holding it).
        let mut released = false;
        while let Some(event) = hosted.session.poll_event() {
            let done = matches!(event, SessionEvent::Authenticated { .. } | SessionEvent::Closed(_));
            if done && hosted.unauthenticated {
                hosted.unauthenticated = false;
                released = true;
            }
            io.events.push_back(NodeEvent::Ssh(SshEvent::Session { session: id, peer: hosted.peer, event }));
        }
        let mut broken = false;
        while !hosted.closing {
            let Some(mut packet) = hosted.unsent.take().or_else(|| hosted.session.poll_transmit()) else { break };
            match io.tcp.send(hosted.conn, &packet) {
                Ok(n) if n < packet.len() => {
                    packet.advance(n);
                    hosted.unsent = Some(packet);
                    break;
                }
                // Copied into the TCP send buffer: the packet's memory carries the next one.
                Ok(_) => hosted.session.recycle(packet),
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        let queued = hosted.queued();
        if queued >= SSH_HIGH_WATER {
            hosted.blocked = true;
        } else if hosted.blocked && queued < SSH_HIGH_WATER / 2 {
            hosted.blocked = false;
            io.events.push_back(NodeEvent::Ssh(SshEvent::Writable { session: id }));
        }
        let (conn, peer) = (hosted.conn, hosted.peer);
        if broken {
            let _ = io.tcp.abort(io.now, conn);
        } else if hosted.session.is_closed() && queued == 0 && !hosted.closing {
            // The DISCONNECT is in TCP's send buffer: close our direction; the connection
            // ends when the peer closes too.
            hosted.closing = true;
            if io.tcp.close(io.now, conn).is_err() {
                let _ = io.tcp.abort(io.now, conn);
            }
        }
        let deadline = hosted.session.poll_timeout();
        crate::time::reschedule(&mut self.deadlines, id, &mut hosted.deadline, deadline);
        io.tcp.flush(io.now);
        if released {
            self.release(peer);
        }
    }
}
