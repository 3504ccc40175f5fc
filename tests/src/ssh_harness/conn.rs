//! One harness connection: the TCP socket and the core's [`ServerSession`]; its channels
//! are meshd's [`ChannelHost`] (the same code the daemon runs them with).

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use bytes::BytesMut;
use ed25519_dalek::SigningKey;
use mesh_core::ssh::event::SessionEvent;
use mesh_core::ssh::server::ServerSession;
use mesh_core::time::Instant;
use meshd::ssh_service::{ChannelHost, ChannelPolicy, ChannelTarget, Tokens};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::HarnessConfig;

/// Stop reading children while this much is queued for the socket.
const SOCKET_QUEUE_LIMIT: usize = 4 * 1024 * 1024;
/// How often a finished child's exit is polled for (no SIGCHLD in the loop).
const EXIT_POLL: Duration = Duration::from_millis(5);

/// What a token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Socket,
    Channel(ChannelTarget),
}

/// Token allocation: token -> (connection slot, target).
#[derive(Debug)]
pub struct Registry {
    next: usize,
    map: HashMap<Token, (usize, Target)>,
    /// Tokens made before the connection had a slot.
    unbound: HashMap<Token, Target>,
}

impl Registry {
    pub fn new(first: usize) -> Self {
        Self { next: first, map: HashMap::new(), unbound: HashMap::new() }
    }

    fn token(&mut self, slot: Option<usize>, target: Target) -> Token {
        let token = Token(self.next);
        self.next += 1;
        match slot {
            Some(slot) => {
                self.map.insert(token, (slot, target));
            }
            None => {
                self.unbound.insert(token, target);
            }
        }
        token
    }

    pub fn bind_conn(&mut self, token: Token, slot: usize) {
        if let Some(target) = self.unbound.remove(&token) {
            self.map.insert(token, (slot, target));
        }
    }

    pub fn lookup(&self, token: Token) -> Option<(usize, Target)> {
        self.map.get(&token).copied()
    }

    fn slot_of(&self, token: Token) -> Option<usize> {
        self.map.get(&token).map(|(slot, _)| *slot)
    }

    fn forget(&mut self, token: Token) {
        self.map.remove(&token);
        self.unbound.remove(&token);
    }
}

/// The channel host's tokens, for the connection in `slot`.
struct SlotTokens<'a> {
    registry: &'a mut Registry,
    slot: Option<usize>,
}

