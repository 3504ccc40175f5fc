//! The channels of one SSH connection (see the module above for the contract).

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;

use mesh_core::policy::SshForwarding;
use mesh_core::ssh::channel::{open_failure, ChannelId, ChannelKind, ChannelRequest, GlobalRequest};
use mesh_core::ssh::connection::ConnectionEvent;
use mesh_core::ssh::server::ServerSession;
use mesh_core::time::Instant;
use mio::Interest;

use super::io::{connect, deregister, register, ChannelTarget, ForwardStream, Io, Tokens};
use crate::session::{AgentSocket, ExitStatus, PtyRequest, Session, SessionRequest};

/// Client environment variables kept per channel at most.
const MAX_ENV: usize = 64;

/// What the login's rule lets its channels do.
#[derive(Clone, Debug)]
pub struct ChannelPolicy {
    /// The local account sessions run as.
    pub local_user: String,
    /// Whether that account may be uid 0 (`false` for `=` mappings).
    pub allow_root: bool,
    /// Client environment names accepted (`NAME`, or a prefix `NAME*`).
    pub accept_env: Vec<String>,
    /// Which of `-A`, `-L`/`-D`/`-W` and `-R` its logins may use.
    pub forwarding: SshForwarding,
    /// The address `ssh -R` ports are bound on, whatever the client names (the node's mesh
    /// address or loopback: never the underlay).
    pub remote_bind: IpAddr,
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
        stream: ForwardStream,
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

/// The channels of one connection and what runs behind them.
#[derive(Debug)]
pub struct ChannelHost {
    policy: ChannelPolicy,
    /// The client's address and ours, for `SSH_CLIENT` and `SSH_CONNECTION`.
    peer: SocketAddr,
    local: SocketAddr,
    channels: BTreeMap<ChannelId, Chan>,
    now: Instant,
    /// Read buffer for child output, reused.
    scratch: Vec<u8>,
    remote_forwards: Vec<RemoteForward>,
    /// Connections accepted on a remote-forward port or the agent socket, waiting for
    /// their channel.
    opening: BTreeMap<ChannelId, ForwardStream>,
    /// The forwarded agent's socket, once a session asked for it (one per connection, as
    /// OpenSSH: every later session of the connection sees it too).
    agent: Option<(AgentSocket, Io)>,
    /// Output the caller still takes in this round (see [`ChannelHost::service`]).
    budget: usize,
}

impl ChannelHost {
    pub fn new(policy: ChannelPolicy, peer: SocketAddr, local: SocketAddr, now: Instant) -> Self {
        Self {
            policy,
            peer,
            local,
            channels: BTreeMap::new(),
            now,
            scratch: Vec::new(),
            remote_forwards: Vec::new(),
            opening: BTreeMap::new(),
            agent: None,
            budget: 0,
        }
    }

    /// Whether a process runs behind some channel (its exit is polled for: the loop has
    /// no SIGCHLD).
    pub fn has_processes(&self) -> bool {
        self.channels.values().any(|c| matches!(c.backend, Backend::Process { .. }))
    }

    /// A descriptor of `target` became ready.
    pub fn mark_ready(&mut self, target: ChannelTarget, readable: bool, writable: bool) {
        let chan_io =
            |chans: &mut BTreeMap<ChannelId, Chan>, id: ChannelId, pick: fn(&mut Backend) -> Option<&mut Io>| {
                if let Some(io) = chans.get_mut(&id).and_then(|c| pick(&mut c.backend)) {
                    io.ready = true;
                }
            };
        match target {
            ChannelTarget::ChildIn(id) => chan_io(&mut self.channels, id, |b| match b {
                Backend::Process { stdin, .. } => stdin.as_mut(),
                _ => None,
            }),
            ChannelTarget::ChildOut(id) => chan_io(&mut self.channels, id, |b| match b {
                Backend::Process { stdout, .. } => stdout.as_mut(),
                _ => None,
            }),
            ChannelTarget::ChildErr(id) => chan_io(&mut self.channels, id, |b| match b {
                Backend::Process { stderr, .. } => stderr.as_mut(),
                _ => None,
            }),
            ChannelTarget::Listener(port) => {
                if let Some(f) = self.remote_forwards.iter_mut().find(|f| f.bound == port) {
                    f.io.ready = true;
                }
            }
            ChannelTarget::AgentListener => {
                if let Some((_, io)) = &mut self.agent {
                    io.ready = true;
                }
            }
            ChannelTarget::Forward(id) => {
                if let Some(Backend::Forward { io, .. }) = self.channels.get_mut(&id).map(|c| &mut c.backend) {
                    io.ready |= readable;
                    io.writable |= writable;
                }
            }
        }
    }

