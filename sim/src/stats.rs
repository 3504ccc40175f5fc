//! Counters: world-wide ([`SimStats`]) and per ordered pair of nodes ([`PairStats`]).
//!
//! They are what tests assert on ("pair (a, b) delivered a packet after the partition
//! healed", "no packet was attributed to the wrong peer") and what `meshsim` summarises.
//! They are derived from the same events as the trace but are not part of its hash.

use std::fmt;
use std::time::Duration;

use mesh_core::time::Instant;
use mesh_core::wireguard::{DropReason, MessageError};

use crate::ids::NodeId;
use crate::link::DropCause;
use crate::node::WgTotals;

/// World-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Events taken off the queue (including stale ones).
    pub events: u64,
    /// Timer and traffic events that belonged to an earlier generation of their node or were
    /// superseded by an earlier timer (ignored, as the sans-IO contract allows).
    pub stale_events: u64,
    /// `handle_timeout` calls.
    pub timers_fired: u64,
    /// Times `poll_timeout` still returned a deadline at or before `now` right after
    /// `handle_timeout(now)` (a broken contract: it would busy-loop the driver). The world
    /// then waits 1 ms instead.
    pub timer_stalls: u64,
    /// Datagrams nodes handed to the underlay.
    pub datagrams_sent: u64,
    /// Datagrams handed to a running node's WireGuard (duplicates included).
    pub datagrams_delivered: u64,
    /// Datagrams lost, by [`DropCause::index`].
    pub datagrams_dropped: [u64; DropCause::COUNT],
    /// Extra copies made by links.
    pub datagrams_duplicated: u64,
    /// Delivered datagrams WireGuard refused (replays, unknown indices after a restart, ...).
    pub datagrams_rejected: u64,
    /// ... by [`DropReason::index`] (see [`reason_name`]).
    pub rejected_by_reason: [u64; DropReason::COUNT],
    /// Application packets handed to WireGuard.
    pub app_sent: u64,
    /// ... that WireGuard refused outright.
    pub app_send_failed: u64,
    /// Application packets that came out of the tunnel at their destination.
    pub app_delivered: u64,
    /// Decrypted packets that were not valid application packets for the receiver, or whose
    /// source address belongs to a node other than the peer WireGuard attributed them to.
    /// Always zero unless something is badly wrong.
    pub app_rejected: u64,
    /// `SessionEstablished` events (each completed handshake is reported by both ends).
    pub sessions_established: u64,
    pub peers_unreachable: u64,
    pub keys_zeroed: u64,
    pub crashes: u64,
    pub restarts: u64,
    /// Partition faults applied (symmetric, one-way and isolations).
    pub partitions: u64,
    /// Packets that came out of a TUN side and were not traffic-application packets.
    pub tun_other: u64,
    /// Raw packets injected at a TUN side ([`crate::World::inject_tun_packet`]).
    pub injected: u64,
    /// Flows cut by a filter change.
    pub flows_cut: u64,
    /// TCP client transfers opened, connected; connections accepted; `Closed` events.
    pub tcp_opened: u64,
    pub tcp_connected: u64,
    pub tcp_accepted: u64,
    pub tcp_closed: u64,
    /// Accepted connections whose whole announced stream arrived byte-exact.
    pub tcp_transfers_completed: u64,
}

/// Every WireGuard drop reason, in index order.
pub(crate) const ALL_REASONS: [DropReason; DropReason::COUNT] = [
    DropReason::Malformed(MessageError::TooShort(0)),
    DropReason::BadMac1,
    DropReason::CookieRequired,
    DropReason::HandshakeFailed,
    DropReason::UnknownPeer,
    DropReason::StaleTimestamp,
    DropReason::InitiationFlood,
    DropReason::UnknownIndex,
    DropReason::UnexpectedResponse,
    DropReason::BadCookieReply,
    DropReason::SessionExpired,
    DropReason::Replay,
    DropReason::BadTag,
    DropReason::BadInnerPacket,
    DropReason::InnerSourceNotAllowed,
    DropReason::NoRoute,
    DropReason::NoEndpoint,
    DropReason::TooLarge,
];

