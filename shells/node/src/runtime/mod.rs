//! The node runtime: one mio event loop on one thread that drives the core's sans-IO
//! [`Node`] on a real TUN device ([`tun`]) and real UDP sockets ([`udp`]).
//!
//! Modules, bottom-up: [`clock`] (real time as the core's `Instant`), [`buffers`] (the
//! packet buffer pool: no allocation per packet), [`metrics`] (the loop's counters),
//! [`udp`] (quinn-udp: recvmmsg + GRO, GSO sends), [`netlink`] (rtnetlink: addresses, MTU,
//! link up, routes, link removal), [`tun`] (tun-rs), [`event_loop`] (the loop itself), and
//! for `meshd --state-dir` [`control`] (the control connection) and `daemon` (the local
//! API's commands and netmaps applied to the node and the TUN); [`hook`] lets an
//! application run on the loop's thread (the embedded node, [`crate::embed`]).
//!
//! ```no_run
//! fn serve(config: meshd::runtime::RuntimeConfig) -> Result<(), meshd::runtime::RuntimeError> {
//!     let mut runtime = meshd::runtime::Runtime::new(config)?;
//!     runtime.stop_on_signals()?; // SIGINT / SIGTERM end `run`
//!     runtime.run()
//! } // dropping the runtime removes the TUN and its routes
//! ```

pub mod buffers;
pub mod clock;
pub mod control;
mod daemon;
mod event_loop;
pub mod hook;
pub mod metrics;
pub mod netlink;
mod ping;
mod ssh;
pub mod tun;
pub mod udp;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mesh_core::ip::Filter;
use mesh_core::node::{NetmapPeer, Node, NodeConfig, NodeError, PeerOptions};
use mesh_core::rng::SEED_LEN;
use mesh_core::wireguard::{PublicKey, DATA_HEADER_LEN, DATA_OVERHEAD};
use mio::{Interest, Poll, Token, Waker};
use thiserror::Error;
use tracing::info;

use buffers::BufferPool;
use clock::Clock;
pub use daemon::DaemonConfig;
pub use hook::{HookContext, LoopHook};
pub use metrics::Metrics;
pub use tun::{Tun, TunConfig, TunError};
use udp::{UdpError, UdpIo};

const UDP4: Token = Token(0);
const UDP6: Token = Token(1);
const TUN: Token = Token(2);
const SIGNALS: Token = Token(3);
const WAKER: Token = Token(4);
const CONTROL: Token = Token(5);
/// The local API's listener; its connections take the tokens after it.
const API: Token = Token(6);

