//! The control connection inside the loop: a non-blocking TCP connection to the login
//! server carrying the core's [`ControlClient`] (HTTP upgrade, Noise IK channel,
//! registration, netmap stream). The client decides when to connect and when to give up
//! (its backoff and watchdog); this file only moves bytes and reports the socket's state.

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, ToSocketAddrs as _};

use bytes::Bytes;
use mesh_core::control::client::{ClientConfig, ClientEvent, ControlClient};
use mesh_core::control::messages::{RegisterAuth, Registered};
use mesh_core::time::Instant;
use mesh_core::wireguard::{PrivateKey, PublicKey};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use thiserror::Error;
use tracing::{debug, info, warn};

/// Bytes read from the control connection per system call.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("login server `{0}`: expected host:port (optionally behind http://)")]
    BadServer(String),
    #[error("login server `{server}`: {error}")]
    Resolve { server: String, error: io::Error },
    #[error("control key: expected 64 hex digits")]
    BadKey,
}

/// Where the link stands, for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    Running,
    NeedsLogin,
    Rejected,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Running => "running",
            LinkState::NeedsLogin => "needs_login",
            LinkState::Rejected => "rejected",
        }
    }
}

/// What an `up` asks for.
#[derive(Clone, Debug)]
pub struct UpRequest {
    pub login_server: String,
    pub auth_key: String,
    pub hostname: String,
    pub control_key: String,
    pub ssh: bool,
    pub advertise_tags: Vec<String>,
    pub accept_dns: bool,
    /// The host key lines published with `ssh` (the daemon's, not the caller's).
    pub ssh_host_keys: Vec<String>,
    /// The server's address, resolved by the caller (`None`: resolved here).
    pub server_addr: Option<SocketAddr>,
    /// Registered before with this machine key (a restart): no auth key needed.
    pub known: bool,
}

/// One control connection and its client.
#[derive(Debug)]
pub struct ControlLink {
    pub client: ControlClient,
    pub login_server: String,
    server: SocketAddr,
    token: Token,
    stream: Option<TcpStream>,
    connected: bool,
    out: VecDeque<Bytes>,
    out_offset: usize,
    pub state: LinkState,
    pub last_error: Option<String>,
    pub login_url: Option<String>,
    pub registered: Option<Registered>,
    /// The WireGuard port, advertised with the connection's local address.
    udp_port: u16,
    /// What to save once registered.
    pub prefs: crate::prefs::Prefs,
}

impl ControlLink {
    /// The server's address is resolved once per `up`, not at every reconnect: by
    /// `meshctl` (passed in the request), or here when the request has none (a host name
    /// then blocks the loop for the resolver's answer; a restart resolves before the loop
    /// runs).
    pub fn new(
        request: &UpRequest,
        machine_key: PrivateKey,
        node_key: PublicKey,
        seed: [u8; 32],
        now: Instant,
        token: Token,
        udp_port: u16,
    ) -> Result<Self, ControlError> {
        let host = crate::control_key::server_host(&request.login_server);
        if host.is_empty() || host.contains('/') || !host.contains(':') {
            return Err(ControlError::BadServer(request.login_server.clone()));
        }
        let server = match request.server_addr {
            Some(addr) => addr,
            None => host
                .to_socket_addrs()
                .map_err(|error| ControlError::Resolve { server: host.to_string(), error })?
                .next()
                .ok_or_else(|| ControlError::BadServer(request.login_server.clone()))?,
        };
        let key = crate::state_dir::parse_hex(request.control_key.trim()).ok_or(ControlError::BadKey)?;
        let auth = if request.known {
            RegisterAuth::Known
        } else if request.auth_key.is_empty() {
            RegisterAuth::Interactive
        } else {
            RegisterAuth::AuthKey(request.auth_key.clone())
        };
        let mut config = ClientConfig::new(PublicKey(key), host, &request.hostname, auth);
        config.ssh = request.ssh;
        config.ssh_host_keys = if request.ssh { request.ssh_host_keys.clone() } else { Vec::new() };
        config.requested_tags = request.advertise_tags.clone();
        Ok(Self {
            client: ControlClient::new(config, machine_key, node_key, seed, now),
            login_server: host.to_string(),
            server,
            token,
            stream: None,
            connected: false,
            out: VecDeque::new(),
            out_offset: 0,
            state: LinkState::Connecting,
            last_error: None,
            login_url: None,
            registered: None,
            udp_port,
            prefs: crate::prefs::Prefs {
                login_server: request.login_server.clone(),
                hostname: request.hostname.clone(),
                control_key: request.control_key.clone(),
                ssh: request.ssh,
                advertise_tags: request.advertise_tags.clone(),
                accept_dns: request.accept_dns,
                want_running: true,
            },
        })
    }

