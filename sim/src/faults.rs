//! Faults: the changes a test or the chaos schedule makes to the world, and the chaos
//! schedule itself.
//!
//! A [`Fault`] is a value so that it can be scheduled ahead of time
//! (`World::schedule_fault`), recorded in the trace, and printed in a failure report. The
//! [`Chaos`] schedule injects random faults at random intervals and repairs each one after a
//! random duration; its choices come from its own fork of the world's RNG, so they are part
//! of the seed's story like everything else.

use std::fmt;
use std::time::Duration;

use mesh_core::rng::Rng;

use crate::ids::NodeId;

/// A change to the world's fault state (injection or repair).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Cut both directions between two nodes.
    Partition(NodeId, NodeId),
    /// Cut `from -> to` only.
    PartitionOneWay { from: NodeId, to: NodeId },
    /// Restore both directions between two nodes.
    Heal(NodeId, NodeId),
    /// Restore `from -> to` only.
    HealOneWay { from: NodeId, to: NodeId },
    /// Cut a node off from everyone, both ways.
    Isolate(NodeId),
    /// Remove every partition.
    HealAll,
    /// Stop a node: its WireGuard state is lost and datagrams to it are dropped.
    Crash(NodeId),
    /// Start a crashed node again: same static key, fresh state.
    Restart(NodeId),
}

impl Fault {
    /// `(kind, a, b)` for the trace; unused node slots are `NodeId(u32::MAX)`.
    pub(crate) fn encode(self) -> (u32, NodeId, NodeId) {
        let none = NodeId(u32::MAX as usize);
        match self {
            Fault::Partition(a, b) => (1, a, b),
            Fault::PartitionOneWay { from, to } => (2, from, to),
            Fault::Heal(a, b) => (3, a, b),
            Fault::HealOneWay { from, to } => (4, from, to),
            Fault::Isolate(n) => (5, n, none),
            Fault::HealAll => (6, none, none),
            Fault::Crash(n) => (7, n, none),
            Fault::Restart(n) => (8, n, none),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition(a, b) => write!(f, "partition {a} <-> {b}"),
            Fault::PartitionOneWay { from, to } => write!(f, "partition {from} -> {to}"),
            Fault::Heal(a, b) => write!(f, "heal {a} <-> {b}"),
            Fault::HealOneWay { from, to } => write!(f, "heal {from} -> {to}"),
            Fault::Isolate(n) => write!(f, "isolate {n}"),
            Fault::HealAll => write!(f, "heal all"),
            Fault::Crash(n) => write!(f, "crash {n}"),
            Fault::Restart(n) => write!(f, "restart {n}"),
        }
    }
}

/// Parameters of the chaos schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosConfig {
    /// Mean time between injected faults (each gap is uniform in 0.5..1.5 times this).
    pub mean_interval: Duration,
    /// Shortest and longest time a fault lasts before it is repaired.
    pub min_duration: Duration,
    pub max_duration: Duration,
    /// Inject symmetric partitions between random pairs.
    pub partitions: bool,
    /// Inject one-way partitions between random pairs.
    pub one_way_partitions: bool,
    /// Crash random nodes (restarted after the fault's duration).
    pub crashes: bool,
    /// At most this many nodes down at once.
    pub max_crashed: usize,
}

impl Default for ChaosConfig {
    /// A fault every 10 s on average lasting 2 to 20 s; all kinds; one node down at most.
    fn default() -> Self {
        Self {
            mean_interval: Duration::from_secs(10),
            min_duration: Duration::from_secs(2),
            max_duration: Duration::from_secs(20),
            partitions: true,
            one_way_partitions: true,
            crashes: true,
            max_crashed: 1,
        }
    }
}

/// A fault to inject now and the repair to schedule after `lasts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub fault: Fault,
    pub repair: Fault,
    pub lasts: Duration,
}

/// The chaos schedule: decides which fault comes next and when.
#[derive(Debug)]
pub struct Chaos {
    config: ChaosConfig,
    rng: Rng,
}

fn uniform_between(rng: &mut Rng, lo: Duration, hi: Duration) -> Duration {
    let lo_us = u64::try_from(lo.as_micros()).unwrap_or(u64::MAX);
    let hi_us = u64::try_from(hi.as_micros()).unwrap_or(u64::MAX).max(lo_us);
    Duration::from_micros(lo_us + rng.below(hi_us - lo_us + 1))
}

impl Chaos {
    /// A schedule drawing from `rng`.
    pub fn new(config: ChaosConfig, rng: Rng) -> Self {
        Self { config, rng }
    }

    /// The configuration.
    pub fn config(&self) -> &ChaosConfig {
        &self.config
    }

    /// Time until the next fault.
    pub fn next_gap(&mut self) -> Duration {
        let mean = self.config.mean_interval;
        uniform_between(&mut self.rng, mean / 2, mean + mean / 2)
    }

    /// Choose a fault among `nodes` nodes; `is_up(i)` says whether node `i` runs and
    /// `crashed` how many are down. `None` when nothing applicable was drawn this time.
    pub fn plan(&mut self, nodes: usize, crashed: usize, is_up: impl Fn(NodeId) -> bool) -> Option<Planned> {
        if nodes < 2 {
            return None;
        }
        let mut kinds = [0u8; 3];
        let mut n = 0;
        for (enabled, kind) in
            [(self.config.partitions, 0), (self.config.one_way_partitions, 1), (self.config.crashes, 2)]
        {
            if enabled {
                kinds[n] = kind;
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        let kind = kinds[self.rng.below(n as u64) as usize];
        let a = NodeId(self.rng.below(nodes as u64) as usize);
        let b = NodeId((a.0 + 1 + self.rng.below(nodes as u64 - 1) as usize) % nodes);
        let lasts = uniform_between(&mut self.rng, self.config.min_duration, self.config.max_duration);
        let (fault, repair) = match kind {
            0 => (Fault::Partition(a, b), Fault::Heal(a, b)),
            1 => (Fault::PartitionOneWay { from: a, to: b }, Fault::HealOneWay { from: a, to: b }),
            _ => {
                if crashed >= self.config.max_crashed || !is_up(a) {
                    return None;
                }
                (Fault::Crash(a), Fault::Restart(a))
            }
        };
        Some(Planned { fault, repair, lasts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_stay_in_range_and_respect_the_crash_limit() {
        let mut chaos = Chaos::new(ChaosConfig::default(), crate::seed::seeded_rng(1));
        let mut crashes = 0;
        for _ in 0..1000 {
            let gap = chaos.next_gap();
            assert!(gap >= Duration::from_secs(5) && gap <= Duration::from_secs(15));
            match chaos.plan(4, 1, |_| true) {
                Some(Planned { fault: Fault::Crash(_), .. }) => crashes += 1,
                Some(Planned { fault: Fault::Partition(a, b), lasts, .. }) => {
                    assert!(a != b && a.0 < 4 && b.0 < 4);
                    assert!(lasts >= Duration::from_secs(2) && lasts <= Duration::from_secs(20));
                }
                _ => {}
            }
        }
        assert_eq!(crashes, 0, "one node is already down");
        assert!(chaos.plan(1, 0, |_| true).is_none());
    }
}
