//! Simulated links: what happens to a datagram between two nodes.
//!
//! A link is a pair of independent directions. Each direction has a [`LinkConfig`] (the
//! physics: latency, jitter, loss, duplication, reordering, bandwidth, MTU) and a little
//! state: when its transmitter is next free (bandwidth is modelled as a serialization
//! queue) and when its last in-order datagram arrives (so jitter alone does not reorder
//! packets; reordering happens only to the configured fraction). All randomness comes from
//! the `Rng` the caller passes in, so a link's behaviour is a function of the world's seed.

use std::time::Duration;

use mesh_core::rng::Rng;
use mesh_core::time::Instant;

/// Bytes an underlay IPv4 + UDP header adds to a WireGuard datagram (counted against the
/// MTU and the bandwidth).
pub const UDP_IP_OVERHEAD: usize = 28;

/// The physics of one direction of a link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Extra delay, uniform in `0..=jitter`, drawn per datagram. Does not reorder by itself.
    pub jitter: Duration,
    /// Probability (0..=1) that a datagram is lost.
    pub loss: f64,
    /// Probability (0..=1) that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability (0..=1) that a datagram is held back by an extra random delay of up to
    /// [`Self::reorder_delay`], letting later datagrams overtake it.
    pub reorder: f64,
    /// The largest extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Transmitter speed in bits per second; `None` means infinitely fast.
    pub bandwidth_bps: Option<u64>,
    /// With a bandwidth limit: a datagram that would wait longer than this for the
    /// transmitter is dropped (a drop-tail queue measured in time).
    pub max_queue_delay: Duration,
    /// The path's IP MTU: a datagram whose UDP payload plus [`UDP_IP_OVERHEAD`] exceeds it is
    /// dropped (the simulated underlay does not fragment).
    pub mtu: usize,
}

impl Default for LinkConfig {
    /// A clean link: 10 ms latency, nothing else.
    fn default() -> Self {
        Self::ideal(Duration::from_millis(10))
    }
}

impl LinkConfig {
    /// A link with only propagation delay: no jitter, loss, duplication or reordering,
    /// unlimited bandwidth, 1500-byte MTU.
    pub fn ideal(latency: Duration) -> Self {
        Self {
            latency,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            bandwidth_bps: None,
            max_queue_delay: Duration::from_millis(500),
            mtu: 1500,
        }
    }

    /// A wide-area link: 20 ms latency, 5 ms jitter, 0.5 % of datagrams reordered (by up to
    /// 30 ms) and 0.5 % duplicated. `meshsim`'s default.
    pub fn wan() -> Self {
        Self {
            jitter: Duration::from_millis(5),
            duplicate: 0.005,
            reorder: 0.005,
            reorder_delay: Duration::from_millis(30),
            ..Self::ideal(Duration::from_millis(20))
        }
    }

    /// This link with loss probability `loss`.
    pub fn with_loss(self, loss: f64) -> Self {
        Self { loss, ..self }
    }

    /// This link with a bandwidth limit.
    pub fn with_bandwidth(self, bits_per_second: u64) -> Self {
        Self { bandwidth_bps: Some(bits_per_second), ..self }
    }

    /// This link with a different MTU.
    pub fn with_mtu(self, mtu: usize) -> Self {
        Self { mtu, ..self }
    }
}

/// Why a datagram did not arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropCause {
    /// Random loss on the link.
    Loss,
    /// A partition blocked the path (when sent or when it would have arrived).
    Partition,
    /// Larger than the path MTU.
    Mtu,
    /// The bandwidth-limited transmitter's queue was full.
    QueueFull,
    /// The destination node was crashed when the datagram arrived.
    NodeDown,
    /// No node has the destination address.
    Unroutable,
}

impl DropCause {
    /// Number of causes.
    pub const COUNT: usize = 6;

    /// A dense index (for counters and trace records).
    pub fn index(self) -> usize {
        match self {
            DropCause::Loss => 0,
            DropCause::Partition => 1,
            DropCause::Mtu => 2,
            DropCause::QueueFull => 3,
            DropCause::NodeDown => 4,
            DropCause::Unroutable => 5,
        }
    }

