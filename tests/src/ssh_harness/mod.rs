//! A test harness (never in a shipped binary) that serves the core's SSH server on a
//! loopback TCP port with a fixed identity: every login is accepted and runs as one local
//! account, through the session runtime of `meshd` (real processes, PTYs, sftp-server).
//! Real clients (`ssh`, `scp`, `sftp`) are pointed at it.
//!
//! One mio thread runs every connection: sockets, child pipes/PTYs and forwarded TCP
//! connections. Flow control is end to end: a child's output is read only while the
//! channel window and the socket queue have room, and client data is given back to the
//! window only once the child has taken it.

mod conn;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mesh_core::ssh::server::ServerConfig;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use conn::{Conn, Registry};

/// What the harness serves.
#[derive(Clone, Debug)]
pub struct HarnessConfig {
    /// The ssh-ed25519 host key (secret bytes).
    pub host_key: [u8; 32],
    /// The local account every login runs as.
    pub local_user: String,
    /// Client environment names accepted (`NAME` or a prefix `NAME*`).
    pub accept_env: Vec<String>,
    pub server: ServerConfig,
}

impl Default for HarnessConfig {
    fn default() -> Self {
        let local_user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        Self {
            host_key: [42; 32],
            local_user,
            accept_env: vec!["LANG".into(), "LC_*".into(), "MESH_TEST_*".into()],
            server: ServerConfig::default(),
        }
    }
}

/// Counters the tests read.
#[derive(Debug, Default)]
pub struct HarnessStats {
    pub accepted: AtomicUsize,
    pub live: AtomicUsize,
}

/// A running harness; dropped = stopped (children hung up, sockets closed).
#[derive(Debug)]
pub struct Harness {
    addr: SocketAddr,
    host_public: [u8; 32],
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    stats: Arc<HarnessStats>,
    thread: Option<JoinHandle<()>>,
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

impl Harness {
    pub fn start(config: HarnessConfig) -> io::Result<Self> {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().map_err(io::Error::other)?)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(HarnessStats::default());
        let host_public = ed25519_dalek::SigningKey::from_bytes(&config.host_key).verifying_key().to_bytes();
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name("ssh-harness".into())
                .spawn(move || run(poll, listener, config, stop, stats))?
        };
        Ok(Self { addr, host_public, stop, waker, stats, thread: Some(thread) })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host key as OpenSSH writes it (`ssh-ed25519 AAAA...`).
    pub fn host_key_openssh(&self) -> String {
        openssh_public_key(&self.host_public)
    }

    /// A known_hosts line for this harness (`[127.0.0.1]:port ssh-ed25519 AAAA...`).
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port(), self.host_key_openssh())
    }

    /// Connections the harness holds now.
    pub fn live_connections(&self) -> usize {
        self.stats.live.load(Ordering::SeqCst)
    }

    pub fn accepted_connections(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An ssh-ed25519 public key in OpenSSH's one-line format.
pub fn openssh_public_key(public: &[u8; 32]) -> String {
    let key = ssh_key::PublicKey::from(ssh_key::public::Ed25519PublicKey(*public));
    key.to_openssh().unwrap_or_default()
}

fn run(mut poll: Poll, listener: TcpListener, config: HarnessConfig, stop: Arc<AtomicBool>, stats: Arc<HarnessStats>) {
    let start = std::time::Instant::now();
    let mut registry = Registry::new(2);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut seed = 1u64;
    while !stop.load(Ordering::SeqCst) {
        let now = mesh_core::time::Instant::from_micros(start.elapsed().as_micros() as u64);
        let timeout =
            conns.iter().flatten().filter_map(|c| c.wants_wakeup(now)).min().unwrap_or(Duration::from_millis(500));
        if let Err(error) = poll.poll(&mut events, Some(timeout)) {
            if error.kind() != io::ErrorKind::Interrupted {
                tracing::error!(%error, "harness poll failed");
                break;
            }
        }
        let now = mesh_core::time::Instant::from_micros(start.elapsed().as_micros() as u64);
        for event in events.iter() {
            match event.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            seed += 1;
                            match Conn::new(stream, peer, &config, seed, now, poll.registry(), &mut registry) {
                                Ok(conn) => {
                                    let slot = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                                        conns.push(None);
                                        conns.len() - 1
                                    });
                                    registry.bind_conn(conn.socket_token(), slot);
                                    conns[slot] = Some(conn);
                                    stats.accepted.fetch_add(1, Ordering::SeqCst);
                                    stats.live.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(error) => tracing::warn!(%error, "harness could not take a connection"),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => {
                            tracing::warn!(%error, "accept failed");
                            break;
                        }
                    }
                },
                WAKER => {}
                token => {
                    if let Some((slot, target)) = registry.lookup(token) {
                        if let Some(Some(conn)) = conns.get_mut(slot) {
                            conn.mark_ready(target, event.is_readable() || event.is_read_closed(), event.is_writable());
                        }
                    }
                }
            }
        }
        // Every connection is looked at each turn: timers, child exits, blocked windows.
        for conn in conns.iter_mut() {
            let Some(c) = conn.as_mut() else { continue };
            c.service(now, poll.registry(), &mut registry);
            if c.is_finished() {
                if let Some(mut c) = conn.take() {
                    c.shutdown(poll.registry(), &mut registry);
                    stats.live.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }
    for mut conn in conns.into_iter().flatten() {
        conn.shutdown(poll.registry(), &mut registry);
    }
}