impl Tokens for SlotTokens<'_> {
    fn token(&mut self, target: ChannelTarget) -> Token {
        self.registry.token(self.slot, Target::Channel(target))
    }

    fn forget(&mut self, token: Token) {
        self.registry.forget(token);
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    socket_token: Token,
    socket_fd: RawFd,
    socket_ready: bool,
    socket_writable: bool,
    session: ServerSession,
    out: VecDeque<BytesMut>,
    out_offset: usize,
    /// Bytes in `out` not yet written (kept, not summed per call: it is asked per read).
    out_len: usize,
    socket_closed: bool,
    host: ChannelHost,
    local_user: String,
    now: Instant,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        config: &HarnessConfig,
        seed: u64,
        now: Instant,
        mio: &mio::Registry,
        registry: &mut Registry,
    ) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let socket_fd = stream.as_raw_fd();
        let socket_token = registry.token(None, Target::Socket);
        mio.register(&mut SourceFd(&socket_fd), socket_token, Interest::READABLE | Interest::WRITABLE)?;
        let session = ServerSession::new(
            SigningKey::from_bytes(&config.host_key),
            config.server.clone(),
            mesh_sim::seeded_rng(seed),
            now,
        );
        // Every login is accepted as one account; forwarding binds loopback only.
        let policy = ChannelPolicy {
            local_user: config.local_user.clone(),
            allow_root: true,
            accept_env: config.accept_env.clone(),
            forwarding: mesh_core::policy::SshForwarding::ALL,
            remote_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        Ok(Self {
            stream,
            socket_token,
            socket_fd,
            socket_ready: true,
            socket_writable: true,
            session,
            out: VecDeque::new(),
            out_offset: 0,
            out_len: 0,
            socket_closed: false,
            host: ChannelHost::new(policy, peer, local, now),
            local_user: config.local_user.clone(),
            now,
        })
    }

    pub fn socket_token(&self) -> Token {
        self.socket_token
    }

    /// How long the loop may sleep for this connection's sake.
    pub fn wants_wakeup(&self, now: Instant) -> Option<Duration> {
        if self.socket_ready && !self.socket_closed && self.out.is_empty() {
            // Input left unread by the per-turn bound: no new readiness edge will come.
            return Some(Duration::ZERO);
        }
        let timer = self.session.poll_timeout().map(|t| t.saturating_duration_since(now));
        let exit_pending = self.host.has_processes();
        match (timer, exit_pending) {
            (Some(t), true) => Some(t.min(EXIT_POLL)),
            (Some(t), false) => Some(t),
            (None, true) => Some(EXIT_POLL),
            (None, false) => None,
        }
    }

    pub fn mark_ready(&mut self, target: Target, readable: bool, writable: bool) {
        match target {
            Target::Socket => {
                self.socket_ready |= readable;
                self.socket_writable |= writable;
            }
            Target::Channel(target) => self.host.mark_ready(target, readable, writable),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.socket_closed || self.session.is_closed() && self.out.is_empty()
    }

    /// Everything this connection can do now.
    pub fn service(&mut self, now: Instant, mio: &mio::Registry, registry: &mut Registry) {
        self.now = now;
        let slot = registry.slot_of(self.socket_token);
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        let mut tokens = SlotTokens { registry, slot };
        for _ in 0..64 {
            let mut progress = self.read_socket();
            progress |= self.handle_events(mio, &mut tokens);
            let budget = SOCKET_QUEUE_LIMIT.saturating_sub(self.queued());
            progress |= self.host.service(&mut self.session, now, budget, mio, &mut tokens);
            progress |= self.flush_socket();
            if !progress {
                break;
            }
        }
    }

    /// Read what the socket has, a bounded amount per call and not while our own output
    /// to this peer is backed up (a peer that does not read gets no more service); whether
    /// anything was read.
    fn read_socket(&mut self) -> bool {
        let mut buf = [0u8; 64 * 1024];
        let mut read = false;
        for _ in 0..16 {
            let backed_up = self.out_len > SOCKET_QUEUE_LIMIT;
            if !self.socket_ready || self.socket_closed || backed_up {
                break;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.socket_closed = true;
                }
                Ok(n) => {
                    read = true;
                    self.session.handle_input(self.now, &buf[..n]);
                    // Acknowledge at once: a client with Nagle on (OpenSSH without a tty)
                    // holds its next small packet until our ACK, and a delayed ACK costs
                    // 40 ms per round trip in the login. Linux resets the flag, so per read.
                    let _ = rustix::net::sockopt::set_tcp_quickack(&self.stream, true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.socket_closed = true,
            }
        }
        read
    }

    fn flush_socket(&mut self) -> bool {
        let mut progress = false;
        while let Some(packet) = self.session.poll_transmit() {
            self.out_len += packet.len();
            self.out.push_back(packet);
        }
        while self.socket_writable && !self.out.is_empty() && !self.socket_closed {
            let mut slices = [IoSlice::new(&[]); 64];
            let mut count = 0;
            for (slot, b) in slices.iter_mut().zip(&self.out) {
                *slot = IoSlice::new(if count == 0 { &b[self.out_offset..] } else { &b[..] });
                count += 1;
            }
            match self.stream.write_vectored(&slices[..count]) {
                Ok(mut n) => {
                    progress = true;
                    self.out_len -= n;
                    while n > 0 {
                        let Some(front) = self.out.front() else { break };
                        let left = front.len() - self.out_offset;
                        if n >= left {
                            n -= left;
                            self.out.pop_front();
                            self.out_offset = 0;
                        } else {
                            self.out_offset += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket_writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.socket_closed = true,
            }
        }
        progress
    }

    fn queued(&self) -> usize {
        self.session.pending_transmit() + self.out_len
    }

    fn handle_events(&mut self, mio: &mio::Registry, tokens: &mut SlotTokens<'_>) -> bool {
        let mut progress = false;
        while let Some(event) = self.session.poll_event() {
            progress = true;
            match event {
                SessionEvent::AuthRequest { user } => {
                    tracing::debug!(%user, local = %self.local_user, "harness accepts login");
                    self.session.accept_auth(self.now);
                }
                SessionEvent::Connection(event) => self.host.on_event(&mut self.session, self.now, event, mio, tokens),
                SessionEvent::Closed(error) => tracing::debug!(%error, "harness connection closed"),
                _ => {}
            }
        }
        progress
    }

    /// The connection is over: hang up every child, close every socket.
    pub fn shutdown(&mut self, mio: &mio::Registry, registry: &mut Registry) {
        let slot = registry.slot_of(self.socket_token);
        self.host.shutdown(mio, &mut SlotTokens { registry, slot });
        let _ = mio.deregister(&mut SourceFd(&self.socket_fd));
        registry.forget(self.socket_token);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
