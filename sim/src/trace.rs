//! The trace: a running BLAKE2s-256 hash over everything that happened, in order.
//!
//! Every datagram sent, dropped, duplicated and delivered, every datagram WireGuard
//! rejected, every application packet, WireGuard event, timer, crash, restart and partition,
//! every other packet out of a TUN side or injected into one, every flow cut, every TCP
//! connection opened, accepted, completed and closed, and every SSH connection, login
//! decision, rekey and finished command is encoded as a [`TraceRecord`] with its virtual
//! timestamp and fed to the hash. Two runs with the same seed must produce the same hash;
//! any divergence, however small (one reordered event, one different random draw, one
//! different ciphertext byte), changes it.
//! That turns "is the simulator deterministic?" into comparing 32 bytes.
//!
//! The last few records are also kept in memory, so a failing check can show what led up to
//! it without re-running.

use std::collections::VecDeque;
use std::fmt;

use blake2::{Blake2s256, Digest};
use mesh_core::time::Instant;
use mesh_core::wireguard::DropReason;

use crate::faults::Fault;
use crate::ids::NodeId;
use crate::link::DropCause;

/// Bytes of a datagram's beginning and end committed to the trace: the header (type,
/// indices, counter) and the end (the AEAD tag of data messages, the MACs of handshakes),
/// which together pin down its content without hashing every byte.
pub const FINGERPRINT_LEN: usize = 16;

/// How many recent records [`Trace::recent`] keeps.
pub const RECENT_RECORDS: usize = 48;

/// The start and end of a datagram (see [`FINGERPRINT_LEN`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub head: [u8; FINGERPRINT_LEN],
    pub tail: [u8; FINGERPRINT_LEN],
}

impl Fingerprint {
    /// Fingerprint `bytes` (shorter inputs are zero-padded).
    pub fn of(bytes: &[u8]) -> Self {
        let mut head = [0u8; FINGERPRINT_LEN];
        let mut tail = [0u8; FINGERPRINT_LEN];
        let n = bytes.len().min(FINGERPRINT_LEN);
        head[..n].copy_from_slice(&bytes[..n]);
        tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
        Self { head, tail }
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", hex(&self.head[..8]), hex(&self.tail[8..]))
    }
}

/// One thing that happened in the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceRecord {
    /// A node handed a datagram to the underlay.
    Sent { from: NodeId, to: NodeId, len: u32, fingerprint: Fingerprint },
    /// The underlay lost a datagram (`to` is `None` when the address matched no node).
    Dropped { from: NodeId, to: Option<NodeId>, cause: DropCause },
    /// The link will deliver a second copy.
    Duplicated { from: NodeId, to: NodeId },
    /// A datagram reached a running node.
    Delivered { from: NodeId, to: NodeId, len: u32 },
    /// The node's WireGuard refused a delivered datagram.
    Rejected { node: NodeId, from: NodeId, reason: DropReason },
    /// The traffic application sent a packet into the tunnel.
    AppSent { from: NodeId, to: NodeId, seq: u64 },
    /// WireGuard refused the application's packet.
    AppSendFailed { from: NodeId, to: NodeId, reason: DropReason },
    /// An application packet came out of the tunnel at its destination.
    AppDelivered { from: NodeId, to: NodeId, seq: u64 },
    /// A decrypted packet was not a well-formed application packet for this node, or came
    /// from a peer other than its source address says (never expected).
    AppRejected { node: NodeId },
    /// WireGuard reported a confirmed session with `peer`.
    SessionEstablished { node: NodeId, peer: Option<NodeId>, initiator: bool },
    /// WireGuard gave up handshaking with `peer`.
    PeerUnreachable { node: NodeId, peer: Option<NodeId> },
    /// WireGuard erased all keys of `peer`.
    KeysZeroed { node: NodeId, peer: Option<NodeId> },
    /// A node's timer fired.
    Timer { node: NodeId },
    /// A fault was injected or repaired (crash, restart, partition, heal).
    Fault(Fault),
    /// A packet that is not a traffic-application packet came out of a node's TUN side.
    TunPacket { node: NodeId, len: u32 },
    /// A raw packet was injected at a node's TUN side.
    Injected { node: NodeId, len: u32 },
    /// A filter change cut a flow on `node`.
    FlowCut { node: NodeId },
    /// A netmap change ended a peer's `PeerId` on `node` (removed, or re-addressed).
    PeerGone { node: NodeId, peer: Option<NodeId> },
    /// A client transfer was opened.
    TcpOpened { from: NodeId, to: NodeId, port: u16, transfer: u64 },
    /// A client transfer's connection was established.
    TcpConnected { node: NodeId, transfer: u64 },
    /// A node accepted a connection on `port`, tagged with the peer `peer` (as a node), from
    /// the address of `remote`.
    TcpAccepted { node: NodeId, peer: Option<NodeId>, remote: Option<NodeId>, port: u16 },
    /// A connection of `node` is gone.
    TcpClosed { node: NodeId, conn: u64 },
    /// A sink received a whole stream byte-exact.
    TransferCompleted { node: NodeId, transfer: u64, bytes: u64 },
    /// An SSH client app connected `from -> to:22`.
    SshOpened { from: NodeId, to: NodeId, client: u64 },
    /// An SSH server app decided a login of `peer` (the node WireGuard vouched for).
    SshAuth { node: NodeId, peer: Option<NodeId>, accepted: bool },
    /// An SSH session on `node` finished a key exchange after the first.
    SshRekeyed { node: NodeId },
    /// An SSH client's command channel closed, with this exit status.
    SshCommandDone { node: NodeId, status: Option<u32> },
}

