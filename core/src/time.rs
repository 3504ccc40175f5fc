//! Time as an input: a monotonic [`Instant`] in microseconds and a wall clock ([`UnixTime`]).
//!
//! The core never reads a clock. Drivers convert their clock (real or virtual) into these
//! types and pass them in, which is what lets the simulator replay a run bit for bit.

use std::collections::BTreeSet;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point on a monotonic clock, in microseconds since an origin the driver chose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The driver's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let micros = u64::try_from(d.as_micros()).ok()?;
        self.0.checked_add(micros).map(Instant)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at the end of time rather than wrapping: a deadline that far away never fires.
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant(u64::MAX))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(micros))
    }
}

/// Wall-clock time: the duration since the Unix epoch. Used only where a protocol needs
/// calendar time (WireGuard's TAI64N timestamps, certificate and key expiry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub Duration);

/// Wall-clock time derived from the monotonic clock and one sample of the wall clock.
///
/// State machines receive the wall clock once (at construction, or when the driver notices a
/// jump) and advance it with the monotonic `now`, so they need only one time input per call.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    base_instant: Instant,
    base_unix: UnixTime,
}

impl WallClock {
    /// Anchor the wall clock: at `now` the time was `unix`.
    pub fn new(now: Instant, unix: UnixTime) -> Self {
        Self { base_instant: now, base_unix: unix }
    }

    /// The wall-clock time at `now`.
    pub fn at(&self, now: Instant) -> UnixTime {
        UnixTime(self.base_unix.0 + now.saturating_duration_since(self.base_instant))
    }
}

/// Move `key`'s entry in a set of (deadline, key) from `scheduled` to `next` (either may be
/// `None`), so the earliest deadline of many timers is the set's first entry: how the
/// WireGuard peers and the node's SSH sessions keep `poll_timeout` O(1).
pub(crate) fn reschedule<K: Ord + Copy>(
    deadlines: &mut BTreeSet<(Instant, K)>,
    key: K,
    scheduled: &mut Option<Instant>,
    next: Option<Instant>,
) {
    if next == *scheduled {
        return;
    }
    if let Some(old) = scheduled.take() {
        deadlines.remove(&(old, key));
    }
    if let Some(new) = next {
        deadlines.insert((new, key));
    }
    *scheduled = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_micros(5);
        assert_eq!(t - Duration::from_secs(1), Instant::ZERO);
        assert_eq!((t + Duration::MAX).as_micros(), u64::MAX);
        assert_eq!(Instant::from_micros(1_000_005).saturating_duration_since(t), Duration::from_secs(1));
        assert_eq!(t.saturating_duration_since(Instant::from_micros(9)), Duration::ZERO);
    }

    #[test]
    fn wall_clock_advances_with_monotonic_time() {
        let clock = WallClock::new(Instant::from_micros(10), UnixTime(Duration::from_secs(100)));
        assert_eq!(clock.at(Instant::from_micros(1_000_010)), UnixTime(Duration::from_secs(101)));
    }
}
