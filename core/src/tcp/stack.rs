//! [`TcpStack`]: the smoltcp interface, the listener pools, the connection table and the
//! API the layer above uses.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use thiserror::Error;
use tracing::{debug, trace};

use super::ack_seq::{self, Segment, SendEdge};
use super::device::QueueDevice;
use super::dup_ack::DupAcks;
use crate::ip::PacketInfo;
use crate::time::Instant;
use crate::wireguard::PeerId;

/// Sizes and bounds of the stack.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Receive and send buffer of every connection. At least the SSH channel window
    /// (2 MiB) so a bulk transfer is not window-bound; memory is touched only as used.
    pub buffer_size: usize,
    /// Half-open connections allowed per served endpoint before further SYNs are dropped.
    pub max_pending: usize,
    /// Open connections allowed in all (inbound and outbound, lingering TIME-WAIT ones
    /// included).
    pub max_connections: usize,
    /// Connections one peer may hold on this node's served ports (half-open included).
    pub max_connections_per_peer: usize,
    /// Half-open connections one peer may hold: its share of every port's `max_pending`.
    pub max_pending_per_peer: usize,
    pub mtu: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            buffer_size: 2 << 20,
            max_pending: 64,
            max_connections: 1024,
            max_connections_per_peer: 128,
            max_pending_per_peer: 8,
            mtu: 1280,
        }
    }
}

/// A configuration the stack refuses.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TcpConfigError {
    #[error("tcp: {0} must be at least 1")]
    Zero(&'static str),
    #[error("tcp: mtu {0} is outside 1280..=65535")]
    Mtu(usize),
    #[error("tcp: buffer size {0} is outside 1 KiB..=1 GiB")]
    Buffer(usize),
}

impl TcpConfig {
    /// Check the bounds (zero limits would lock everyone out; an MTU below IPv6's minimum
    /// or a buffer beyond smoltcp's window scaling is a mistake).
    pub fn validate(&self) -> Result<(), TcpConfigError> {
        for (name, value) in [
            ("max_pending", self.max_pending),
            ("max_connections", self.max_connections),
            ("max_connections_per_peer", self.max_connections_per_peer),
            ("max_pending_per_peer", self.max_pending_per_peer),
        ] {
            if value == 0 {
                return Err(TcpConfigError::Zero(name));
            }
        }
        if !(1280..=65535).contains(&self.mtu) {
            return Err(TcpConfigError::Mtu(self.mtu));
        }
        if !(1024..=1 << 30).contains(&self.buffer_size) {
            return Err(TcpConfigError::Buffer(self.buffer_size));
        }
        Ok(())
    }
}

/// A connection's handle for the layer above. Made only by the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(u64);

impl ConnId {
    /// The id as a number (for logs and traces; ids are never made from numbers).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// What the layer above must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    /// A connection to a served port completed its handshake. `peer` is the WireGuard
    /// peer that carried the SYN, or `None` when it came from this node's own TUN side.
    Accepted { conn: ConnId, peer: Option<PeerId>, local: SocketAddr, remote: SocketAddr },
    /// An outbound connection is established.
    Connected { conn: ConnId },
    /// Data (or the peer's FIN) is waiting: call [`TcpStack::recv`] until it returns 0.
    Readable { conn: ConnId },
    /// Send buffer space became available after [`TcpStack::send`] accepted less than asked.
    Writable { conn: ConnId },
    /// The connection is gone (closed, reset or timed out); its id is no longer valid.
    Closed { conn: ConnId },
}

/// A call the stack cannot carry out.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum TcpError {
    #[error("no such connection")]
    NoSuchConnection,
    #[error("too many connections")]
    TooManyConnections,
    #[error("connection is not open for this operation")]
    InvalidState,
    #[error("no free local port")]
    NoPort,
    #[error("port is served by the node itself")]
    PortReserved,
}

