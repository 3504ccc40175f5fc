//! One harness connection: the TCP socket, the core's [`ServerSession`], and per channel
//! either a process of the session runtime or a forwarded TCP connection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use bytes::BytesMut;
use ed25519_dalek::SigningKey;
use mesh_core::ssh::channel::{open_failure, ChannelId, ChannelKind, ChannelRequest, GlobalRequest};
use mesh_core::ssh::connection::ConnectionEvent;
use mesh_core::ssh::event::SessionEvent;
use mesh_core::ssh::server::ServerSession;
use mesh_core::time::Instant;
use meshd::session::{ExitStatus, PtyRequest, Session, SessionRequest};
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
    ChildIn(ChannelId),
    ChildOut(ChannelId),
    ChildErr(ChannelId),
    Forward(ChannelId),
    /// A port listening for `ssh -R`, by the port it is bound to.
    Listener(u16),
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

/// A registered descriptor and whether it is ready.
#[derive(Debug)]
struct Io {
    token: Token,
    fd: RawFd,
    ready: bool,
    /// Writable, for a descriptor used both ways (a forwarded socket).
    writable: bool,
    /// End of output seen (read side).
    eof: bool,
}

#[derive(Debug)]
enum Backend {
    /// A session channel before shell/exec/subsystem.
    Pending,
    Process {
        session: Session,
        stdin: Option<Io>,
        stdout: Option<Io>,
        stderr: Option<Io>,
    },
    Forward {
        stream: TcpStream,
        io: Io,
        read_closed: bool,
    },
}

#[derive(Debug)]
struct Chan {
    backend: Backend,
    pty: Option<PtyRequest>,
    env: Vec<(String, String)>,
    /// Client data not yet taken by the child or the forwarded socket.
    inbound: VecDeque<u8>,
    client_eof: bool,
    inbound_closed: bool,
    done: bool,
}

impl Chan {
    fn new(backend: Backend) -> Self {
        Self {
            backend,
            pty: None,
            env: Vec::new(),
            inbound: VecDeque::new(),
            client_eof: false,
            inbound_closed: false,
            done: false,
        }
    }
}

/// A port the client asked us to listen on (`tcpip-forward`).
#[derive(Debug)]
struct RemoteForward {
    /// The address and port as the client asked (the channel names them back).
    address: String,
    requested: u32,
    bound: u16,
    listener: mio::net::TcpListener,
    io: Io,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    socket: Io,
    socket_writable: bool,
    peer: SocketAddr,
    local: SocketAddr,
    session: ServerSession,
    out: VecDeque<BytesMut>,
    out_offset: usize,
    /// Bytes in `out` not yet written (kept, not summed per call: it is asked per read).
    out_len: usize,
    socket_closed: bool,
    channels: BTreeMap<ChannelId, Chan>,
    local_user: String,
    accept_env: Vec<String>,
    now: Instant,
    /// Read buffer for child output, reused.
    scratch: Vec<u8>,
    remote_forwards: Vec<RemoteForward>,
    /// Connections accepted on a remote-forward port, waiting for their channel.
    opening: BTreeMap<ChannelId, TcpStream>,
}

fn register(
    mio: &mio::Registry,
    registry: &mut Registry,
    slot: Option<usize>,
    fd: RawFd,
    target: Target,
    interest: Interest,
) -> io::Result<Io> {
    let token = registry.token(slot, target);
    mio.register(&mut SourceFd(&fd), token, interest)?;
    Ok(Io { token, fd, ready: true, writable: true, eof: false })
}