fn opt_node(n: Option<NodeId>) -> u32 {
    n.map_or(u32::MAX, |n| n.0 as u32)
}

/// A small fixed buffer records are encoded into before hashing.
struct Encoder {
    buf: [u8; 64],
    len: usize,
}

impl Encoder {
    fn new(tag: u8, at: Instant) -> Self {
        let mut e = Self { buf: [0; 64], len: 0 };
        e.put(&[tag]);
        e.put(&at.as_micros().to_le_bytes());
        e
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn node(&mut self, n: NodeId) -> &mut Self {
        self.put(&(n.0 as u32).to_le_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.put(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.put(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl TraceRecord {
    /// Feed the canonical encoding of this record at `at` to `hasher`: a tag byte, the
    /// timestamp in microseconds and the fields, little-endian.
    fn hash_into(&self, at: Instant, hasher: &mut Blake2s256) {
        let mut e;
        match *self {
            TraceRecord::Sent { from, to, len, fingerprint } => {
                e = Encoder::new(1, at);
                e.node(from).node(to).u32(len);
                e.put(&fingerprint.head);
                e.put(&fingerprint.tail);
            }
            TraceRecord::Dropped { from, to, cause } => {
                e = Encoder::new(2, at);
                e.node(from).u32(opt_node(to)).u32(cause.index() as u32);
            }
            TraceRecord::Duplicated { from, to } => {
                e = Encoder::new(3, at);
                e.node(from).node(to);
            }
            TraceRecord::Delivered { from, to, len } => {
                e = Encoder::new(4, at);
                e.node(from).node(to).u32(len);
            }
            TraceRecord::Rejected { node, from, reason } => {
                e = Encoder::new(5, at);
                e.node(node).node(from).u32(reason.index() as u32);
            }
            TraceRecord::AppSent { from, to, seq } => {
                e = Encoder::new(6, at);
                e.node(from).node(to).u64(seq);
            }
            TraceRecord::AppSendFailed { from, to, reason } => {
                e = Encoder::new(7, at);
                e.node(from).node(to).u32(reason.index() as u32);
            }
            TraceRecord::AppDelivered { from, to, seq } => {
                e = Encoder::new(8, at);
                e.node(from).node(to).u64(seq);
            }
            TraceRecord::AppRejected { node } => {
                e = Encoder::new(9, at);
                e.node(node);
            }
            TraceRecord::SessionEstablished { node, peer, initiator } => {
                e = Encoder::new(10, at);
                e.node(node).u32(opt_node(peer)).u32(u32::from(initiator));
            }
            TraceRecord::PeerUnreachable { node, peer } => {
                e = Encoder::new(11, at);
                e.node(node).u32(opt_node(peer));
            }
            TraceRecord::KeysZeroed { node, peer } => {
                e = Encoder::new(12, at);
                e.node(node).u32(opt_node(peer));
            }
            TraceRecord::Timer { node } => {
                e = Encoder::new(13, at);
                e.node(node);
            }
            TraceRecord::Fault(fault) => {
                e = Encoder::new(14, at);
                let (kind, a, b) = fault.encode();
                e.u32(kind).node(a).node(b);
            }
            TraceRecord::TunPacket { node, len } => {
                e = Encoder::new(15, at);
                e.node(node).u32(len);
            }
            TraceRecord::Injected { node, len } => {
                e = Encoder::new(16, at);
                e.node(node).u32(len);
            }
            TraceRecord::FlowCut { node } => {
                e = Encoder::new(17, at);
                e.node(node);
            }
            TraceRecord::PeerGone { node, peer } => {
                e = Encoder::new(27, at);
                e.node(node).u32(peer.map_or(u32::MAX, |p| p.0 as u32));
            }
            TraceRecord::TcpOpened { from, to, port, transfer } => {
                e = Encoder::new(18, at);
                e.node(from).node(to).u32(u32::from(port)).u64(transfer);
            }
            TraceRecord::TcpConnected { node, transfer } => {
                e = Encoder::new(19, at);
                e.node(node).u64(transfer);
            }
            TraceRecord::TcpAccepted { node, peer, remote, port } => {
                e = Encoder::new(20, at);
                e.node(node).u32(opt_node(peer)).u32(opt_node(remote)).u32(u32::from(port));
            }
            TraceRecord::TcpClosed { node, conn } => {
                e = Encoder::new(21, at);
                e.node(node).u64(conn);
            }
            TraceRecord::TransferCompleted { node, transfer, bytes } => {
                e = Encoder::new(22, at);
                e.node(node).u64(transfer).u64(bytes);
            }
            TraceRecord::SshOpened { from, to, client } => {
                e = Encoder::new(23, at);
                e.node(from).node(to).u64(client);
            }
            TraceRecord::SshAuth { node, peer, accepted } => {
                e = Encoder::new(24, at);
                e.node(node).u32(opt_node(peer)).u32(u32::from(accepted));
            }
            TraceRecord::SshRekeyed { node } => {
                e = Encoder::new(25, at);
                e.node(node);
            }
            TraceRecord::SshCommandDone { node, status } => {
                e = Encoder::new(26, at);
                e.node(node).u64(status.map_or(u64::MAX, u64::from));
            }
        }
        hasher.update(e.bytes());
    }
}

/// The running hash, a record count and the most recent records.
#[derive(Clone)]
pub struct Trace {
    hasher: Blake2s256,
    records: u64,
    recent: VecDeque<(Instant, TraceRecord)>,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace").field("records", &self.records).field("hash", &hex(&self.hash())).finish()
    }
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self { hasher: Blake2s256::new(), records: 0, recent: VecDeque::with_capacity(RECENT_RECORDS) }
    }

    /// Append `record`, which happened at `at`.
    pub fn record(&mut self, at: Instant, record: TraceRecord) {
        record.hash_into(at, &mut self.hasher);
        self.records += 1;
        if self.recent.len() == RECENT_RECORDS {
            self.recent.pop_front();
        }
        self.recent.push_back((at, record));
        tracing::trace!(at = at.as_micros(), ?record, "trace");
    }

    /// BLAKE2s-256 of every record so far (the trace can keep growing afterwards).
    pub fn hash(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    /// Number of records so far.
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The most recent records (up to [`RECENT_RECORDS`]), oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &(Instant, TraceRecord)> {
        self.recent.iter()
    }
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_content_order_and_time() {
        let a = TraceRecord::Timer { node: NodeId(1) };
        let b = TraceRecord::AppSent { from: NodeId(0), to: NodeId(1), seq: 7 };
        let t = Instant::from_micros(5);
        let mut x = Trace::new();
        x.record(t, a);
        x.record(t, b);
        let mut y = Trace::new();
        y.record(t, a);
        y.record(t, b);
        assert_eq!(x.hash(), y.hash());
        let mut z = Trace::new();
        z.record(t, b);
        z.record(t, a);
        assert_ne!(x.hash(), z.hash());
        let mut w = Trace::new();
        w.record(t, a);
        w.record(Instant::from_micros(6), b);
        assert_ne!(x.hash(), w.hash());
        assert_eq!(x.len(), 2);
        assert_eq!(hex(&[0, 0xab]), "00ab");
        assert_eq!(hex(&x.hash()).len(), 64);
    }

    #[test]
    fn fingerprint_takes_both_ends() {
        let bytes: Vec<u8> = (0..40).collect();
        let fp = Fingerprint::of(&bytes);
        assert_eq!(fp.head[0], 0);
        assert_eq!(fp.tail[15], 39);
        let short = Fingerprint::of(&[1, 2]);
        assert_eq!(&short.head[..2], &[1, 2]);
        assert_eq!(&short.tail[..2], &[1, 2]);
    }
}
