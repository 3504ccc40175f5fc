//! [`TcpStack`]: the smoltcp interface, the listener pools, the connection table and the
//! API the layer above uses.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use thiserror::Error;
use tracing::{debug, trace};

use super::ack_seq::{self, Segment, SendEdge};
use super::device::QueueDevice;
use crate::ip::PacketInfo;
use crate::time::Instant;
use crate::wireguard::PeerId;

/// Sizes and bounds of the stack.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Receive and send buffer of every connection. At least the SSH channel window
    /// (2 MiB) so a bulk transfer is not window-bound; memory is touched only as used.
    pub buffer_size: usize,
    /// Listening sockets kept ready per served port.
    pub listen_pool: usize,
    /// Half-open connections allowed per served port before SYNs are refused.
    pub max_pending: usize,
    /// Open connections allowed in all.
    pub max_connections: usize,
    pub mtu: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self { buffer_size: 2 << 20, listen_pool: 4, max_pending: 64, max_connections: 1024, mtu: 1280 }
    }
}

/// A connection's handle for the layer above.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

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
}

#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
    peer: Option<PeerId>,
    /// Accepted on a served port (vs. opened by us).
    inbound: bool,
    /// The local port of an outbound connection.
    local_port: Option<u16>,
    /// Reported to the layer above (Accepted/Connected sent).
    announced: bool,
    readable_signalled: bool,
    wants_writable: bool,
    /// (local, remote) once known: the key of `TcpStack::flows`.
    flow: Option<(SocketAddr, SocketAddr)>,
    /// What the connection sent, to keep its pure ACKs acceptable (see `ack_seq`).
    edge: SendEdge,
}

/// Userspace TCP for one node.
pub struct TcpStack {
    config: TcpConfig,
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    /// Served port -> listening sockets.
    listeners: BTreeMap<u16, Vec<SocketHandle>>,
    conns: BTreeMap<ConnId, Conn>,
    /// (local, remote) endpoints -> connection, for the segments passing through.
    flows: BTreeMap<(SocketAddr, SocketAddr), ConnId>,
    /// Local ports of outbound connections (so `serves` is a lookup, not a scan).
    outbound_ports: BTreeSet<u16>,
    /// (remote, local) endpoint of the SYN being processed -> who sent it.
    syn_peers: BTreeMap<(SocketAddr, SocketAddr), Option<PeerId>>,
    /// When smoltcp next needs `handle_timeout`, as of the last poll.
    deadline: Option<Instant>,
    local_addrs: Vec<IpAddr>,
    next_conn: u64,
    next_port: u16,
    events: VecDeque<TcpEvent>,
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
        let mut device = QueueDevice { mtu: config.mtu, ..QueueDevice::default() };
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
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            flows: BTreeMap::new(),
            outbound_ports: BTreeSet::new(),
            syn_peers: BTreeMap::new(),
            local_addrs: addrs.to_vec(),
            deadline: None,
            next_conn: 0,
            next_port: 49152 + (seed % 16384) as u16,
            events: VecDeque::new(),
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

    /// Serve `port` on every local address.
    pub fn listen(&mut self, port: u16) {
        self.listeners.entry(port).or_default();
        self.replenish(port);
    }

    /// Whether a packet to `dst:port` is for this stack.
    pub fn serves(&self, dst: IpAddr, port: u16) -> bool {
        self.local_addrs.contains(&dst) && (self.listeners.contains_key(&port) || self.has_local_port(port))
    }

    fn has_local_port(&self, port: u16) -> bool {
        self.outbound_ports.contains(&port)
    }

    fn replenish(&mut self, port: u16) {
        let pending = self
            .conns
            .values()
            .filter(|c| c.inbound && !c.announced)
            .filter(|c| self.sockets.get::<tcp::Socket>(c.handle).local_endpoint().is_some_and(|ep| ep.port == port))
            .count();
        let listening = self.listeners.get(&port).map_or(0, Vec::len);
        let room = self.config.max_connections.saturating_sub(self.conns.len() + listening);
        let want = if pending >= self.config.max_pending { 0 } else { self.config.listen_pool.min(room + listening) };
        for _ in listening..want {
            let mut socket = self.new_socket();
            if socket.listen(port).is_err() {
                return;
            }
            let handle = self.sockets.add(socket);
            self.listeners.entry(port).or_default().push(handle);
        }
    }

