//! The WireGuard UDP sockets (one per address family) through `quinn-udp`: `recvmmsg` with
//! UDP GRO on receive, UDP GSO on send (datagrams of one size to one destination leave in
//! one `sendmsg`).

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use mio::net::UdpSocket;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{debug, warn};

use super::metrics::Metrics;

/// Receive slots per `recvmmsg`.
pub const RECV_SLOTS: usize = 8;
/// Bytes per receive slot: one GRO train of up to 64 datagrams, or one datagram.
const SLOT_LEN: usize = 64 << 10;
/// Socket buffer sizes asked for (forced as root, beyond `net.core.*mem_max`).
const SOCKET_BUFFER: usize = 8 << 20;
/// GSO batches waiting for the socket to drain before input pauses for good.
const MAX_QUEUED_BATCHES: usize = 64;
/// Largest GSO send (the kernel's limit is 64 KiB of UDP payload).
const MAX_GSO_BYTES: usize = 60_000;

#[derive(Debug, Error)]
pub enum UdpError {
    #[error("cannot bind UDP port {port}: {error}")]
    Bind { port: u16, error: io::Error },
    #[error("UDP socket setup: {0}")]
    Setup(io::Error),
}

/// One bound socket with its quinn-udp state.
#[derive(Debug)]
pub struct UdpIo {
    pub socket: UdpSocket,
    state: UdpSocketState,
    slots: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    /// Datagrams of the batch being built (equal segments, the last may be shorter).
    batch: GsoBatch,
    /// Batches the socket would not take yet, oldest first; and spare buffers.
    queued: VecDeque<GsoBatch>,
    spare: Vec<GsoBatch>,
    max_segments: usize,
}

#[derive(Debug, Default)]
struct GsoBatch {
    buf: Vec<u8>,
    dst: Option<SocketAddr>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the batch.
    closed: bool,
}

impl GsoBatch {
    fn clear(&mut self) {
        self.buf.clear();
        self.dst = None;
        self.segment = 0;
        self.count = 0;
        self.closed = false;
    }

    fn fits(&self, dst: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.count == 0
            || (self.dst == Some(dst)
                && !self.closed
                && len <= self.segment
                && self.count < max_segments
                && self.buf.len() + len <= MAX_GSO_BYTES)
    }

    fn push(&mut self, dst: SocketAddr, datagram: &[u8]) {
        if self.count == 0 {
            self.dst = Some(dst);
            self.segment = datagram.len();
        } else if datagram.len() < self.segment {
            self.closed = true;
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
    }
}

impl UdpIo {
    /// Bind `port` on every address of one family (IPv6 sockets are IPv6-only).
    pub fn bind(v6: bool, port: u16) -> Result<Self, UdpError> {
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let setup = UdpError::Setup;
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(setup)?;
        if v6 {
            socket.set_only_v6(true).map_err(setup)?;
        }
        socket.set_nonblocking(true).map_err(setup)?;
        let addr: SocketAddr =
            if v6 { (Ipv6Addr::UNSPECIFIED, port).into() } else { (Ipv4Addr::UNSPECIFIED, port).into() };
        socket.bind(&addr.into()).map_err(|error| UdpError::Bind { port, error })?;
        // Forcing needs CAP_NET_ADMIN; without it the limit of net.core.*mem_max applies.
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, SOCKET_BUFFER).is_err() {
            let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        }
        if rustix::net::sockopt::set_socket_send_buffer_size_force(&socket, SOCKET_BUFFER).is_err() {
            let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        }
        let socket = UdpSocket::from_std(socket.into());
        let state = UdpSocketState::new((&socket).into()).map_err(setup)?;
        let max_segments = state.max_gso_segments().max(1);
        Ok(Self {
            socket,
            state,
            slots: (0..RECV_SLOTS).map(|_| vec![0u8; SLOT_LEN]).collect(),
            metas: vec![RecvMeta::default(); RECV_SLOTS],
            batch: GsoBatch { buf: Vec::with_capacity(MAX_GSO_BYTES), ..GsoBatch::default() },
            queued: VecDeque::new(),
            spare: Vec::new(),
            max_segments,
        })
    }