    /// Every cause, in index order.
    pub const ALL: [DropCause; DropCause::COUNT] = [
        DropCause::Loss,
        DropCause::Partition,
        DropCause::Mtu,
        DropCause::QueueFull,
        DropCause::NodeDown,
        DropCause::Unroutable,
    ];
}

impl std::fmt::Display for DropCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DropCause::Loss => "loss",
            DropCause::Partition => "partition",
            DropCause::Mtu => "mtu",
            DropCause::QueueFull => "queue full",
            DropCause::NodeDown => "node down",
            DropCause::Unroutable => "unroutable",
        })
    }
}

/// What a link decided to do with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Arrives at `at`; if `duplicate` is set, a second copy arrives then.
    Deliver { at: Instant, duplicate: Option<Instant> },
    /// Never arrives.
    Dropped(DropCause),
}

/// Counters of one link direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to the link.
    pub offered: u64,
    /// Datagrams the link scheduled for delivery (duplicates not included).
    pub passed: u64,
    pub lost: u64,
    pub too_big: u64,
    pub queue_full: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Underlay bytes offered (UDP payload plus headers).
    pub bytes: u64,
}

/// One direction of a link: configuration, transmitter state and counters.
#[derive(Clone, Debug)]
pub struct LinkDirection {
    pub config: LinkConfig,
    /// A partition is in force on this direction.
    pub blocked: bool,
    /// When the transmitter finishes the datagrams queued so far (bandwidth model).
    busy_until: Instant,
    /// Arrival time of the latest in-order datagram: later in-order datagrams never arrive
    /// before it.
    last_arrival: Instant,
    pub stats: LinkStats,
}

/// A uniformly random duration in `0..=max`.
fn uniform(rng: &mut Rng, max: Duration) -> Duration {
    let micros = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    if micros == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rng.below(micros.saturating_add(1)))
}

