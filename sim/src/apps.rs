//! Simulated TCP applications: a client that streams a deterministic byte sequence to a
//! port of another node, and the sink that accepts and verifies it.
//!
//! The client ([`crate::World::open_tcp`]) calls `Node::tcp_connect` to the destination's
//! mesh address, and once connected writes a *stream*: a 24-byte header (magic, transfer id,
//! payload length) followed by the payload, whose bytes are a pure function of the transfer
//! ([`StreamPattern`]). It respects back-pressure: `tcp_send` takes what fits, and the rest
//! waits for `TcpEvent::Writable` (the client also retries whenever its node's timers fire).
//! When everything is queued it closes its direction.
//!
//! Every connection a node accepts (`TcpEvent::Accepted`, e.g. on port 22 when the node
//! serves SSH) gets a sink. The sink reads on `Readable` until `recv` returns 0, compares
//! the bytes chunk by chunk with the same pattern (no buffering of the stream), and closes
//! when the client has closed. What each sink saw is an [`AcceptedConn`], with the `PeerId`
//! the core tagged the connection with and the node that really opened it (from the header's
//! transfer id, which the world knows), so tests can check identity binding end to end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::tcp::{ConnId, TcpError};
use mesh_core::time::Instant;
use mesh_core::wireguard::PeerId;

use crate::ids::NodeId;
pub use crate::ids::TransferId;

/// Bytes of the stream header: magic, transfer id, payload length (little-endian u64s).
pub const HEADER_LEN: usize = 24;
const MAGIC: [u8; 8] = *b"meshsim1";
/// The most a client queues per `tcp_send` call (and a sink reads per `tcp_recv`).
pub(crate) const CHUNK: usize = 64 << 10;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deterministic byte sequence: 8-byte word `k` is `splitmix64(seed + k * golden)`,
/// little-endian. Any range can be produced without generating what precedes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPattern {
    seed: u64,
}

impl StreamPattern {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    fn word(&self, k: u64) -> [u8; 8] {
        splitmix64(self.seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15))).to_le_bytes()
    }

    /// Fill `buf` with the sequence's bytes `offset..offset + buf.len()`.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut k = offset / 8;
        let skip = (offset % 8) as usize;
        let mut rest = buf;
        if skip != 0 {
            let n = (8 - skip).min(rest.len());
            rest[..n].copy_from_slice(&self.word(k)[skip..skip + n]);
            rest = &mut rest[n..];
            k += 1;
        }
        let mut words = rest.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.word(k));
            k += 1;
        }
        let tail = words.into_remainder();
        let n = tail.len();
        tail.copy_from_slice(&self.word(k)[..n]);
    }
}

/// The bytes one transfer writes: header, then `len` bytes of its pattern.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stream {
    id: TransferId,
    len: u64,
    pattern: StreamPattern,
}

impl Stream {
    pub(crate) fn new(id: TransferId, len: u64, pattern_seed: u64) -> Self {
        Self { id, len, pattern: StreamPattern::new(splitmix64(pattern_seed ^ id.0)) }
    }

    pub(crate) fn total(&self) -> u64 {
        HEADER_LEN as u64 + self.len
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[8..16].copy_from_slice(&self.id.0.to_le_bytes());
        h[16..].copy_from_slice(&self.len.to_le_bytes());
        h
    }

    /// Stream bytes `offset..offset + buf.len()` (header included).
    pub(crate) fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut buf = buf;
        let mut offset = offset;
        if offset < HEADER_LEN as u64 {
            let h = self.header();
            let start = offset as usize;
            let n = (HEADER_LEN - start).min(buf.len());
            buf[..n].copy_from_slice(&h[start..start + n]);
            buf = &mut buf[n..];
            offset += n as u64;
        }
        if !buf.is_empty() {
            self.pattern.fill(offset - HEADER_LEN as u64, buf);
        }
    }
}

/// Why a client transfer ended before its stream was fully queued and closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// The connection was closed (reset, refused, timed out) early.
    ClosedEarly,
    /// A `tcp_send` or `tcp_close` call failed.
    Tcp(TcpError),
    /// The client's node crashed.
    NodeCrashed,
}

/// A client transfer, as the opening node saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub from: NodeId,
    pub to: NodeId,
    pub port: u16,
    /// The client's connection id on `from`.
    pub conn: ConnId,
    /// Payload bytes to send (after the header).
    pub bytes: u64,
    pub opened_at: Instant,
    /// `TcpEvent::Connected`.
    pub connected_at: Option<Instant>,
    /// Stream bytes (header included) `tcp_send` accepted so far.
    pub queued: u64,
    /// When the last byte was queued and the client closed its direction.
    pub finished_at: Option<Instant>,
    /// `TcpEvent::Closed` on the client (or the crash of its node).
    pub closed_at: Option<Instant>,
    pub error: Option<TransferError>,
}