    pub fn local_port(&self) -> Option<u16> {
        self.socket.local_addr().ok().map(|a| a.port())
    }

    /// One `recvmmsg`: calls `each(from, datagram)` for every datagram received (GRO trains
    /// split at their stride). `Ok(false)` when the socket had nothing.
    /// Returns the packets and bytes received, or `None` if it would block.
    pub fn recv_batch(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<Option<(usize, usize)>> {
        let Self { socket, state, slots, metas, .. } = self;
        let mut bufs: [IoSliceMut<'_>; RECV_SLOTS] = {
            let mut it = slots.iter_mut();
            std::array::from_fn(|_| IoSliceMut::new(it.next().map_or(&mut [][..], |s| &mut s[..])))
        };
        let n = match state.recv((&*socket).into(), &mut bufs, metas) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        let (mut packets, mut bytes) = (0, 0);
        for (meta, buf) in metas.iter().zip(bufs.iter()).take(n) {
            let data = buf.get(..meta.len).unwrap_or_default();
            let stride = if meta.stride == 0 { meta.len.max(1) } else { meta.stride };
            for datagram in data.chunks(stride) {
                packets += 1;
                bytes += datagram.len();
                each(meta.addr, datagram);
            }
        }
        Ok(Some((packets, bytes)))
    }

    /// Queue a datagram; full batches are sent. `false` if it had to be dropped because
    /// the socket is backed up.
    pub fn push(&mut self, dst: SocketAddr, datagram: &[u8], metrics: &mut Metrics) -> bool {
        if !self.batch.fits(dst, datagram.len(), self.max_segments) {
            self.seal_batch();
            self.flush(metrics);
        }
        if self.queued.len() >= MAX_QUEUED_BATCHES && self.batch.count == 0 {
            metrics.drops.udp_send_backlog += 1;
            return false;
        }
        self.batch.push(dst, datagram);
        true
    }

    /// Move the batch being built to the send queue.
    fn seal_batch(&mut self) {
        if self.batch.count == 0 {
            return;
        }
        let mut next = self
            .spare
            .pop()
            .unwrap_or_else(|| GsoBatch { buf: Vec::with_capacity(MAX_GSO_BYTES), ..GsoBatch::default() });
        next.clear();
        let full = std::mem::replace(&mut self.batch, next);
        self.queued.push_back(full);
    }

    /// Send what is queued until the socket would block. Returns whether everything left.
    pub fn flush(&mut self, metrics: &mut Metrics) -> bool {
        self.seal_batch();
        while let Some(batch) = self.queued.front() {
            let Some(dst) = batch.dst else {
                self.recycle_front();
                continue;
            };
            let transmit = Transmit {
                destination: dst,
                ecn: None,
                contents: &batch.buf,
                segment_size: (batch.count > 1).then_some(batch.segment),
                src_ip: None,
            };
            match self.state.try_send((&self.socket).into(), &transmit) {
                Ok(()) => {
                    metrics.udp_tx.batch(batch.count, batch.buf.len());
                    self.recycle_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // A device without UDP GSO fails the batch with EIO: send single
                    // datagrams from now on (this batch is lost, as a lossy link would).
                    if transmit.segment_size.is_some()
                        && error.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error())
                    {
                        warn!("UDP GSO refused by the device; sending datagrams one by one");
                        self.max_segments = 1;
                    }
                    metrics.drops.udp_send_error += 1;
                    debug!(%error, %dst, "UDP send failed");
                    self.recycle_front();
                }
            }
        }
        true
    }

    fn recycle_front(&mut self) {
        if let Some(mut batch) = self.queued.pop_front() {
            batch.clear();
            self.spare.push(batch);
        }
    }

    /// Whether sends are waiting for the socket.
    pub fn backed_up(&self) -> bool {
        !self.queued.is_empty()
    }
}