    /// An inbound IP packet for this stack (the node checked `serves`, the inner source and
    /// the filter). `peer` is the WireGuard peer that delivered it; `None` for packets from
    /// this node's own TUN side.
    pub fn handle_packet(&mut self, now: Instant, peer: Option<PeerId>, info: &PacketInfo, mut packet: BytesMut) {
        // The SYN's sender is remembered only for the poll that processes it: a listening
        // socket takes it there, or the SYN is refused (or belongs to a half-open socket
        // already tagged). So the map never holds more than one entry between calls.
        let syn = info
            .is_tcp_syn()
            .then(|| (SocketAddr::new(info.src, info.src_port), SocketAddr::new(info.dst, info.dst_port)));
        // A SYN for a served port whose listeners are all taken (the half-open bound) is
        // dropped, not refused: the client retransmits it and gets in when a slot frees.
        let exhausted = self.listeners.get(&info.dst_port).is_some_and(|l| l.is_empty());
        if syn.is_some() && exhausted && !self.has_half_open(syn) {
            return;
        }
        if let Some(key) = syn {
            self.syn_peers.insert(key, peer);
        }
        packet.truncate(info.total_len);
        let flow = (SocketAddr::new(info.dst, info.dst_port), SocketAddr::new(info.src, info.src_port));
        if let Some(c) = self.flows.get(&flow).and_then(|id| self.conns.get_mut(id)) {
            if let Some(segment) = Segment::parse(&packet) {
                c.edge.inbound(&segment);
            }
        }
        self.device.rx.push_back(packet);
        self.poll(now);
        if let Some(key) = syn {
            self.syn_peers.remove(&key);
        }
    }

    /// Whether a half-open connection already exists for this SYN's endpoints (then the
    /// SYN is a retransmission that its socket must see).
    fn has_half_open(&self, syn: Option<(SocketAddr, SocketAddr)>) -> bool {
        let Some((remote, local)) = syn else { return false };
        self.conns.values().any(|c| {
            let s = self.sockets.get::<tcp::Socket>(c.handle);
            c.inbound
                && !c.announced
                && s.remote_endpoint().map(to_socket_addr) == Some(remote)
                && s.local_endpoint().map(to_socket_addr) == Some(local)
        })
    }

