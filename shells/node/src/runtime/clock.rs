//! The real clock, turned into the core's time inputs.

use mesh_core::time::{Instant, UnixTime};

/// Monotonic time since the runtime started, as the core's [`Instant`] (microseconds).
#[derive(Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// The origin is now, plus one second (so that "now minus a little" never saturates).
    pub fn new() -> Self {
        Self { origin: std::time::Instant::now() }
    }

    pub fn now(&self) -> Instant {
        let micros = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(micros.saturating_add(1_000_000))
    }

    /// How long from now until `at` (zero if it has passed).
    pub fn until(&self, at: Instant) -> std::time::Duration {
        at.saturating_duration_since(self.now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The wall clock now (the Unix epoch if the system clock is before it).
pub fn unix_now() -> UnixTime {
    UnixTime(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
}