impl Transfer {
    /// Whether the whole stream was queued and the connection closed without error.
    pub fn is_clean(&self) -> bool {
        self.finished_at.is_some() && self.closed_at.is_some() && self.error.is_none()
    }
}

/// A connection a node accepted, as its sink saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedConn {
    /// The accepting node and its connection id.
    pub node: NodeId,
    pub conn: ConnId,
    /// The `PeerId` the core tagged the connection with (`None`: from the node's own TUN).
    pub peer: Option<PeerId>,
    /// The node behind `peer`, as the accepting node's netmap says.
    pub peer_node: Option<NodeId>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub accepted_at: Instant,
    /// From the stream header: the client transfer, and the node that really opened it.
    pub transfer: Option<TransferId>,
    pub opener: Option<NodeId>,
    /// Payload length the header announced.
    pub expected: Option<u64>,
    /// Stream bytes received (header included).
    pub received: u64,
    /// Every byte so far was what the pattern says (and the header was valid).
    pub matched: bool,
    /// When the whole announced payload had arrived, byte-exact.
    pub completed_at: Option<Instant>,
    /// When the client's FIN was seen (the sink then closes too).
    pub eof_at: Option<Instant>,
    /// `TcpEvent::Closed` (or the crash of the node).
    pub closed_at: Option<Instant>,
}

impl AcceptedConn {
    /// A connection just accepted: nothing received yet.
    pub fn new(
        node: NodeId,
        conn: ConnId,
        tag: (Option<PeerId>, Option<NodeId>),
        local: SocketAddr,
        remote: SocketAddr,
        at: Instant,
    ) -> Self {
        Self {
            node,
            conn,
            peer: tag.0,
            peer_node: tag.1,
            local,
            remote,
            accepted_at: at,
            transfer: None,
            opener: None,
            expected: None,
            received: 0,
            matched: true,
            completed_at: None,
            eof_at: None,
            closed_at: None,
        }
    }

    /// Payload bytes received (after the header).
    pub fn payload_received(&self) -> u64 {
        self.received.saturating_sub(HEADER_LEN as u64)
    }

    /// Whether the announced payload arrived complete and byte-exact.
    pub fn is_complete(&self) -> bool {
        self.completed_at.is_some() && self.matched
    }

    /// Accept to completion.
    pub fn duration(&self) -> Option<Duration> {
        self.completed_at.map(|t| t.saturating_duration_since(self.accepted_at))
    }
}

/// A client connection on its node.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) transfer: TransferId,
    pub(crate) stream: Stream,
    pub(crate) queued: u64,
    pub(crate) connected: bool,
    pub(crate) closing: bool,
    pub(crate) eof: bool,
}

/// A sink on its node.
#[derive(Debug)]
pub(crate) struct Sink {
    /// Index into the world's accepted connections.
    pub(crate) record: usize,
    pub(crate) header: [u8; HEADER_LEN],
    pub(crate) stream: Option<Stream>,
    pub(crate) eof: bool,
}

/// The TCP applications running on one node incarnation (they die with it).
#[derive(Debug, Default)]
pub(crate) struct TcpNodeApps {
    pub(crate) clients: BTreeMap<ConnId, Client>,
    pub(crate) sinks: BTreeMap<ConnId, Sink>,
}

/// The world's records of every transfer and accepted connection, and scratch buffers.
#[derive(Debug)]
pub(crate) struct TcpApps {
    pub(crate) pattern_seed: u64,
    pub(crate) transfers: Vec<Transfer>,
    pub(crate) accepted: Vec<AcceptedConn>,
    /// What the client writes / what the sink reads.
    pub(crate) io: Vec<u8>,
    /// What the sink expects.
    pub(crate) expect: Vec<u8>,
}