    /// Run timers (retransmissions, keepalives, time-wait).
    pub fn handle_timeout(&mut self, now: Instant) {
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
        let conn = self.register(handle, None, false);
        let flow = (SocketAddr::new(local_addr, port), remote);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.local_port = Some(port);
            c.flow = Some(flow);
        }
        self.flows.insert(flow, conn);
        self.outbound_ports.insert(port);
        self.poll(now);
        Ok(conn)
    }

    fn alloc_port(&mut self) -> Option<u16> {
        for _ in 0..16384 {
            let port = self.next_port;
            self.next_port = if self.next_port == u16::MAX { 49152 } else { self.next_port + 1 };
            if !self.listeners.contains_key(&port) && !self.has_local_port(port) {
                return Some(port);
            }
        }
        None
    }

    fn register(&mut self, handle: SocketHandle, peer: Option<PeerId>, inbound: bool) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                handle,
                peer,
                inbound,
                local_port: None,
                announced: false,
                readable_signalled: false,
                wants_writable: false,
                flow: None,
                edge: SendEdge::default(),
            },
        );
        conn
    }

    /// Read received bytes; `Ok(0)` when nothing is waiting (or after the peer's FIN).
    pub fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<usize, TcpError> {
        let c = self.conns.get_mut(&conn).ok_or(TcpError::NoSuchConnection)?;
        let socket = self.sockets.get_mut::<tcp::Socket>(c.handle);
        let n = if socket.can_recv() { socket.recv_slice(buf).map_err(|_| TcpError::InvalidState)? } else { 0 };
        if socket.recv_queue() == 0 {
            c.readable_signalled = false;
        }
        Ok(n)
    }

    /// Whether the peer has closed its direction (FIN received) and everything before it
    /// has been read: what a `recv` of 0 bytes means as opposed to "nothing yet".
    pub fn peer_finished(&self, conn: ConnId) -> Result<bool, TcpError> {
        let c = self.conns.get(&conn).ok_or(TcpError::NoSuchConnection)?;
        let socket = self.sockets.get::<tcp::Socket>(c.handle);
        Ok(!socket.may_recv() && socket.recv_queue() == 0)
    }

    /// Queue bytes to send; returns how many fit (back-pressure: the rest must wait for
    /// [`TcpEvent::Writable`]). Call [`Self::flush`] (or any input) to put them on the wire.
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<usize, TcpError> {
        let c = self.conns.get_mut(&conn).ok_or(TcpError::NoSuchConnection)?;
        let socket = self.sockets.get_mut::<tcp::Socket>(c.handle);
        if !socket.may_send() {
            return Err(TcpError::InvalidState);
        }
        let n = socket.send_slice(data).map_err(|_| TcpError::InvalidState)?;
        if n < data.len() {
            c.wants_writable = true;
        }
        Ok(n)
    }

    /// Emit what `send` queued.
    pub fn flush(&mut self, now: Instant) {
        self.poll(now);
    }

    /// Close our direction (FIN); the connection ends when the peer closes too.
    pub fn close(&mut self, now: Instant, conn: ConnId) -> Result<(), TcpError> {
        let c = self.conns.get(&conn).ok_or(TcpError::NoSuchConnection)?;
        self.sockets.get_mut::<tcp::Socket>(c.handle).close();
        self.poll(now);
        Ok(())
    }

    /// Reset the connection (RST) and forget it at once.
    pub fn abort(&mut self, now: Instant, conn: ConnId) -> Result<(), TcpError> {
        let c = self.conns.get(&conn).ok_or(TcpError::NoSuchConnection)?;
        self.sockets.get_mut::<tcp::Socket>(c.handle).abort();
        self.poll(now);
        Ok(())
    }

    /// The peer whose SYN opened an accepted connection (`None`: outbound, or from this
    /// node's TUN side).
    pub fn peer_of(&self, conn: ConnId) -> Option<PeerId> {
        self.conns.get(&conn).and_then(|c| c.peer)
    }

    /// Local and remote endpoints of a connection.
    pub fn endpoints(&self, conn: ConnId) -> Option<(SocketAddr, SocketAddr)> {
        let c = self.conns.get(&conn)?;
        let socket = self.sockets.get::<tcp::Socket>(c.handle);
        Some((to_socket_addr(socket.local_endpoint()?), to_socket_addr(socket.remote_endpoint()?)))
    }

    /// Connections whose endpoints match `pred` (for cutting flows the filter no longer
    /// allows), in id order.
    pub fn connections_matching(&self, mut pred: impl FnMut(SocketAddr, SocketAddr) -> bool) -> Vec<ConnId> {
        self.conns.keys().copied().filter(|&id| self.endpoints(id).is_some_and(|(l, r)| pred(l, r))).collect()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Run smoltcp, then turn socket state changes into connections and events.
    fn poll(&mut self, now: Instant) {
        let timestamp = smol_now(now);
        let emitted = self.device.tx.len();
        self.iface.poll(timestamp, &mut self.device, &mut self.sockets);
        self.adopt_listeners();
        self.update_connections();
        let ports: Vec<u16> = self.listeners.keys().copied().collect();
        for port in ports {
            self.replenish(port);
        }
        // Replenished listeners and state changes may have produced packets (RSTs).
        self.iface.poll(timestamp, &mut self.device, &mut self.sockets);
        self.fix_ack_seqs(emitted);
        self.deadline = self.iface.poll_at(timestamp, &self.sockets).map(|at| {
            Instant::from_micros(u64::try_from(at.total_micros()).unwrap_or(0)).max(now + Duration::from_micros(1))
        });
    }

    /// Listening sockets that took a SYN become connections, tagged with the SYN's peer.
    fn adopt_listeners(&mut self) {
        let mut taken = Vec::new();
        for (&port, handles) in &mut self.listeners {
            handles.retain(|&h| {
                let busy = self.sockets.get::<tcp::Socket>(h).state() != tcp::State::Listen;
                if busy {
                    taken.push((port, h));
                }
                !busy
            });
        }
        for (_, handle) in taken {
            let socket = self.sockets.get::<tcp::Socket>(handle);
            let flow = socket.local_endpoint().zip(socket.remote_endpoint());
            let flow = flow.map(|(l, r)| (to_socket_addr(l), to_socket_addr(r)));
            let tag = flow.and_then(|(l, r)| self.syn_peers.remove(&(r, l)));
            let Some(peer) = tag else {
                // Cannot happen for SYNs that came through handle_packet; refuse rather
                // than accept a connection without an identity.
                self.sockets.get_mut::<tcp::Socket>(handle).abort();
                self.register(handle, None, true);
                continue;
            };
            let conn = self.register(handle, peer, true);
            if let Some(flow) = flow {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.flow = Some(flow);
                }
                self.flows.insert(flow, conn);
            }
        }
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
        let mut closed = Vec::new();
        for (&id, c) in &mut self.conns {
            let socket = self.sockets.get::<tcp::Socket>(c.handle);
            let state = socket.state();
            if !c.announced && matches!(state, tcp::State::Established | tcp::State::CloseWait) {
                c.announced = true;
                if c.inbound {
                    if let (Some(l), Some(r)) = (socket.local_endpoint(), socket.remote_endpoint()) {
                        self.events.push_back(TcpEvent::Accepted {
                            conn: id,
                            peer: c.peer,
                            local: to_socket_addr(l),
                            remote: to_socket_addr(r),
                        });
                    }
                } else {
                    self.events.push_back(TcpEvent::Connected { conn: id });
                }
            }
            if c.announced && !c.readable_signalled && (socket.can_recv() || !socket.may_recv()) {
                c.readable_signalled = true;
                self.events.push_back(TcpEvent::Readable { conn: id });
            }
            if c.wants_writable && socket.can_send() {
                c.wants_writable = false;
                self.events.push_back(TcpEvent::Writable { conn: id });
            }
            if matches!(state, tcp::State::Closed | tcp::State::TimeWait) {
                closed.push(id);
            }
        }
        for id in closed {
            if let Some(c) = self.conns.remove(&id) {
                if let Some(flow) = c.flow {
                    if self.flows.get(&flow) == Some(&id) {
                        self.flows.remove(&flow);
                    }
                }
                if let Some(port) = c.local_port {
                    self.outbound_ports.remove(&port);
                }
                self.sockets.remove(c.handle);
                // Outbound connections always learn their end (also a refused or timed-out
                // connect); half-open inbound ones were never announced and vanish quietly.
                if c.announced || !c.inbound {
                    self.events.push_back(TcpEvent::Closed { conn: id });
                }
            }
        }
    }
}