/// What the stack refused, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments of a connection that arrived from another peer than the one bound to it.
    pub foreign_segments: u64,
    /// SYNs dropped because the peer's share (connections or half-open) was used up.
    pub syns_over_peer_share: u64,
    /// SYNs dropped because the endpoint's half-open bound or the stack's connection
    /// bound was reached.
    pub syns_over_capacity: u64,
}

/// Who a connection counts against: a peer, or this node's own TUN side (`None`).
type Owner = Option<PeerId>;

#[derive(Clone, Copy, Debug, Default)]
struct Share {
    connections: usize,
    half_open: usize,
}

#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
    /// Inbound: the peer that carried the SYN. Outbound: the peer that answered (bound by
    /// the first segment that arrives; WireGuard already checked that this peer owns the
    /// remote address).
    peer: Option<PeerId>,
    bound: bool,
    /// Accepted on a served endpoint (vs. opened by us).
    inbound: bool,
    /// Reported to the layer above (Accepted/Connected sent).
    announced: bool,
    /// `Closed` reported; the socket lingers in TIME-WAIT so that a retransmitted FIN is
    /// answered and the 4-tuple is not reused at once. Invisible to the API.
    lingering: bool,
    readable_signalled: bool,
    wants_writable: bool,
    /// The peer's FIN was seen (CLOSE-WAIT or later): the connection can end gracefully
    /// with received data still unread.
    fin_seen: bool,
    /// (local, remote): the key of `TcpStack::flows`.
    flow: (SocketAddr, SocketAddr),
    /// The served endpoint an inbound connection came in on.
    endpoint: Option<(IpAddr, u16)>,
    /// What the connection sent, to keep its pure ACKs acceptable (see `ack_seq`).
    edge: SendEdge,
    /// The peer's last ACK, to let smoltcp count duplicate ACKs (see `dup_ack`).
    dup_acks: DupAcks,
}

/// Userspace TCP for one node.
///
/// Segments are demultiplexed here, by exact 4-tuple, before smoltcp sees them: a segment
/// of a known connection is processed against the connection sockets alone (so a
/// retransmitted SYN reaches its half-open connection, never a listener), and only a SYN
/// for a served endpoint, within its sender's share, reaches the listening socket of that
/// endpoint. Listening sockets live in their own socket set for that reason.
pub struct TcpStack {
    config: TcpConfig,
    iface: Interface,
    device: QueueDevice,
    /// Connection sockets.
    sockets: SocketSet<'static>,
    /// One listening socket per served endpoint.
    listening: SocketSet<'static>,
    listeners: BTreeMap<(IpAddr, u16), SocketHandle>,
    conns: BTreeMap<ConnId, Conn>,
    /// (local, remote) endpoints -> connection.
    flows: BTreeMap<(SocketAddr, SocketAddr), ConnId>,
    /// Local ports of outbound connections (lingering ones included).
    outbound_ports: BTreeSet<u16>,
    /// Inbound connections and half-open ones per owner.
    shares: BTreeMap<Owner, Share>,
    /// Half-open connections per served endpoint.
    pending: BTreeMap<(IpAddr, u16), usize>,
    /// Connections an input may have changed, looked at after the next poll.
    dirty: BTreeSet<ConnId>,
    /// When smoltcp next needs `handle_timeout`, as of the last poll.
    deadline: Option<Instant>,
    local_addrs: Vec<IpAddr>,
    next_conn: u64,
    next_port: u16,
    events: VecDeque<TcpEvent>,
    stats: TcpStats,
}

impl std::fmt::Debug for TcpStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStack")
            .field("local_addrs", &self.local_addrs)
            .field("listeners", &self.listeners.keys().collect::<Vec<_>>())
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

fn smol_now(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(now.as_micros()).unwrap_or(i64::MAX))
}

fn to_socket_addr(ep: IpEndpoint) -> SocketAddr {
    SocketAddr::new(ep.addr.into(), ep.port)
}