impl TcpApps {
    /// The TCP apps of a world with this seed (it picks the streams' patterns).
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            pattern_seed: splitmix64(seed ^ 0x6d65_7368_7369_6d31),
            transfers: Vec::new(),
            accepted: Vec::new(),
            io: vec![0; CHUNK],
            expect: vec![0; CHUNK],
        }
    }

    /// Feed bytes a sink received: parse the header, compare the rest with the pattern.
    pub(crate) fn absorb(&mut self, now: Instant, sink: &mut Sink, len: usize) {
        let Self { pattern_seed, transfers, accepted, io, expect } = self;
        let record = &mut accepted[sink.record];
        let mut data = &io[..len];
        let at = record.received;
        if at < HEADER_LEN as u64 {
            let start = at as usize;
            let n = (HEADER_LEN - start).min(data.len());
            sink.header[start..start + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            record.received += n as u64;
            if record.received == HEADER_LEN as u64 {
                let word = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&sink.header[i..i + 8]);
                    u64::from_le_bytes(b)
                };
                if sink.header[..8] == MAGIC {
                    let (id, len) = (TransferId(word(8)), word(16));
                    let stream = Stream::new(id, len, *pattern_seed);
                    sink.stream = Some(stream);
                    record.transfer = Some(id);
                    record.expected = Some(len);
                    record.opener = usize::try_from(id.0)
                        .ok()
                        .and_then(|i| transfers.get(i))
                        .filter(|t| t.to == record.node)
                        .map(|t| t.from);
                    if len == 0 {
                        record.completed_at = Some(now);
                    }
                } else {
                    record.matched = false;
                }
            }
        }
        if data.is_empty() {
            return;
        }
        let offset = record.received;
        record.received += data.len() as u64;
        match sink.stream {
            Some(stream) if record.received <= stream.total() => {
                let want = &mut expect[..data.len()];
                stream.fill(offset, want);
                if want != data {
                    record.matched = false;
                }
                if record.received == stream.total() && record.matched {
                    record.completed_at = Some(now);
                }
            }
            _ => record.matched = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_ranges_agree_with_the_whole() {
        let p = StreamPattern::new(42);
        let mut whole = vec![0u8; 1000];
        p.fill(0, &mut whole);
        for (start, len) in [(0, 1), (3, 5), (7, 9), (8, 8), (13, 100), (999, 1), (500, 0)] {
            let mut part = vec![0u8; len];
            p.fill(start as u64, &mut part);
            assert_eq!(part, whole[start..start + len], "{start}+{len}");
        }
        let mut other = vec![0u8; 1000];
        StreamPattern::new(43).fill(0, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn sink_verifies_a_stream_fed_in_odd_pieces() {
        let mut apps = TcpApps::new(7);
        // Connection ids come only from a stack.
        let mut stack = mesh_core::tcp::TcpStack::new(
            mesh_core::tcp::TcpConfig::default(),
            &[std::net::IpAddr::from([100, 64, 0, 2])],
            1,
            Instant::ZERO,
        );
        let mut conn =
            || stack.connect(Instant::ZERO, SocketAddr::from(([100, 64, 0, 1], 22))).unwrap_or_else(|e| panic!("{e}"));
        let (client_conn, server_conn) = (conn(), conn());
        apps.transfers.push(Transfer {
            id: TransferId(0),
            from: NodeId(1),
            to: NodeId(0),
            port: 22,
            conn: client_conn,
            bytes: 5000,
            opened_at: Instant::ZERO,
            connected_at: None,
            queued: 0,
            finished_at: None,
            closed_at: None,
            error: None,
        });
        let record = AcceptedConn::new(
            NodeId(0),
            server_conn,
            (None, None),
            SocketAddr::from(([100, 64, 0, 1], 22)),
            SocketAddr::from(([100, 64, 0, 2], 50000)),
            Instant::ZERO,
        );
        let stream = Stream::new(TransferId(0), 5000, apps.pattern_seed);
        for corrupt in [false, true] {
            apps.accepted.push(record.clone());
            let mut sink = Sink { record: apps.accepted.len() - 1, header: [0; HEADER_LEN], stream: None, eof: false };
            let mut offset = 0u64;
            for piece in [1usize, 10, 13, 1000, 4000].iter().cycle() {
                let n = (*piece as u64).min(stream.total() - offset) as usize;
                if n == 0 {
                    break;
                }
                let mut buf = vec![0u8; n];
                stream.fill(offset, &mut buf);
                if corrupt && offset <= 3000 && offset + n as u64 > 3000 {
                    buf[(3000 - offset) as usize] ^= 1;
                }
                apps.io[..n].copy_from_slice(&buf);
                apps.absorb(Instant::from_micros(offset), &mut sink, n);
                offset += n as u64;
            }
            let r = &apps.accepted[sink.record];
            assert_eq!(r.opener, Some(NodeId(1)));
            assert_eq!(r.expected, Some(5000));
            assert_eq!(r.payload_received(), 5000);
            assert_eq!(r.is_complete(), !corrupt);
        }
    }
}