    /// Everything the channels can do now: connections on `-R` ports, client data to the
    /// children, their output to the client (at most `budget` bytes: what the caller's
    /// queue towards the client still takes), exits. Whether anything moved.
    pub fn service(
        &mut self,
        session: &mut ServerSession,
        now: Instant,
        budget: usize,
        mio: &mio::Registry,
        tokens: &mut dyn Tokens,
    ) -> bool {
        self.now = now;
        self.budget = budget;
        let mut progress = self.accept_forwarded(session);
        for id in self.channels.keys().copied().collect::<Vec<_>>() {
            progress |= self.feed_channel(session, id, mio, tokens);
            progress |= self.drain_channel(session, id);
            progress |= self.finish_channel(session, id, mio, tokens);
        }
        progress
    }

    /// One event of the connection protocol.
    pub fn on_event(
        &mut self,
        session: &mut ServerSession,
        now: Instant,
        event: ConnectionEvent,
        mio: &mio::Registry,
        tokens: &mut dyn Tokens,
    ) {
        self.now = now;
        self.on_connection_event(session, event, mio, tokens);
    }

    fn on_connection_event(
        &mut self,
        session: &mut ServerSession,
        event: ConnectionEvent,
        mio: &mio::Registry,
        tokens: &mut dyn Tokens,
    ) {
        match event {
            ConnectionEvent::OpenRequest { channel, kind } => match kind {
                ChannelKind::Session => {
                    self.channels.insert(channel, Chan::new(Backend::Pending));
                    if let Some(mut c) = session.channels(self.now) {
                        c.accept(channel)
                    };
                }
                ChannelKind::DirectTcpip { .. } if !self.policy.forwarding.local => {
                    if let Some(mut c) = session.channels(self.now) {
                        c.refuse(channel, open_failure::ADMINISTRATIVELY_PROHIBITED, "port forwarding is not allowed")
                    }
                }
                ChannelKind::DirectTcpip { host, port, .. } => {
                    let started = connect(&host, port)
                        .map(|stream| self.start_forward(channel, ForwardStream::Tcp(stream), mio, tokens))
                        .map_err(|e| e.to_string());
                    match started {
                        Ok(true) => {
                            if let Some(mut c) = session.channels(self.now) {
                                c.accept(channel)
                            }
                        }
                        Ok(false) => {
                            if let Some(mut c) = session.channels(self.now) {
                                c.refuse(channel, open_failure::CONNECT_FAILED, "register")
                            }
                        }
                        Err(e) => {
                            if let Some(mut c) = session.channels(self.now) {
                                c.refuse(channel, open_failure::CONNECT_FAILED, &e)
                            }
                        }
                    }
                }
                _ => {
                    if let Some(mut c) = session.channels(self.now) {
                        c.refuse(channel, open_failure::ADMINISTRATIVELY_PROHIBITED, "not here")
                    }
                }
            },
            ConnectionEvent::Request { channel, request, want_reply } => {
                let ok = self.on_request(channel, request, mio, tokens);
                if want_reply {
                    if let Some(mut c) = session.channels(self.now) {
                        c.reply(channel, ok)
                    };
                }
            }
            ConnectionEvent::Data { channel, data } | ConnectionEvent::ExtendedData { channel, data, .. } => {
                match self.channels.get_mut(&channel) {
                    Some(c) if !c.inbound_closed => c.inbound.extend(data.iter()),
                    _ => {
                        if let Some(mut c) = session.channels(self.now) {
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
                    release(&mut c.backend, mio, tokens);
                }
            }
            ConnectionEvent::GlobalRequest { request, want_reply } => {
                let answer = self.on_global_request(request, mio, tokens);
                if want_reply {
                    let (ok, port) = answer.map_or((false, None), |port| (true, port));
                    if let Some(mut c) = session.channels(self.now) {
                        c.global_reply(ok, port)
                    };
                }
            }
            ConnectionEvent::Opened { channel } => {
                if let Some(stream) = self.opening.remove(&channel) {
                    self.start_forward(channel, stream, mio, tokens);
                }
            }
            ConnectionEvent::OpenFailed { channel, .. } => {
                self.opening.remove(&channel);
            }
            _ => {}
        }
    }

    /// `tcpip-forward` / `cancel-tcpip-forward`: `Some(port to report)` on success. Ports are
    /// bound on the policy's `remote_bind` address whatever address the client names.
    fn on_global_request(
        &mut self,
        request: GlobalRequest,
        mio: &mio::Registry,
        tokens: &mut dyn Tokens,
    ) -> Option<Option<u32>> {
        match request {
            GlobalRequest::TcpipForward { .. } if !self.policy.forwarding.remote => None,
            GlobalRequest::TcpipForward { address, port } => {
                let wanted = u16::try_from(port).ok()?;
                let mut listener =
                    mio::net::TcpListener::bind(SocketAddr::new(self.policy.remote_bind, wanted)).ok()?;
                let bound = listener.local_addr().ok()?.port();
                let token = tokens.token(ChannelTarget::Listener(bound));
                if mio.register(&mut listener, token, Interest::READABLE).is_err() {
                    tokens.forget(token);
                    return None;
                }
                let io = Io { token, fd: listener.as_raw_fd(), ready: true, writable: false, eof: false };
                self.remote_forwards.push(RemoteForward { address, requested: port, bound, listener, io });
                Some((port == 0).then_some(u32::from(bound)))
            }
            GlobalRequest::CancelTcpipForward { port, .. } => {
                let at = self.remote_forwards.iter().position(|f| f.requested == port || u32::from(f.bound) == port)?;
                let mut f = self.remote_forwards.remove(at);
                let _ = mio.deregister(&mut f.listener);
                tokens.forget(f.io.token);
                Some(None)
            }
            GlobalRequest::Other(_) => None,
        }
    }

    /// Connections arriving on remote-forward ports become forwarded-tcpip channels.
    fn accept_forwarded(&mut self, session: &mut ServerSession) -> bool {
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
                        if let Some(id) = session.channels(self.now).and_then(|mut c| c.open(&kind)) {
                            self.opening.insert(id, ForwardStream::Tcp(stream));
                        }
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => f.io.ready = false,
                    Err(_) => f.io.ready = false,
                }
            }
        }
        while let Some((socket, io)) = self.agent.as_mut().filter(|(_, io)| io.ready) {
            match socket.listener().accept() {
                Ok((stream, _)) => {
                    progress = true;
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let stream = ForwardStream::Unix(mio::net::UnixStream::from_std(stream));
                    if let Some(id) = session.channels(self.now).and_then(|mut c| c.open(&ChannelKind::AuthAgent)) {
                        self.opening.insert(id, stream);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => io.ready = false,
            }
        }
        progress
    }

    /// `auth-agent-req@openssh.com`: the agent socket exists (made now if this is the
    /// first ask), when the rule allows agent forwarding.
    fn start_agent(&mut self, mio: &mio::Registry, tokens: &mut dyn Tokens) -> bool {
        if !self.policy.forwarding.agent {
            return false;
        }
        if self.agent.is_some() {
            return true;
        }
        let socket = match AgentSocket::create(&self.policy.local_user, self.policy.allow_root) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%error, user = %self.policy.local_user, "no agent forwarding");
                return false;
            }
        };
        match register(mio, tokens, socket.listener().as_raw_fd(), ChannelTarget::AgentListener, Interest::READABLE) {
            Ok(io) => {
                self.agent = Some((socket, io));
                true
            }
            Err(_) => false,
        }
    }

    /// A channel now carries `stream` both ways.
    fn start_forward(
        &mut self,
        channel: ChannelId,
        stream: ForwardStream,
        mio: &mio::Registry,
        tokens: &mut dyn Tokens,
    ) -> bool {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match register(mio, tokens, stream.fd(), ChannelTarget::Forward(channel), interest) {
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
        tokens: &mut dyn Tokens,
    ) -> bool {
        if matches!(request, ChannelRequest::AuthAgent) {
            let pending = self.channels.get(&id).is_some_and(|c| matches!(c.backend, Backend::Pending));
            return pending && self.start_agent(mio, tokens);
        }
        let agent_socket = self.agent.as_ref().map(|(socket, _)| socket.path().to_path_buf());
        let accept_env = &self.policy.accept_env;
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
                if accepted && chan.env.len() < MAX_ENV {
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
            user: self.policy.local_user.clone(),
            allow_root: self.policy.allow_root,
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
            agent_socket,
        };
        let spawned = match &subsystem {
            Some(name) => Session::spawn_subsystem(&request, name),
            None => Session::spawn(&request),
        };
        let session = match spawned {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, user = %self.policy.local_user, "cannot start the session");
                return false;
            }
        };
        let mut reg = |fd: Option<std::os::fd::BorrowedFd<'_>>, target: ChannelTarget, interest: Interest| {
            fd.and_then(|fd| register(mio, tokens, fd.as_raw_fd(), target, interest).ok())
        };
        let stdin = reg(session.stdin_fd(), ChannelTarget::ChildIn(id), Interest::WRITABLE);
        let stdout = reg(session.stdout_fd(), ChannelTarget::ChildOut(id), Interest::READABLE);
        let stderr = reg(session.stderr_fd(), ChannelTarget::ChildErr(id), Interest::READABLE);
        chan.backend = Backend::Process { session, stdin, stdout, stderr };
        true
    }

    /// Client data into the child's stdin or the forwarded socket.
    fn feed_channel(
        &mut self,
        session: &mut ServerSession,
        id: ChannelId,
        mio: &mio::Registry,
        tokens: &mut dyn Tokens,
    ) -> bool {
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
                        deregister(mio, tokens, &io);
                    }
                    session.close_stdin();
                    chan.inbound_closed = true;
                    progress = true;
                }
                Backend::Forward { stream, .. } => {
                    stream.shutdown_write();
                    chan.inbound_closed = true;
                    progress = true;
                }
                _ => {}
            }
        }
        if taken > 0 {
            if let Some(mut c) = session.channels(self.now) {
                c.consume(id, taken)
            };
        }
        progress
    }

    /// Child output (or the forwarded socket's data) to the client, as far as the window
    /// and the socket queue allow.
    fn drain_channel(&mut self, session: &mut ServerSession, id: ChannelId) -> bool {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(64 * 1024, 0);
        let progress = self.drain_into(session, id, &mut buf);
        self.scratch = buf;
        progress
    }

    fn drain_into(&mut self, session: &mut ServerSession, id: ChannelId, buf: &mut [u8]) -> bool {
        let mut progress = false;
        for stream_no in [0u32, 1] {
            loop {
                let room = session.channels(self.now).map_or(0, |mut c| c.writable(id)).min(buf.len()).min(self.budget);
                if room == 0 {
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
                            session.channels(self.now).map_or(0, |mut c| c.write(id, &buf[..n]))
                        } else {
                            session.channels(self.now).map_or(0, |mut c| c.write_extended(id, 1, &buf[..n]))
                        };
                        debug_assert_eq!(written, n);
                        self.budget = self.budget.saturating_sub(n);
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
    fn finish_channel(
        &mut self,
        session: &mut ServerSession,
        id: ChannelId,
        mio: &mio::Registry,
        tokens: &mut dyn Tokens,
    ) -> bool {
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
        let Some(mut channels) = session.channels(self.now) else { return false };
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
            release_io(&mut chan.backend, mio, tokens);
        }
        true
    }

    /// Tell the client on every session channel's stderr (as far as its window takes it):
    /// why the connection is about to end.
    pub fn notify_all(&mut self, session: &mut ServerSession, now: Instant, text: &str) {
        let Some(mut channels) = session.channels(now) else { return };
        for (id, chan) in &self.channels {
            if matches!(chan.backend, Backend::Pending | Backend::Process { .. }) {
                let room = channels.writable(*id).min(text.len());
                let _ = channels.write_extended(*id, 1, text.as_bytes().get(..room).unwrap_or_default());
            }
        }
    }

    /// The connection is over: hang up every child, close every socket.
    pub fn shutdown(&mut self, mio: &mio::Registry, tokens: &mut dyn Tokens) {
        for (_, mut chan) in std::mem::take(&mut self.channels) {
            release(&mut chan.backend, mio, tokens);
        }
        for mut f in std::mem::take(&mut self.remote_forwards) {
            let _ = mio.deregister(&mut f.listener);
            tokens.forget(f.io.token);
        }
        if let Some((_socket, io)) = self.agent.take() {
            deregister(mio, tokens, &io);
        }
        self.opening.clear();
    }
}

/// Stop watching a channel's descriptors (their files stay with the session).
fn release_io(backend: &mut Backend, mio: &mio::Registry, tokens: &mut dyn Tokens) {
    match backend {
        Backend::Process { stdin, stdout, stderr, .. } => {
            for io in [stdin.take(), stdout.take(), stderr.take()].into_iter().flatten() {
                deregister(mio, tokens, &io);
            }
        }
        Backend::Forward { io, .. } => deregister(mio, tokens, io),
        Backend::Pending => {}
    }
}

/// The channel is gone: hang up its process.
fn release(backend: &mut Backend, mio: &mio::Registry, tokens: &mut dyn Tokens) {
    release_io(backend, mio, tokens);
    if let Backend::Process { session, .. } = backend {
        if session.try_wait().ok().flatten().is_none() {
            session.hangup();
        }
    }
}
