//! TAI64N timestamps: the initiator's proof that an initiation is newer than the last one.

use crate::time::UnixTime;

/// TAI64 label of the Unix epoch plus the 10 s TAI-UTC offset, as wireguard-go writes it.
const TAI64_EPOCH: u64 = 0x4000_0000_0000_000a;
/// Nanoseconds are rounded down to this granularity (about 16.8 ms) so that a timestamp
/// does not leak precise clock readings (wireguard-go's "whitener").
const WHITENER_NANOS: u32 = 0x0100_0000;

/// A 12-byte TAI64N timestamp; byte order makes lexicographic order chronological.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tai64n(pub [u8; 12]);

impl Tai64n {
    /// The timestamp of a wall-clock time.
    pub fn from_unix(t: UnixTime) -> Self {
        let mut out = [0u8; 12];
        let nanos = t.0.subsec_nanos() / WHITENER_NANOS * WHITENER_NANOS;
        out[..8].copy_from_slice(&(TAI64_EPOCH + t.0.as_secs()).to_be_bytes());
        out[8..].copy_from_slice(&nanos.to_be_bytes());
        Self(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ordered_and_whitened() {
        let a = Tai64n::from_unix(UnixTime(Duration::from_millis(1_000_000)));
        let b = Tai64n::from_unix(UnixTime(Duration::from_millis(1_000_005)));
        let c = Tai64n::from_unix(UnixTime(Duration::from_millis(1_000_040)));
        assert_eq!(a, b, "5 ms apart is below the whitening granularity");
        assert!(c > a);
        assert!(Tai64n::from_unix(UnixTime(Duration::from_secs(2000))) > c);
    }
}