/// Time to clock `bytes` onto a wire of `bps` bits per second, rounded up to a microsecond.
fn serialization_time(bytes: usize, bps: u64) -> Duration {
    let bits = (bytes as u128) * 8 * 1_000_000;
    let micros = bits.div_ceil(u128::from(bps.max(1)));
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

impl LinkDirection {
    /// A fresh, unblocked direction.
    pub fn new(config: LinkConfig) -> Self {
        Self {
            config,
            blocked: false,
            busy_until: Instant::ZERO,
            last_arrival: Instant::ZERO,
            stats: LinkStats::default(),
        }
    }

    /// Decide the fate of a `len`-byte UDP payload sent at `now`. Partitions are the
    /// caller's business (see `Network`); this is only the link's physics.
    pub fn transmit(&mut self, now: Instant, len: usize, rng: &mut Rng) -> Fate {
        let wire_len = len + UDP_IP_OVERHEAD;
        self.stats.offered += 1;
        self.stats.bytes += wire_len as u64;
        if wire_len > self.config.mtu {
            self.stats.too_big += 1;
            return Fate::Dropped(DropCause::Mtu);
        }
        let mut departs = now;
        if let Some(bps) = self.config.bandwidth_bps {
            let start = self.busy_until.max(now);
            if start.saturating_duration_since(now) > self.config.max_queue_delay {
                self.stats.queue_full += 1;
                return Fate::Dropped(DropCause::QueueFull);
            }
            self.busy_until = start + serialization_time(wire_len, bps);
            departs = self.busy_until;
        }
        // Lost after serialization: a lost datagram still occupied the transmitter.
        if rng.chance(self.config.loss) {
            self.stats.lost += 1;
            return Fate::Dropped(DropCause::Loss);
        }
        let mut at = departs + self.config.latency + uniform(rng, self.config.jitter);
        if rng.chance(self.config.reorder) {
            self.stats.reordered += 1;
            at += uniform(rng, self.config.reorder_delay);
        } else {
            at = at.max(self.last_arrival);
            self.last_arrival = at;
        }
        let duplicate = rng.chance(self.config.duplicate).then(|| {
            self.stats.duplicated += 1;
            at + uniform(rng, self.config.jitter.max(Duration::from_millis(1)))
        });
        self.stats.passed += 1;
        Fate::Deliver { at, duplicate }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn loss_rate_is_roughly_as_configured() {
        let mut rng = crate::seed::seeded_rng(11);
        for loss in [0.0, 0.05, 0.2, 0.5] {
            let mut dir = LinkDirection::new(LinkConfig::wan().with_loss(loss));
            let n = 50_000u32;
            let lost = (0..n)
                .filter(|i| {
                    let now = Instant::from_micros(u64::from(*i) * 100);
                    matches!(dir.transmit(now, 100, &mut rng), Fate::Dropped(DropCause::Loss))
                })
                .count();
            let rate = lost as f64 / f64::from(n);
            assert!((rate - loss).abs() < 0.01, "configured {loss}, measured {rate}");
            assert_eq!(dir.stats.lost, lost as u64);
        }
    }

    #[test]
    fn latency_and_jitter_bound_arrival_and_keep_order() {
        let mut rng = crate::seed::seeded_rng(5);
        let config = LinkConfig { jitter: ms(5), ..LinkConfig::ideal(ms(20)) };
        let mut dir = LinkDirection::new(config);
        let mut last = Instant::ZERO;
        for i in 0..1000u64 {
            let now = Instant::from_micros(i * 1000);
            let Fate::Deliver { at, duplicate: None } = dir.transmit(now, 100, &mut rng) else {
                panic!("clean link dropped or duplicated");
            };
            assert!(at >= now + ms(20), "arrived before the latency");
            assert!(at >= last, "jitter alone must not reorder");
            last = at;
        }
    }

    #[test]
    fn reordering_lets_later_datagrams_overtake() {
        let mut rng = crate::seed::seeded_rng(6);
        let config = LinkConfig { reorder: 0.2, reorder_delay: ms(50), ..LinkConfig::ideal(ms(10)) };
        let mut dir = LinkDirection::new(config);
        let arrivals: Vec<Instant> = (0..1000u64)
            .filter_map(|i| match dir.transmit(Instant::from_micros(i * 1000), 100, &mut rng) {
                Fate::Deliver { at, .. } => Some(at),
                Fate::Dropped(_) => None,
            })
            .collect();
        let inversions = arrivals.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 50, "only {inversions} inversions");
        assert!(dir.stats.reordered > 100);
    }

    #[test]
    fn duplicates_are_produced_at_the_configured_rate() {
        let mut rng = crate::seed::seeded_rng(7);
        let mut dir = LinkDirection::new(LinkConfig { duplicate: 0.1, ..LinkConfig::default() });
        let dups = (0..10_000u64)
            .filter(|i| {
                matches!(
                    dir.transmit(Instant::from_micros(i * 10), 64, &mut rng),
                    Fate::Deliver { duplicate: Some(_), .. }
                )
            })
            .count();
        assert!((900..1100).contains(&dups), "{dups} duplicates");
    }

    #[test]
    fn bandwidth_serializes_and_queue_overflows() {
        let mut rng = crate::seed::seeded_rng(8);
        // 1 Mbit/s: a 97-byte payload (125 bytes on the wire) takes exactly 1 ms.
        let config = LinkConfig { max_queue_delay: ms(10), ..LinkConfig::ideal(ms(5)).with_bandwidth(1_000_000) };
        let mut dir = LinkDirection::new(config);
        let now = Instant::from_micros(1_000_000);
        let mut arrivals = Vec::new();
        let mut dropped = 0;
        for _ in 0..20 {
            match dir.transmit(now, 97, &mut rng) {
                Fate::Deliver { at, .. } => arrivals.push(at),
                Fate::Dropped(cause) => {
                    assert_eq!(cause, DropCause::QueueFull);
                    dropped += 1;
                }
            }
        }
        assert_eq!(arrivals[0], now + ms(6));
        assert_eq!(arrivals[1], now + ms(7));
        assert_eq!(arrivals.len(), 11, "10 ms of queue plus the one on the wire");
        assert_eq!(dropped, 9);
    }

    #[test]
    fn mtu_drops_oversized_datagrams() {
        let mut rng = crate::seed::seeded_rng(9);
        let mut dir = LinkDirection::new(LinkConfig::default().with_mtu(1280));
        assert!(matches!(dir.transmit(Instant::ZERO, 1252, &mut rng), Fate::Deliver { .. }));
        assert_eq!(dir.transmit(Instant::ZERO, 1253, &mut rng), Fate::Dropped(DropCause::Mtu));
    }
}