/// A short name for a WireGuard drop reason, by [`DropReason::index`].
pub fn reason_name(index: usize) -> &'static str {
    // An exhaustive match, so a new reason in core fails to compile here until named.
    ALL_REASONS.iter().find(|r| r.index() == index).map_or("unknown", |r| match r {
        DropReason::Malformed(_) => "malformed",
        DropReason::BadMac1 => "bad mac1",
        DropReason::CookieRequired => "cookie required",
        DropReason::HandshakeFailed => "handshake failed",
        DropReason::UnknownPeer => "unknown peer",
        DropReason::StaleTimestamp => "stale timestamp",
        DropReason::InitiationFlood => "initiation flood",
        DropReason::UnknownIndex => "unknown index",
        DropReason::UnexpectedResponse => "unexpected response",
        DropReason::BadCookieReply => "bad cookie reply",
        DropReason::SessionExpired => "session expired",
        DropReason::Replay => "replay",
        DropReason::BadTag => "bad tag",
        DropReason::BadInnerPacket => "bad inner packet",
        DropReason::InnerSourceNotAllowed => "inner source not allowed",
        DropReason::NoRoute => "no route",
        DropReason::NoEndpoint => "no endpoint",
        DropReason::TooLarge => "too large",
    })
}

impl SimStats {
    /// Delivered datagrams WireGuard refused for `reason`.
    pub fn rejected(&self, reason: DropReason) -> u64 {
        self.rejected_by_reason[reason.index()]
    }

    /// Datagrams lost for `cause`.
    pub fn dropped(&self, cause: DropCause) -> u64 {
        self.datagrams_dropped[cause.index()]
    }

    /// Datagrams lost for any cause.
    pub fn datagrams_lost(&self) -> u64 {
        self.datagrams_dropped.iter().sum()
    }

    /// Datagrams processed by WireGuard per second of `wall` time: the simulator's
    /// throughput through full crypto.
    pub fn datagrams_per_second(&self, wall: Duration) -> f64 {
        self.datagrams_delivered as f64 / wall.as_secs_f64().max(1e-9)
    }

    /// Events per second of `wall` time.
    pub fn events_per_second(&self, wall: Duration) -> f64 {
        self.events as f64 / wall.as_secs_f64().max(1e-9)
    }
}

/// Application traffic from one node to another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairStats {
    /// Packets handed to the sender's WireGuard (the next sequence number).
    pub sent: u64,
    /// Packets that arrived (each at most once: WireGuard drops replayed duplicates).
    pub delivered: u64,
    /// Packets the sender's WireGuard refused outright.
    pub send_failed: u64,
    pub last_sent: Option<Instant>,
    pub first_delivery: Option<Instant>,
    pub last_delivery: Option<Instant>,
    /// Sum of one-way latencies of delivered packets (send to arrival, virtual time).
    pub latency_total: Duration,
    pub latency_max: Duration,
}

impl PairStats {
    /// Whether a packet arrived strictly after `t`.
    pub fn delivered_after(&self, t: Instant) -> bool {
        self.last_delivery.is_some_and(|d| d > t)
    }

    /// Mean one-way latency of delivered packets.
    pub fn mean_latency(&self) -> Option<Duration> {
        let n = u32::try_from(self.delivered).ok().filter(|n| *n > 0)?;
        Some(self.latency_total / n)
    }
}

/// [`PairStats`] for every ordered pair, `[from][to]`.
#[derive(Clone, Debug, Default)]
pub struct PairMatrix {
    rows: Vec<Vec<PairStats>>,
}

impl PairMatrix {
    /// Make room for one more node.
    pub(crate) fn add_node(&mut self) {
        for row in &mut self.rows {
            row.push(PairStats::default());
        }
        let n = self.rows.len() + 1;
        self.rows.push(vec![PairStats::default(); n]);
    }