fn deregister(mio: &mio::Registry, registry: &mut Registry, io: &Io) {
    let _ = mio.deregister(&mut SourceFd(&io.fd));
    registry.forget(io.token);
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
        let socket =
            register(mio, registry, None, stream.as_raw_fd(), Target::Socket, Interest::READABLE | Interest::WRITABLE)?;
        let session = ServerSession::new(
            SigningKey::from_bytes(&config.host_key),
            config.server.clone(),
            mesh_sim::seeded_rng(seed),
            now,
        );
        Ok(Self {
            stream,
            socket,
            socket_writable: true,
            peer,
            local,
            session,
            out: VecDeque::new(),
            out_offset: 0,
            out_len: 0,
            socket_closed: false,
            channels: BTreeMap::new(),
            local_user: config.local_user.clone(),
            accept_env: config.accept_env.clone(),
            now,
            scratch: Vec::new(),
            remote_forwards: Vec::new(),
            opening: BTreeMap::new(),
        })
    }

    pub fn socket_token(&self) -> Token {
        self.socket.token
    }

    /// How long the loop may sleep for this connection's sake.
    pub fn wants_wakeup(&self, now: Instant) -> Option<Duration> {
        if self.socket.ready && !self.socket_closed && self.out.is_empty() {
            // Input left unread by the per-turn bound: no new readiness edge will come.
            return Some(Duration::ZERO);
        }
        let timer = self.session.poll_timeout().map(|t| t.saturating_duration_since(now));
        let exit_pending = self.channels.values().any(|c| matches!(c.backend, Backend::Process { .. }));
        match (timer, exit_pending) {
            (Some(t), true) => Some(t.min(EXIT_POLL)),
            (Some(t), false) => Some(t),
            (None, true) => Some(EXIT_POLL),
            (None, false) => None,
        }
    }

    pub fn mark_ready(&mut self, target: Target, readable: bool, writable: bool) {
        let chan_io =
            |chans: &mut BTreeMap<ChannelId, Chan>, id: ChannelId, pick: fn(&mut Backend) -> Option<&mut Io>| {
                if let Some(io) = chans.get_mut(&id).and_then(|c| pick(&mut c.backend)) {
                    io.ready = true;
                }
            };
        match target {
            Target::Socket => {
                self.socket.ready |= readable;
                self.socket_writable |= writable;
            }
            Target::ChildIn(id) => chan_io(&mut self.channels, id, |b| match b {
                Backend::Process { stdin, .. } => stdin.as_mut(),
                _ => None,
            }),
            Target::ChildOut(id) => chan_io(&mut self.channels, id, |b| match b {
                Backend::Process { stdout, .. } => stdout.as_mut(),
                _ => None,
            }),
            Target::ChildErr(id) => chan_io(&mut self.channels, id, |b| match b {
                Backend::Process { stderr, .. } => stderr.as_mut(),
                _ => None,
            }),
            Target::Listener(port) => {
                if let Some(f) = self.remote_forwards.iter_mut().find(|f| f.bound == port) {
                    f.io.ready = true;
                }
            }
            Target::Forward(id) => {
                if let Some(Backend::Forward { io, .. }) = self.channels.get_mut(&id).map(|c| &mut c.backend) {
                    io.ready |= readable;
                    io.writable |= writable;
                }
            }
        }
    }

    pub fn is_finished(&self) -> bool {
        self.socket_closed || self.session.is_closed() && self.out.is_empty()
    }

    /// Everything this connection can do now.
    pub fn service(&mut self, now: Instant, mio: &mio::Registry, registry: &mut Registry) {
        self.now = now;
        let slot = registry.slot_of(self.socket.token);
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
        }
        for _ in 0..64 {
            let mut progress = self.read_socket();
            progress |= self.accept_forwarded();
            progress |= self.handle_events(mio, registry, slot);
            for id in self.channels.keys().copied().collect::<Vec<_>>() {
                progress |= self.feed_channel(id, mio, registry);
                progress |= self.drain_channel(id);
                progress |= self.finish_channel(id, mio, registry);
            }
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
            if !self.socket.ready || self.socket_closed || backed_up {
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket.ready = false,
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

    fn handle_events(&mut self, mio: &mio::Registry, registry: &mut Registry, slot: Option<usize>) -> bool {
        let mut progress = false;
        while let Some(event) = self.session.poll_event() {
            progress = true;
            match event {
                SessionEvent::AuthRequest { user } => {
                    tracing::debug!(%user, local = %self.local_user, "harness accepts login");
                    self.session.accept_auth(self.now);
                }
                SessionEvent::Connection(event) => self.on_connection_event(event, mio, registry, slot),
                SessionEvent::Closed(error) => tracing::debug!(%error, "harness connection closed"),
                _ => {}
            }
        }
        progress
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent,
        mio: &mio::Registry,
        registry: &mut Registry,
        slot: Option<usize>,
    ) {
        match event {
            ConnectionEvent::OpenRequest { channel, kind } => match kind {
                ChannelKind::Session => {
                    self.channels.insert(channel, Chan::new(Backend::Pending));
                    if let Some(mut c) = self.session.channels(self.now) {
                        c.accept(channel)
                    };
                }
                ChannelKind::DirectTcpip { host, port, .. } => {
                    let started = connect(&host, port)
                        .map(|stream| self.start_forward(channel, stream, mio, registry, slot))
                        .map_err(|e| e.to_string());
                    match started {
                        Ok(true) => {
                            if let Some(mut c) = self.session.channels(self.now) {
                                c.accept(channel)
                            }
                        }
                        Ok(false) => {
                            if let Some(mut c) = self.session.channels(self.now) {
                                c.refuse(channel, open_failure::CONNECT_FAILED, "register")
                            }
                        }
                        Err(e) => {
                            if let Some(mut c) = self.session.channels(self.now) {
                                c.refuse(channel, open_failure::CONNECT_FAILED, &e)
                            }
                        }
                    }
                }
                _ => {
                    if let Some(mut c) = self.session.channels(self.now) {
                        c.refuse(channel, open_failure::ADMINISTRATIVELY_PROHIBITED, "not here")
                    }
                }
            },
            ConnectionEvent::Request { channel, request, want_reply } => {
                let ok = self.on_request(channel, request, mio, registry, slot);
                if want_reply {
                    if let Some(mut c) = self.session.channels(self.now) {
                        c.reply(channel, ok)
                    };
                }
            }
            ConnectionEvent::Data { channel, data } | ConnectionEvent::ExtendedData { channel, data, .. } => {
                match self.channels.get_mut(&channel) {
                    Some(c) if !c.inbound_closed => c.inbound.extend(data.iter()),
                    _ => {
                        if let Some(mut c) = self.session.channels(self.now) {
                            c.consume(channel, data.len())
                        }
                    }
                }
            }
            ConnectionEvent::Eof { channel } => {
                if let Some(c) = self.channels.get_mut(&channel) {
                    c.client_eof = true;
                }
            }
            ConnectionEvent::Closed { channel } => {
                if let Some(mut c) = self.channels.remove(&channel) {
                    release(&mut c.backend, mio, registry);
                }
            }
            ConnectionEvent::GlobalRequest { request, want_reply } => {
                let answer = self.on_global_request(request, mio, registry, slot);
                if want_reply {
                    let (ok, port) = answer.map_or((false, None), |port| (true, port));
                    if let Some(mut c) = self.session.channels(self.now) {
                        c.global_reply(ok, port)
                    };
                }
            }
            ConnectionEvent::Opened { channel } => {
                if let Some(stream) = self.opening.remove(&channel) {
                    self.start_forward(channel, stream, mio, registry, slot);
                }
            }
            ConnectionEvent::OpenFailed { channel, .. } => {
                self.opening.remove(&channel);
            }
            _ => {}
        }
    }

    /// `tcpip-forward` / `cancel-tcpip-forward`: `Some(port to report)` on success. Ports are
    /// bound on 127.0.0.1 whatever address the client names (test harness: loopback only).
    fn on_global_request(
        &mut self,
        request: GlobalRequest,
        mio: &mio::Registry,
        registry: &mut Registry,
        slot: Option<usize>,
    ) -> Option<Option<u32>> {
        match request {
            GlobalRequest::TcpipForward { address, port } => {
                let wanted = u16::try_from(port).ok()?;
                let mut listener = mio::net::TcpListener::bind(([127, 0, 0, 1], wanted).into()).ok()?;
                let bound = listener.local_addr().ok()?.port();
                let token = registry.token(slot, Target::Listener(bound));
                mio.register(&mut listener, token, Interest::READABLE).ok()?;
                let io = Io { token, fd: listener.as_raw_fd(), ready: true, writable: false, eof: false };
                self.remote_forwards.push(RemoteForward { address, requested: port, bound, listener, io });
                Some((port == 0).then_some(u32::from(bound)))
            }
            GlobalRequest::CancelTcpipForward { port, .. } => {
                let at = self.remote_forwards.iter().position(|f| f.requested == port || u32::from(f.bound) == port)?;
                let mut f = self.remote_forwards.remove(at);
                let _ = mio.deregister(&mut f.listener);
                registry.forget(f.io.token);
                Some(None)
            }
            GlobalRequest::Other(_) => None,
        }
    }

    /// Connections arriving on remote-forward ports become forwarded-tcpip channels.
    fn accept_forwarded(&mut self) -> bool {
        let mut progress = false;
        for i in 0..self.remote_forwards.len() {
            while self.remote_forwards[i].io.ready {
                let f = &mut self.remote_forwards[i];
                match f.listener.accept() {
                    Ok((stream, peer)) => {
                        let kind = ChannelKind::ForwardedTcpip {
                            address: f.address.clone(),
                            port: u32::from(f.bound),
                            originator: peer.ip().to_string(),
                            originator_port: u32::from(peer.port()),
                        };
                        if let Some(id) = self.session.channels(self.now).and_then(|mut c| c.open(&kind)) {
                            self.opening.insert(id, stream);
                        }
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => f.io.ready = false,
                    Err(_) => f.io.ready = false,
                }
            }
        }
        progress
    }

    /// A channel now carries `stream` both ways.
    fn start_forward(
        &mut self,
        channel: ChannelId,
        stream: TcpStream,
        mio: &mio::Registry,
        registry: &mut Registry,
        slot: Option<usize>,
    ) -> bool {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match register(mio, registry, slot, stream.as_raw_fd(), Target::Forward(channel), interest) {
            Ok(io) => {
                self.channels.insert(channel, Chan::new(Backend::Forward { stream, io, read_closed: false }));
                true
            }
            Err(_) => false,
        }
    }

    fn on_request(
        &mut self,
        id: ChannelId,
        request: ChannelRequest,
        mio: &mio::Registry,
        registry: &mut Registry,
        slot: Option<usize>,
    ) -> bool {
        let accept_env = self.accept_env.clone();
        let Some(chan) = self.channels.get_mut(&id) else { return false };
        let (command, subsystem) = match request {
            ChannelRequest::Pty(p) if matches!(chan.backend, Backend::Pending) => {
                chan.pty = Some(p);
                return true;
            }
            ChannelRequest::Env { name, value } => {
                let accepted = accept_env.iter().any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => *pattern == name,
                });
                if accepted && chan.env.len() < 64 {
                    chan.env.push((name, value));
                }
                return accepted;
            }
            ChannelRequest::WindowChange { cols, rows, width_px, height_px } => {
                return match &chan.backend {
                    Backend::Process { session, .. } => session.resize(cols, rows, width_px, height_px).is_ok(),
                    _ => false,
                };
            }
            ChannelRequest::Signal(name) => {
                return match &chan.backend {
                    Backend::Process { session, .. } => session.signal(&name).is_ok(),
                    _ => false,
                };
            }
            ChannelRequest::Shell => (None, None),
            ChannelRequest::Exec(command) => (Some(String::from_utf8_lossy(&command).into_owned()), None),
            ChannelRequest::Subsystem(name) => (None, Some(name)),
            _ => return false,
        };
        if !matches!(chan.backend, Backend::Pending) {
            return false;
        }
        let request = SessionRequest {
            user: self.local_user.clone(),
            allow_root: true,
            command,
            pty: chan.pty.clone(),
            env: chan.env.clone(),
            ssh_client: format!("{} {} {}", self.peer.ip(), self.peer.port(), self.local.port()),
            ssh_connection: format!(
                "{} {} {} {}",
                self.peer.ip(),
                self.peer.port(),
                self.local.ip(),
                self.local.port()
            ),
        };
        let spawned = match &subsystem {
            Some(name) => Session::spawn_subsystem(&request, name),
            None => Session::spawn(&request),
        };
        let session = match spawned {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "harness could not start the session");
                return false;
            }
        };
        let mut reg = |fd: Option<std::os::fd::BorrowedFd<'_>>, target: Target, interest: Interest| {
            fd.and_then(|fd| register(mio, registry, slot, fd.as_raw_fd(), target, interest).ok())
        };
        let stdin = reg(session.stdin_fd(), Target::ChildIn(id), Interest::WRITABLE);
        let stdout = reg(session.stdout_fd(), Target::ChildOut(id), Interest::READABLE);
        let stderr = reg(session.stderr_fd(), Target::ChildErr(id), Interest::READABLE);
        chan.backend = Backend::Process { session, stdin, stdout, stderr };
        true
    }

    /// Client data into the child's stdin or the forwarded socket.
    fn feed_channel(&mut self, id: ChannelId, mio: &mio::Registry, registry: &mut Registry) -> bool {
        let Some(chan) = self.channels.get_mut(&id) else { return false };
        let mut taken = 0usize;
        loop {
            if chan.inbound.is_empty() {
                break;
            }
            let (front, _) = chan.inbound.as_slices();
            let result = match &mut chan.backend {
                Backend::Process { session, stdin: Some(io), .. } if io.ready => session.write_stdin(front),
                Backend::Forward { stream, io, .. } if io.writable => stream.write(front),
                _ => break,
            };
            match result {
                Ok(n) => {
                    chan.inbound.drain(..n);
                    taken += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match &mut chan.backend {
                        Backend::Process { stdin: Some(io), .. } => io.ready = false,
                        Backend::Forward { io, .. } => io.writable = false,
                        _ => {}
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The child closed its stdin: drop what it will never read.
                    taken += chan.inbound.len();
                    chan.inbound.clear();
                    chan.inbound_closed = true;
                    break;
                }
            }
        }
        let mut progress = taken > 0;
        if chan.client_eof && chan.inbound.is_empty() && !chan.inbound_closed {
            match &mut chan.backend {
                Backend::Process { session, stdin, .. } if stdin.is_some() => {
                    if let Some(io) = stdin.take() {
                        deregister(mio, registry, &io);
                    }
                    session.close_stdin();
                    chan.inbound_closed = true;
                    progress = true;
                }
                Backend::Forward { stream, .. } => {
                    let _ = stream.shutdown(Shutdown::Write);
                    chan.inbound_closed = true;
                    progress = true;
                }
                _ => {}
            }
        }
        if taken > 0 {
            if let Some(mut c) = self.session.channels(self.now) {
                c.consume(id, taken)
            };
        }
        progress
    }

    /// Child output (or the forwarded socket's data) to the client, as far as the window
    /// and the socket queue allow.
    fn drain_channel(&mut self, id: ChannelId) -> bool {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(64 * 1024, 0);
        let progress = self.drain_into(id, &mut buf);
        self.scratch = buf;
        progress
    }

    fn drain_into(&mut self, id: ChannelId, buf: &mut [u8]) -> bool {
        let mut progress = false;
        for stream_no in [0u32, 1] {
            loop {
                let room = self.session.channels(self.now).map_or(0, |mut c| c.writable(id)).min(buf.len());
                if room == 0 || self.queued() > SOCKET_QUEUE_LIMIT {
                    return progress;
                }
                let Some(chan) = self.channels.get_mut(&id) else { return progress };
                let result = match (&mut chan.backend, stream_no) {
                    (Backend::Process { session, stdout: Some(io), .. }, 0) if io.ready && !io.eof => {
                        session.read_stdout(&mut buf[..room])
                    }
                    (Backend::Process { session, stderr: Some(io), .. }, 1) if io.ready && !io.eof => {
                        session.read_stderr(&mut buf[..room])
                    }
                    (Backend::Forward { stream, io, read_closed: false }, 0) if io.ready => {
                        stream.read(&mut buf[..room])
                    }
                    _ => break,
                };
                match result {
                    Ok(0) => {
                        match (&mut chan.backend, stream_no) {
                            (Backend::Process { stdout, .. }, 0) => {
                                if let Some(io) = stdout.as_mut() {
                                    io.ready = false;
                                    io.eof = true;
                                }
                            }
                            (Backend::Process { stderr, .. }, _) => {
                                if let Some(io) = stderr.as_mut() {
                                    io.ready = false;
                                    io.eof = true;
                                }
                            }
                            (Backend::Forward { read_closed, .. }, _) => *read_closed = true,
                            _ => {}
                        }
                        progress = true;
                        break;
                    }
                    Ok(n) => {
                        let written = if stream_no == 0 {
                            self.session.channels(self.now).map_or(0, |mut c| c.write(id, &buf[..n]))
                        } else {
                            self.session.channels(self.now).map_or(0, |mut c| c.write_extended(id, 1, &buf[..n]))
                        };
                        debug_assert_eq!(written, n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match (&mut chan.backend, stream_no) {
                            (Backend::Process { stdout: Some(io), .. }, 0)
                            | (Backend::Process { stderr: Some(io), .. }, 1)
                            | (Backend::Forward { io, .. }, 0) => io.ready = false,
                            _ => {}
                        }
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        progress
    }

    /// Output finished and the process exited (or the forwarded socket closed): EOF, exit
    /// status, close.
    fn finish_channel(&mut self, id: ChannelId, mio: &mio::Registry, registry: &mut Registry) -> bool {
        let Some(chan) = self.channels.get_mut(&id) else { return false };
        if chan.done {
            return false;
        }
        let end = match &mut chan.backend {
            Backend::Process { session, stdout, stderr, .. } => {
                let out_done = stdout.as_ref().is_none_or(|io| io.eof);
                let err_done = stderr.as_ref().is_none_or(|io| io.eof);
                if !(out_done && err_done) {
                    return false;
                }
                match session.try_wait() {
                    Ok(Some(status)) => Some(Some(status)),
                    Ok(None) => return false,
                    Err(_) => Some(None),
                }
            }
            Backend::Forward { read_closed: true, .. } => Some(None),
            _ => return false,
        };
        chan.done = true;
        let Some(mut channels) = self.session.channels(self.now) else { return false };
        channels.eof(id);
        match end.flatten() {
            Some(ExitStatus::Code(code)) => channels.request(id, &ChannelRequest::ExitStatus(code), false),
            Some(ExitStatus::Signal { name, core_dumped }) => channels.request(
                id,
                &ChannelRequest::ExitSignal { signal: name, core_dumped, message: String::new() },
                false,
            ),
            None => {}
        }
        channels.close(id);
        drop(channels);
        if let Some(chan) = self.channels.get_mut(&id) {
            release_io(&mut chan.backend, mio, registry);
        }
        true
    }

    /// The connection is over: hang up every child, close every socket.
    pub fn shutdown(&mut self, mio: &mio::Registry, registry: &mut Registry) {
        for (_, mut chan) in std::mem::take(&mut self.channels) {
            release(&mut chan.backend, mio, registry);
        }
        for mut f in std::mem::take(&mut self.remote_forwards) {
            let _ = mio.deregister(&mut f.listener);
            registry.forget(f.io.token);
        }
        deregister(mio, registry, &self.socket);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Stop watching a channel's descriptors (their files stay with the session).
fn release_io(backend: &mut Backend, mio: &mio::Registry, registry: &mut Registry) {
    match backend {
        Backend::Process { stdin, stdout, stderr, .. } => {
            for io in [stdin.take(), stdout.take(), stderr.take()].into_iter().flatten() {
                deregister(mio, registry, &io);
            }
        }
        Backend::Forward { io, .. } => deregister(mio, registry, io),
        Backend::Pending => {}
    }
}

/// The channel is gone: hang up its process.
fn release(backend: &mut Backend, mio: &mio::Registry, registry: &mut Registry) {
    release_io(backend, mio, registry);
    if let Backend::Process { session, .. } = backend {
        if session.try_wait().ok().flatten().is_none() {
            session.hangup();
        }
    }
}

fn connect(host: &str, port: u32) -> io::Result<TcpStream> {
    let port = u16::try_from(port).map_err(|_| io::Error::other("port out of range"))?;
    let addr = (host, port).to_socket_addrs()?.next().ok_or_else(|| io::Error::other("no address"))?;
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    Ok(TcpStream::from_std(stream))
}