impl TcpStack {
    /// A stack owning `addrs` (the node's mesh addresses, 100.100.100.100, ...).
    /// `seed` comes from the node's RNG (initial sequence numbers, ports).
    pub fn new(config: TcpConfig, addrs: &[IpAddr], seed: u64, now: Instant) -> Self {
        let mut device = QueueDevice::new(config.mtu);
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = seed;
        let mut iface = Interface::new(iface_config, &mut device, smol_now(now));
        iface.update_ip_addrs(|list| {
            for addr in addrs {
                let cidr = match addr {
                    IpAddr::V4(a) => IpCidr::new(IpAddress::Ipv4(*a), 32),
                    IpAddr::V6(a) => IpCidr::new(IpAddress::Ipv6(*a), 128),
                };
                if list.push(cidr).is_err() {
                    debug!(%addr, "interface address table full");
                }
            }
        });
        // Everything not local goes out to the node, which routes it by allowed IPs; the
        // gateway is meaningless on an IP-medium interface.
        for addr in addrs {
            let _ = match addr {
                IpAddr::V4(a) => iface.routes_mut().add_default_ipv4_route(*a).map(|_| ()),
                IpAddr::V6(a) => iface.routes_mut().add_default_ipv6_route(*a).map(|_| ()),
            };
        }
        Self {
            config,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            listening: SocketSet::new(Vec::new()),
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            flows: BTreeMap::new(),
            outbound_ports: BTreeSet::new(),
            shares: BTreeMap::new(),
            pending: BTreeMap::new(),
            dirty: BTreeSet::new(),
            local_addrs: addrs.to_vec(),
            deadline: None,
            next_conn: 0,
            next_port: 49152 + (seed % 16384) as u16,
            events: VecDeque::new(),
            stats: TcpStats::default(),
        }
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(vec![0u8; self.config.buffer_size]);
        let tx = tcp::SocketBuffer::new(vec![0u8; self.config.buffer_size]);
        let mut socket = tcp::Socket::new(rx, tx);
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(120)));
        socket.set_keep_alive(Some(smoltcp::time::Duration::from_secs(30)));
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        socket
    }

    /// Serve `port` on the local address `addr` (one of the stack's addresses).
    pub fn listen(&mut self, addr: IpAddr, port: u16) {
        if !self.local_addrs.contains(&addr) || self.listeners.contains_key(&(addr, port)) {
            return;
        }
        self.add_listener((addr, port));
    }

    /// Stop serving `port` on `addr`. Connections it accepted stay (as a kernel's do when
    /// the listening socket closes); a SYN already taken by the listening socket but not yet
    /// adopted goes with it.
    pub fn unlisten(&mut self, addr: IpAddr, port: u16) {
        if let Some(handle) = self.listeners.remove(&(addr, port)) {
            self.listening.remove(handle);
        }
    }

    /// Whether `port` is served on `addr`.
    pub fn is_listening(&self, addr: IpAddr, port: u16) -> bool {
        self.listeners.contains_key(&(addr, port))
    }

    fn add_listener(&mut self, endpoint: (IpAddr, u16)) {
        let mut socket = self.new_socket();
        let listen = IpListenEndpoint { addr: Some(endpoint.0.into()), port: endpoint.1 };
        if socket.listen(listen).is_err() {
            debug!(addr = %endpoint.0, port = endpoint.1, "cannot listen");
            return;
        }
        let handle = self.listening.add(socket);
        self.listeners.insert(endpoint, handle);
    }

    /// Whether an inbound packet is for this stack: a SYN-or-anything to a served endpoint,
    /// or a segment of one of the stack's own connections (matched by exact 4-tuple, so
    /// the kernel's connections on the same ports are never claimed).
    pub fn serves(&self, info: &PacketInfo) -> bool {
        let local = SocketAddr::new(info.dst, info.dst_port);
        let remote = SocketAddr::new(info.src, info.src_port);
        self.listeners.contains_key(&(info.dst, info.dst_port)) || self.flows.contains_key(&(local, remote))
    }

    /// An inbound IP packet for this stack (the node checked [`Self::serves`], the inner
    /// source and the filter). `peer` is the WireGuard peer that delivered it; `None` for
    /// packets from this node's own TUN side.
    pub fn handle_packet(&mut self, now: Instant, peer: Option<PeerId>, info: &PacketInfo, mut packet: BytesMut) {
        packet.truncate(info.total_len);
        let local = SocketAddr::new(info.dst, info.dst_port);
        let remote = SocketAddr::new(info.src, info.src_port);
        if let Some(&id) = self.flows.get(&(local, remote)) {
            let Some(c) = self.conns.get_mut(&id) else { return };
            if c.bound && c.peer != peer {
                self.stats.foreign_segments += 1;
                trace!(%local, %remote, ?peer, bound = ?c.peer, "segment from another peer than the connection's dropped");
                return;
            }
            c.peer = peer;
            c.bound = true;
            let mut copies = 0;
            if let Some(segment) = Segment::parse(&packet) {
                c.edge.inbound(&segment);
                let fix = c.dup_acks.inbound(&segment, &mut packet);
                if fix.rewritten {
                    trace!(%local, %remote, "duplicate ACK handed on with the window before it");
                }
                if fix.copies > 0 {
                    trace!(%local, %remote, "partial ACK short of a SACKed hole repeated for a fast retransmit");
                }
                copies = fix.copies;
            }
            self.dirty.insert(id);
            for _ in 0..copies {
                self.device.rx.push_back(packet.clone());
            }
            self.device.rx.push_back(packet);
            self.poll(now);
            return;
        }
        let endpoint = (info.dst, info.dst_port);
        if !self.listeners.contains_key(&endpoint) {
            return;
        }
        if info.is_tcp_syn() && !self.admit(peer, endpoint) {
            // Dropped, not refused: the client retransmits and gets in when room frees.
            return;
        }
        // A SYN within its shares goes to the endpoint's listening socket; any other
        // segment without a connection meets no socket, and smoltcp answers it with RST.
        let emitted = self.device.tx.len();
        self.device.rx.push_back(packet);
        let timestamp = smol_now(now);
        self.iface.poll(timestamp, &mut self.device, &mut self.listening);
        if info.is_tcp_syn() {
            self.adopt(endpoint, peer);
        }
        self.fix_ack_seqs(emitted);
        self.poll(now);
    }

    /// Whether a SYN from `peer` to `endpoint` may open a connection.
    fn admit(&mut self, peer: Owner, endpoint: (IpAddr, u16)) -> bool {
        let share = self.shares.get(&peer).copied().unwrap_or_default();
        if share.connections >= self.config.max_connections_per_peer
            || share.half_open >= self.config.max_pending_per_peer
        {
            self.stats.syns_over_peer_share += 1;
            trace!(?peer, ?share, "SYN over the peer's share dropped");
            return false;
        }
        let pending = self.pending.get(&endpoint).copied().unwrap_or(0);
        if pending >= self.config.max_pending || self.conns.len() >= self.config.max_connections {
            self.stats.syns_over_capacity += 1;
            trace!(?peer, pending, "SYN over capacity dropped");
            return false;
        }
        true
    }

    /// The endpoint's listening socket took the SYN: it becomes a connection, tagged with
    /// the SYN's peer, and a fresh socket listens in its place.
    fn adopt(&mut self, endpoint: (IpAddr, u16), peer: Owner) {
        let Some(&handle) = self.listeners.get(&endpoint) else { return };
        let socket = self.listening.get::<tcp::Socket>(handle);
        if socket.state() == tcp::State::Listen {
            return;
        }
        let flow = socket.local_endpoint().zip(socket.remote_endpoint());
        self.listeners.remove(&endpoint);
        let socket = self.listening.remove(handle);
        self.add_listener(endpoint);
        let Some((l, r)) = flow else { return };
        let flow = (to_socket_addr(l), to_socket_addr(r));
        let handle = self.sockets.add(socket);
        let conn = self.register(handle, peer, true, flow);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.endpoint = Some(endpoint);
        }
        let share = self.shares.entry(peer).or_default();
        share.connections += 1;
        share.half_open += 1;
        *self.pending.entry(endpoint).or_default() += 1;
    }

    /// Run timers (retransmissions, keepalives, time-wait).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.dirty.extend(self.conns.keys().copied());
        self.poll(now);
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// An IP packet the stack sends, after [`crate::wireguard::DATA_HEADER_LEN`] bytes of
    /// headroom (the layout [`crate::wireguard::WireGuard::handle_packet`] takes).
    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.device.tx.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TcpEvent> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// Open a connection to `remote` (through the peer that routes to it).
    pub fn connect(&mut self, now: Instant, remote: SocketAddr) -> Result<ConnId, TcpError> {
        if self.conns.len() >= self.config.max_connections {
            return Err(TcpError::TooManyConnections);
        }
        let local_addr =
            self.local_addrs.iter().find(|a| a.is_ipv4() == remote.is_ipv4()).copied().ok_or(TcpError::InvalidState)?;
        let port = self.alloc_port().ok_or(TcpError::NoPort)?;
        let mut socket = self.new_socket();
        socket
            .connect(
                self.iface.context(),
                (IpAddress::from(remote.ip()), remote.port()),
                (IpAddress::from(local_addr), port),
            )
            .map_err(|_| TcpError::InvalidState)?;
        let handle = self.sockets.add(socket);
        let conn = self.register(handle, None, false, (SocketAddr::new(local_addr, port), remote));
        self.outbound_ports.insert(port);
        self.poll(now);
        Ok(conn)
    }

    fn alloc_port(&mut self) -> Option<u16> {
        for _ in 0..16384 {
            let port = self.next_port;
            self.next_port = if self.next_port == u16::MAX { 49152 } else { self.next_port + 1 };
            let served = self.listeners.keys().any(|&(_, p)| p == port);
            if !served && !self.outbound_ports.contains(&port) {
                return Some(port);
            }
        }
        None
    }

    fn register(&mut self, handle: SocketHandle, peer: Owner, inbound: bool, flow: (SocketAddr, SocketAddr)) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                handle,
                peer,
                bound: inbound,
                inbound,
                announced: false,
                lingering: false,
                readable_signalled: false,
                wants_writable: false,
                fin_seen: false,
                flow,
                endpoint: None,
                edge: SendEdge::default(),
                dup_acks: DupAcks::default(),
            },
        );
        self.flows.insert(flow, conn);
        self.dirty.insert(conn);
        conn
    }

    /// A connection the layer above may use (not a lingering TIME-WAIT one).
    fn live(&mut self, conn: ConnId) -> Result<&mut Conn, TcpError> {
        match self.conns.get_mut(&conn) {
            Some(c) if !c.lingering => Ok(c),
            _ => Err(TcpError::NoSuchConnection),
        }
    }

    /// Read received bytes; `Ok(0)` when nothing is waiting (or after the peer's FIN).
    pub fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TcpError> {
        let c = self.live(conn)?;
        let handle = c.handle;
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let n = if socket.can_recv() { socket.recv_slice(buf).map_err(|_| TcpError::InvalidState)? } else { 0 };
        let drained = socket.recv_queue() == 0;
        if drained {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.readable_signalled = false;
            }
        }
        self.dirty.insert(conn);
        Ok(n)
    }

    /// Whether the peer has closed its direction (FIN received) and everything before it
    /// has been read: what a `recv` of 0 bytes means as opposed to "nothing yet".
    /// A lingering connection (TIME-WAIT, entered only after both FINs and once everything
    /// received was read) answers `true` until it is forgotten, so that a reader learns
    /// "finished" also when its last read moved the connection there.
    pub fn peer_finished(&self, conn: ConnId) -> Result<bool, TcpError> {
        let c = self.conns.get(&conn).ok_or(TcpError::NoSuchConnection)?;
        if c.lingering {
            return Ok(true);
        }
        let socket = self.sockets.get::<tcp::Socket>(c.handle);
        Ok(!socket.may_recv() && socket.recv_queue() == 0)
    }

    /// Queue bytes to send; returns how many fit (back-pressure: the rest must wait for
    /// [`TcpEvent::Writable`]). Call [`Self::flush`] (or any input) to put them on the wire.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TcpError> {
        let c = self.live(conn)?;
        let handle = c.handle;
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if !socket.may_send() {
            return Err(TcpError::InvalidState);
        }
        let n = socket.send_slice(data).map_err(|_| TcpError::InvalidState)?;
        if n < data.len() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.wants_writable = true;
            }
        }
        self.dirty.insert(conn);
        Ok(n)
    }

    /// Emit what `send` queued.
    pub fn flush(&mut self, now: Instant) {
        self.poll(now);
    }

    /// Close our direction (FIN); the connection ends when the peer closes too.
    pub fn close(&mut self, now: Instant, conn: ConnId) -> Result<(), TcpError> {
        let handle = self.live(conn)?.handle;
        self.sockets.get_mut::<tcp::Socket>(handle).close();
        self.dirty.insert(conn);
        self.poll(now);
        Ok(())
    }

    /// Reset the connection (RST) and forget it at once.
    pub fn abort(&mut self, now: Instant, conn: ConnId) -> Result<(), TcpError> {
        let handle = self.live(conn)?.handle;
        self.sockets.get_mut::<tcp::Socket>(handle).abort();
        self.dirty.insert(conn);
        self.poll(now);
        Ok(())
    }

    /// Forget, without a word on the wire, every connection `pred` picks by its bound peer
    /// and remote endpoint: those of a peer the netmap removed or re-keyed, whose packets
    /// could now only reach whoever holds the address next. Announced connections report
    /// `Closed`. Returns how many went.
    pub fn purge(&mut self, mut pred: impl FnMut(Option<PeerId>, SocketAddr) -> bool) -> usize {
        let doomed: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| pred(c.peer.filter(|_| c.bound), c.flow.1)).map(|(&id, _)| id).collect();
        for &id in &doomed {
            self.remove(id);
        }
        doomed.len()
    }

    /// The peer whose SYN opened an accepted connection (`None`: outbound, or from this
    /// node's TUN side).
    pub fn peer_of(&self, conn: ConnId) -> Option<PeerId> {
        self.conns.get(&conn).filter(|c| c.inbound && !c.lingering).and_then(|c| c.peer)
    }

    /// Local and remote endpoints of a connection.
    pub fn endpoints(&self, conn: ConnId) -> Option<(SocketAddr, SocketAddr)> {
        self.conns.get(&conn).filter(|c| !c.lingering).map(|c| c.flow)
    }

    /// Accepted (inbound) connections whose (local, remote) endpoints match `pred`, in id
    /// order: to cut those a new filter no longer allows.
    pub fn accepted_matching(&self, mut pred: impl FnMut(SocketAddr, SocketAddr) -> bool) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.inbound && c.peer.is_some() && !c.lingering && pred(c.flow.0, c.flow.1))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Connections held, lingering ones included.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Run smoltcp over the connection sockets, then turn the state changes of the
    /// connections an input touched into events.
    fn poll(&mut self, now: Instant) {
        let timestamp = smol_now(now);
        let emitted = self.device.tx.len();
        self.iface.poll(timestamp, &mut self.device, &mut self.sockets);
        self.fix_ack_seqs(emitted);
        self.update_connections();
        self.deadline = self.iface.poll_at(timestamp, &self.sockets).map(|at| {
            Instant::from_micros(u64::try_from(at.total_micros()).unwrap_or(0)).max(now + Duration::from_micros(1))
        });
    }

    /// Packets emitted since `tx[from]`: let each connection see its segments, and raise
    /// the sequence number of pure ACKs smoltcp sent from a rewound send position.
    fn fix_ack_seqs(&mut self, from: usize) {
        for buf in self.device.tx.iter_mut().skip(from) {
            let Some(packet) = buf.get_mut(crate::wireguard::DATA_HEADER_LEN..) else { continue };
            let Some(segment) = Segment::parse(packet) else { continue };
            let Some(c) = self.flows.get(&(segment.src, segment.dst)).and_then(|id| self.conns.get_mut(id)) else {
                continue;
            };
            if ack_seq::outbound(&mut c.edge, &segment, packet) {
                trace!(src = %segment.src, dst = %segment.dst, "pure ACK sent with SND.MAX, not the rewound sequence");
            }
        }
    }

    fn update_connections(&mut self) {
        let mut gone = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(&id) else { continue };
            let socket = self.sockets.get::<tcp::Socket>(c.handle);
            let state = socket.state();
            if matches!(state, tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait)
            {
                c.fin_seen = true;
            }
            // Data that arrived before the peer's FIN stays readable after the connection
            // ended gracefully (TIME-WAIT, or CLOSED after LAST-ACK); the end is reported once
            // it has been read. After a reset (no FIN seen) it is discarded, as a kernel does.
            let unread = c.fin_seen && socket.recv_queue() > 0;
            if !c.announced && matches!(state, tcp::State::Established | tcp::State::CloseWait) {
                c.announced = true;
                if c.inbound {
                    if let Some(share) = self.shares.get_mut(&c.peer) {
                        share.half_open = share.half_open.saturating_sub(1);
                    }
                    if let Some(pending) = c.endpoint.and_then(|e| self.pending.get_mut(&e)) {
                        *pending = pending.saturating_sub(1);
                    }
                    self.events.push_back(TcpEvent::Accepted {
                        conn: id,
                        peer: c.peer,
                        local: c.flow.0,
                        remote: c.flow.1,
                    });
                } else {
                    self.events.push_back(TcpEvent::Connected { conn: id });
                }
            }
            if c.lingering {
                if state == tcp::State::Closed {
                    gone.push(id);
                }
                continue;
            }
            if c.announced && !c.readable_signalled && (socket.can_recv() || !socket.may_recv()) {
                c.readable_signalled = true;
                self.events.push_back(TcpEvent::Readable { conn: id });
            }
            if c.wants_writable && socket.can_send() {
                c.wants_writable = false;
                self.events.push_back(TcpEvent::Writable { conn: id });
            }
            match state {
                _ if unread => {}
                tcp::State::Closed => gone.push(id),
                // The connection is over for the layer above; the socket stays to answer a
                // retransmitted FIN and keep the 4-tuple from being reused at once.
                tcp::State::TimeWait => {
                    c.lingering = true;
                    if c.announced || !c.inbound {
                        self.events.push_back(TcpEvent::Closed { conn: id });
                    }
                }
                _ => {}
            }
        }
        for id in gone {
            self.remove(id);
        }
    }

    /// Drop a connection and its socket, releasing its shares; report `Closed` unless it
    /// was reported already or never announced (a half-open inbound one vanishes quietly;
    /// an outbound one always learns its end, also a refused or timed-out connect).
    fn remove(&mut self, id: ConnId) {
        let Some(c) = self.conns.remove(&id) else { return };
        if self.flows.get(&c.flow) == Some(&id) {
            self.flows.remove(&c.flow);
        }
        if !c.inbound {
            self.outbound_ports.remove(&c.flow.0.port());
        }
        self.sockets.remove(c.handle);
        self.dirty.remove(&id);
        if c.inbound {
            if let Some(share) = self.shares.get_mut(&c.peer) {
                share.connections = share.connections.saturating_sub(1);
                if !c.announced {
                    share.half_open = share.half_open.saturating_sub(1);
                }
                if share.connections == 0 {
                    self.shares.remove(&c.peer);
                }
            }
            if !c.announced {
                if let Some(pending) = c.endpoint.and_then(|e| self.pending.get_mut(&e)) {
                    *pending = pending.saturating_sub(1);
                }
            }
        }
        if !c.lingering && (c.announced || !c.inbound) {
            self.events.push_back(TcpEvent::Closed { conn: id });
        }
    }
}