    /// Traffic `from -> to`.
    ///
    /// # Panics
    /// If either node does not exist.
    pub fn get(&self, from: NodeId, to: NodeId) -> &PairStats {
        &self.rows[from.0][to.0]
    }

    pub(crate) fn get_mut(&mut self, from: NodeId, to: NodeId) -> &mut PairStats {
        &mut self.rows[from.0][to.0]
    }

    /// Every ordered pair of distinct nodes with its stats, in `(from, to)` order.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, NodeId, &PairStats)> {
        self.rows.iter().enumerate().flat_map(|(from, row)| {
            row.iter().enumerate().filter(move |(to, _)| *to != from).map(move |(to, s)| (NodeId(from), NodeId(to), s))
        })
    }
}

/// A run's outcome in a few numbers (what `meshsim` prints, minus wall time).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub seed: u64,
    pub nodes: usize,
    pub virtual_time: Duration,
    pub stats: SimStats,
    /// WireGuard's counters, all nodes and incarnations together.
    pub wireguard: WgTotals,
    /// Ordered pairs that sent traffic but never got a packet through.
    pub silent_pairs: usize,
    /// Ordered pairs whose last packet arrived at least this long before the end (or never)
    /// although the sender kept sending; see [`crate::World::summary`].
    pub stalled_pairs: usize,
    pub trace_records: u64,
    pub trace_hash: [u8; 32],
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        let pct = |part: u64, whole: u64| if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 };
        writeln!(
            f,
            "simulated {} nodes for {:.1} s virtual (seed {})",
            self.nodes,
            self.virtual_time.as_secs_f64(),
            self.seed
        )?;
        writeln!(
            f,
            "handshakes: {} sessions established, {} initiations sent, {} answered, {} X25519 operations; {} peers unreachable, {} key erasures",
            s.sessions_established,
            self.wireguard.initiations_sent,
            self.wireguard.initiations_accepted,
            self.wireguard.dh_operations,
            s.peers_unreachable,
            s.keys_zeroed
        )?;
        writeln!(
            f,
            "app packets: {} sent, {} delivered ({:.2}%), {} lost, {} refused; {} silent and {} stalled pairs",
            s.app_sent,
            s.app_delivered,
            pct(s.app_delivered, s.app_sent),
            s.app_sent.saturating_sub(s.app_delivered),
            s.app_send_failed,
            self.silent_pairs,
            self.stalled_pairs
        )?;
        let causes: Vec<String> =
            DropCause::ALL.iter().filter(|c| s.dropped(**c) > 0).map(|c| format!("{} {}", s.dropped(*c), c)).collect();
        let reasons: Vec<String> = (0..DropReason::COUNT)
            .filter(|i| s.rejected_by_reason[*i] > 0)
            .map(|i| format!("{} {}", s.rejected_by_reason[i], reason_name(i)))
            .collect();
        writeln!(
            f,
            "datagrams: {} sent, {} delivered, {} lost ({}), {} duplicated, {} rejected by WireGuard ({})",
            s.datagrams_sent,
            s.datagrams_delivered,
            s.datagrams_lost(),
            if causes.is_empty() { "none".to_string() } else { causes.join(", ") },
            s.datagrams_duplicated,
            s.datagrams_rejected,
            if reasons.is_empty() { "none".to_string() } else { reasons.join(", ") },
        )?;
        if s.tcp_opened + s.tcp_accepted + s.injected + s.tun_other + s.flows_cut > 0 {
            writeln!(
                f,
                "tcp: {} opened, {} connected, {} accepted, {} streams verified, {} closed; {} flows cut; {} other TUN packets, {} injected",
                s.tcp_opened,
                s.tcp_connected,
                s.tcp_accepted,
                s.tcp_transfers_completed,
                s.tcp_closed,
                s.flows_cut,
                s.tun_other,
                s.injected
            )?;
        }
        write!(
            f,
            "faults: {} crashes, {} restarts, {} partitions; {} events ({} stale), {} timer stalls, {} trace records",
            s.crashes, s.restarts, s.partitions, s.events, s.stale_events, s.timer_stalls, self.trace_records
        )
    }
}
