//! The one source of randomness in the core: a seeded ChaCha20 keystream.
//!
//! Every state machine receives an [`Rng`] at construction (forked from the node's seed), so
//! a simulated run is a pure function of its seed. In production the shell seeds it from the
//! OS once; ChaCha20 with a 256-bit key is a cryptographically secure generator either way.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20Legacy;

/// A deterministic, cryptographically secure random number generator.
pub struct Rng {
    stream: ChaCha20Legacy,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rng(..)")
    }
}

impl Rng {
    /// A generator keyed by 32 bytes of seed material.
    pub fn from_key(key: [u8; 32]) -> Self {
        // The legacy (64-bit counter) variant never runs out of keystream.
        Self { stream: ChaCha20Legacy::new(&key.into(), &[0u8; 8].into()) }
    }

    /// A generator for a numeric seed (simulations and tests).
    pub fn from_seed(seed: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..24].copy_from_slice(b"mesh-core rng v1");
        Self::from_key(key)
    }

    /// An independent generator for a subsystem. Forking draws 32 bytes from `self`, so the
    /// child's stream depends on the order of forks, which is deterministic.
    pub fn fork(&mut self) -> Rng {
        Rng::from_key(self.gen_bytes())
    }

    /// Fill `dest` with random bytes.
    pub fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0);
        self.stream.apply_keystream(dest);
    }

    /// `N` random bytes.
    pub fn gen_bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.fill_bytes(&mut out);
        out
    }

    /// A random `u32`.
    pub fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes(self.gen_bytes())
    }

    /// A random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes(self.gen_bytes())
    }

    /// A uniformly distributed number in `0..bound` (`bound` > 0), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound <= 1 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % bound;
            }
        }
    }

    /// `true` with probability `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // 53 random bits give a uniform float in [0, 1).
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_forks_differ() {
        let mut a = Rng::from_seed(7);
        let mut b = Rng::from_seed(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut fa = a.fork();
        let mut fb = b.fork();
        assert_eq!(fa.next_u64(), fb.next_u64());
        assert_ne!(fa.next_u64(), a.next_u64());
        assert_ne!(Rng::from_seed(1).next_u64(), Rng::from_seed(2).next_u64());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::from_seed(3);
        for bound in [1u64, 2, 3, 334, 1 << 40] {
            for _ in 0..100 {
                assert!(r.below(bound) < bound.max(1));
            }
        }
    }
}