    /// Run the client's timer if due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.client.poll_timeout().is_some_and(|at| at <= now) {
            self.client.handle_timeout(now);
        }
    }

    /// The socket is ready: finish connecting, read, write.
    pub fn handle_ready(&mut self, registry: &Registry, now: Instant) {
        let Some(stream) = &mut self.stream else { return };
        if !self.connected {
            if let Ok(Some(error)) | Err(error) = stream.take_error() {
                return self.closed(registry, now, format!("connect to {}: {error}", self.server));
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => return self.closed(registry, now, format!("connect to {}: {error}", self.server)),
            }
            self.connected = true;
            let local = stream.local_addr().ok();
            debug!(server = %self.server, ?local, "control connection up");
            self.client.handle_connected(now);
            if let Some(local) = local {
                self.client.set_endpoints(vec![SocketAddr::new(local.ip(), self.udp_port)]);
            }
        }
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let Some(stream) = &mut self.stream else { return };
            match stream.read(&mut buf) {
                Ok(0) => return self.closed(registry, now, "the server closed the connection".into()),
                Ok(n) => self.client.handle_input(now, buf.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return self.closed(registry, now, format!("control connection: {error}")),
            }
        }
        self.write(registry, now);
    }

    /// Move the client's outputs: bytes to the socket, connection orders to the socket,
    /// everything else back to the caller (registration, netmaps).
    pub fn drain(&mut self, registry: &Registry, now: Instant) -> Vec<ClientEvent> {
        let mut forwarded = Vec::new();
        loop {
            let mut moved = false;
            while let Some(bytes) = self.client.poll_transmit() {
                self.out.push_back(bytes);
                moved = true;
            }
            while let Some(event) = self.client.poll_event() {
                moved = true;
                match event {
                    ClientEvent::Connect => self.connect(registry, now),
                    ClientEvent::Disconnect { reason } => {
                        warn!(%reason, "control connection lost");
                        self.last_error = Some(reason);
                        self.close(registry);
                    }
                    ClientEvent::Registered(r) => {
                        info!(name = %r.name, user = %r.user, addresses = ?r.addresses, "registered");
                        self.registered = Some(r.clone());
                        self.login_url = None;
                        forwarded.push(ClientEvent::Registered(r));
                    }
                    ClientEvent::LoginNeeded { url } => {
                        info!(%url, "login needed");
                        self.state = LinkState::NeedsLogin;
                        self.login_url = Some(url);
                    }
                    ClientEvent::Rejected { reason } => {
                        warn!(%reason, "the control server refused this node");
                        self.state = LinkState::Rejected;
                        self.last_error = Some(reason);
                        self.close(registry);
                    }
                    ClientEvent::NetmapChanged => {
                        self.state = LinkState::Running;
                        forwarded.push(ClientEvent::NetmapChanged);
                    }
                    other @ ClientEvent::CheckAnswer { .. } => forwarded.push(other),
                }
            }
            if !moved {
                break;
            }
        }
        self.write(registry, now);
        forwarded
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        self.close(registry);
        match TcpStream::connect(self.server) {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                if let Err(error) = registry.register(&mut stream, self.token, Interest::READABLE | Interest::WRITABLE)
                {
                    self.client.handle_disconnected(now);
                    self.last_error = Some(format!("control connection: {error}"));
                    return;
                }
                self.stream = Some(stream);
            }
            Err(error) => {
                self.last_error = Some(format!("connect to {}: {error}", self.server));
                self.client.handle_disconnected(now);
            }
        }
    }

    fn write(&mut self, registry: &Registry, now: Instant) {
        if !self.connected {
            return;
        }
        while let Some(front) = self.out.front() {
            let Some(stream) = &mut self.stream else { return };
            let rest = front.get(self.out_offset..).unwrap_or_default();
            match stream.write(rest) {
                Ok(0) => return self.closed(registry, now, "control connection: write returned 0".into()),
                Ok(n) if n == rest.len() => {
                    self.out.pop_front();
                    self.out_offset = 0;
                }
                Ok(n) => self.out_offset += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return self.closed(registry, now, format!("control connection: {error}")),
            }
        }
    }

    /// The socket failed or closed: tell the client (it backs off and asks again).
    fn closed(&mut self, registry: &Registry, now: Instant, reason: String) {
        debug!(%reason, "control connection closed");
        self.last_error = Some(reason);
        self.close(registry);
        self.client.handle_disconnected(now);
    }

    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut stream) = self.stream.take() {
            let _ = registry.deregister(&mut stream);
        }
        self.connected = false;
        self.out.clear();
        self.out_offset = 0;
        if self.state == LinkState::Running {
            self.state = LinkState::Connecting;
        }
    }
}