/// Everything a runtime needs to start.
#[derive(Debug)]
pub struct RuntimeConfig {
    pub node: NodeConfig,
    pub peers: Vec<NetmapPeer>,
    pub peer_options: Vec<(PublicKey, PeerOptions)>,
    pub filter: Filter,
    /// WireGuard's UDP port (0: any).
    pub listen_port: u16,
    /// `None`: no TUN (userspace mode; packets for the TUN side are dropped).
    pub tun: Option<TunConfig>,
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("node: {0}")]
    Node(#[from] NodeError),
    #[error(transparent)]
    Udp(#[from] UdpError),
    #[error(transparent)]
    Tun(#[from] TunError),
    #[error("event loop: {0}")]
    Poll(std::io::Error),
    #[error("OS randomness: {0}")]
    Random(std::io::Error),
    #[error(transparent)]
    LocalApi(#[from] crate::local_api::LocalApiError),
}

/// Ends a running [`Runtime::run`] from another thread.
#[derive(Clone, Debug)]
pub struct Stopper {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl Stopper {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

/// One node on real IO.
pub struct Runtime {
    node: Node,
    clock: Clock,
    poll: Poll,
    /// IPv4 and IPv6 sockets (either may be missing if its family is unavailable).
    udp: [Option<UdpIo>; 2],
    tun: Option<Tun>,
    mtu: usize,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    pool: BufferPool,
    /// Node outputs waiting for their system call (moved, not copied).
    pending_udp: Vec<mesh_core::wireguard::Transmit>,
    pending_tun: Vec<bytes::BytesMut>,
    /// TUN offload: the raw read, the packets it splits into, their sizes; the packets to
    /// write (behind room for the virtio header) and tun-rs's GRO state.
    tun_raw: Vec<u8>,
    tun_segments: Vec<bytes::BytesMut>,
    tun_sizes: Vec<usize>,
    tun_out: Vec<bytes::BytesMut>,
    gro: tun_rs::GROTable,
    /// UDP receive errors in a row, per socket.
    udp_errors_in_row: [u8; 2],
    metrics: Metrics,
    /// Daemon mode: the local API and the control connection.
    daemon: Option<daemon::Daemon>,
    /// SSH connections served by the core (with `up --ssh`).
    ssh: ssh::SshSessions,
    /// An application on the loop's thread (the embedded node).
    hook: Option<Box<dyn LoopHook>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("node", &self.node).field("tun", &self.tun).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Bind the sockets, create the TUN (when configured), and build the node with its
    /// peers. Nothing moves until [`Runtime::run`].
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let clock = Clock::new();
        let mut seed = [0u8; SEED_LEN];
        fill_random(&mut seed)?;
        let mut node = Node::new(config.node, seed, clock.now(), clock::unix_now())?;
        let poll = Poll::new().map_err(RuntimeError::Poll)?;
        let udp4 = UdpIo::bind(false, config.listen_port)?;
        let port = udp4.local_port().unwrap_or(config.listen_port);
        let udp6 = match UdpIo::bind(true, port) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(%error, "no IPv6 socket");
                None
            }
        };
        let mut udp = [Some(udp4), udp6];
        for (slot, token) in udp.iter_mut().zip([UDP4, UDP6]) {
            if let Some(s) = slot {
                poll.registry()
                    .register(&mut s.socket, token, Interest::READABLE | Interest::WRITABLE)
                    .map_err(RuntimeError::Poll)?;
            }
        }
        let (tun, mtu) = match &config.tun {
            Some(tc) => {
                let tun = Tun::create(tc)?;
                use std::os::fd::AsRawFd as _;
                let fd = tun.as_raw_fd();
                poll.registry()
                    .register(&mut mio::unix::SourceFd(&fd), TUN, Interest::READABLE)
                    .map_err(RuntimeError::Poll)?;
                (Some(tun), usize::from(tc.mtu))
            }
            None => (None, 1420),
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(RuntimeError::Poll)?);
        let now = clock.now();
        node.set_filter(now, config.filter);
        for (key, options) in config.peer_options {
            node.set_peer_options(now, key, options);
        }
        node.set_netmap(now, config.peers);
        let offload = tun.as_ref().is_some_and(Tun::offload);
        info!(port, offload, tun = tun.as_ref().map(Tun::name), public_key = ?node.public_key(), "runtime ready");
        let (tun_raw, tun_segments, tun_sizes, tun_out) = if offload {
            let segment = || {
                let mut b = bytes::BytesMut::with_capacity(mtu + DATA_OVERHEAD + 64);
                b.resize(DATA_HEADER_LEN + mtu + 32, 0);
                b
            };
            (
                vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + 65535],
                (0..tun_rs::IDEAL_BATCH_SIZE).map(|_| segment()).collect(),
                vec![0; tun_rs::IDEAL_BATCH_SIZE],
                (0..tun_rs::IDEAL_BATCH_SIZE).map(|_| bytes::BytesMut::with_capacity(mtu + 64)).collect(),
            )
        } else {
            (Vec::new(), Vec::new(), Vec::new(), Vec::new())
        };
        Ok(Self {
            node,
            clock,
            poll,
            udp,
            tun,
            mtu,
            signals: None,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            // Headroom, the packet, padding and tag, and slack.
            pool: BufferPool::new(mtu + DATA_OVERHEAD + 64, 1024),
            pending_udp: Vec::with_capacity(1024),
            pending_tun: Vec::with_capacity(1024),
            tun_raw,
            tun_segments,
            tun_sizes,
            tun_out,
            gro: tun_rs::GROTable::new(),
            udp_errors_in_row: [0; 2],
            metrics: Metrics::default(),
            daemon: None,
            ssh: ssh::SshSessions::default(),
            hook: None,
        })
    }

    /// End [`Runtime::run`] on SIGINT or SIGTERM.
    pub fn stop_on_signals(&mut self) -> Result<(), RuntimeError> {
        // SIGCHLD too: an SSH session's process ended (the loop reaps it then).
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGCHLD,
        ])
        .map_err(RuntimeError::Poll)?;
        self.poll.registry().register(&mut signals, SIGNALS, Interest::READABLE).map_err(RuntimeError::Poll)?;
        self.signals = Some(signals);
        Ok(())
    }

    /// A handle that ends [`Runtime::run`] from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper { waker: self.waker.clone(), stop: self.stop.clone() }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// A snapshot of the event loop's counters.
    pub fn metrics(&self) -> Metrics {
        Metrics { buffer_allocations: self.pool.allocations, ..self.metrics }
    }

    /// The UDP port WireGuard listens on.
    pub fn udp_port(&self) -> Option<u16> {
        self.udp[0].as_ref().and_then(UdpIo::local_port)
    }
}

/// 32 bytes from the OS for the core's RNG.
pub(crate) fn fill_random(seed: &mut [u8]) -> Result<(), RuntimeError> {
    let mut filled = 0;
    while filled < seed.len() {
        let rest = seed.get_mut(filled..).unwrap_or_default();
        match rustix::rand::getrandom(rest, rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(RuntimeError::Random(e.into())),
        }
    }
    Ok(())
}
