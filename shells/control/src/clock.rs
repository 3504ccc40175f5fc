//! The shell's clocks, turned into the core's time: a monotonic [`Instant`] in microseconds
//! since the process started, and wall time as [`UnixTime`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::time::{Instant, UnixTime};

/// The origin of the core's monotonic time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    pub fn new() -> Self {
        Self { origin: std::time::Instant::now() }
    }

    pub fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The tokio deadline of a core instant.
    pub fn deadline(&self, at: Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.origin + Duration::from_micros(at.as_micros()))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Wall time now (the epoch if the system clock is before it).
pub fn unix_now() -> UnixTime {
    UnixTime(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}
