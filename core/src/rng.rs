//! The one source of randomness in the core: a fast-key-erasure ChaCha20 generator.
//!
//! Every state machine receives an [`Rng`] at construction (forked from the node's seed), so
//! a simulated run is a pure function of its seed. In production the shell fills the 32
//! bytes of seed material from the OS once; the simulator expands its numeric seed.
//!
//! Fast key erasure (Bernstein, "Fast-key-erasure random-number generators", 2017): each
//! batch is one ChaCha20 keystream under the current key, starting at block 0. Its first 32
//! bytes become the next key at once, the rest is handed out and wiped as it is used. So
//! the keystream counter never gets near its 32-bit limit (no panic, however long a node
//! runs), and a snapshot of the generator's memory reveals nothing it already produced: the
//! key that made earlier output is gone, and so are the bytes.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use zeroize::Zeroize;

/// Bytes of seed material.
pub const SEED_LEN: usize = 32;
/// Output bytes per batch (16 ChaCha20 blocks, less the next key).
const BATCH_LEN: usize = 16 * 64 - SEED_LEN;

/// A deterministic, cryptographically secure random number generator.
pub struct Rng {
    key: [u8; SEED_LEN],
    batch: Box<[u8]>,
    /// Bytes of `batch` already handed out (and wiped).
    used: usize,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rng(..)")
    }
}

impl Drop for Rng {
    fn drop(&mut self) {
        self.key.zeroize();
        self.batch.zeroize();
    }
}

impl Rng {
    /// A generator keyed by 32 bytes of seed material (from the OS in production).
    pub fn new(seed: [u8; SEED_LEN]) -> Self {
        Self::with_batch(seed, BATCH_LEN)
    }

    fn with_batch(mut seed: [u8; SEED_LEN], batch_len: usize) -> Self {
        let rng = Self { key: seed, batch: vec![0u8; batch_len.max(1)].into_boxed_slice(), used: batch_len.max(1) };
        seed.zeroize();
        rng
    }

    /// An independent generator for a subsystem. Forking draws 32 bytes from `self`, so the
    /// child's stream depends on the order of forks, which is deterministic.
    pub fn fork(&mut self) -> Rng {
        Rng::with_batch(self.gen_bytes(), self.batch.len())
    }

    /// Make the next batch and replace the key with the keystream's first 32 bytes.
    fn refill(&mut self) {
        let mut next_key = [0u8; SEED_LEN];
        let mut cipher = ChaCha20::new(&self.key.into(), &[0u8; 12].into());
        cipher.apply_keystream(&mut next_key);
        self.batch.fill(0);
        cipher.apply_keystream(&mut self.batch);
        self.key = next_key;
        next_key.zeroize();
        self.used = 0;
    }

    /// Fill `dest` with random bytes.
    pub fn fill_bytes(&mut self, dest: &mut [u8]) {
        let mut filled = 0;
        while filled < dest.len() {
            if self.used == self.batch.len() {
                self.refill();
            }
            let n = (dest.len() - filled).min(self.batch.len() - self.used);
            let source = &mut self.batch[self.used..self.used + n];
            dest[filled..filled + n].copy_from_slice(source);
            source.zeroize();
            self.used += n;
            filled += n;
        }
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

/// A generator for core's own unit tests (the simulator has its own seed expansion).
#[cfg(test)]
pub(crate) fn test_rng(n: u64) -> Rng {
    let mut seed = [0u8; SEED_LEN];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    Rng::new(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: the same construction written out batch by batch.
    fn reference(mut key: [u8; 32], batch_len: usize, total: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < total {
            let mut block = vec![0u8; 32 + batch_len];
            ChaCha20::new(&key.into(), &[0u8; 12].into()).apply_keystream(&mut block);
            key.copy_from_slice(&block[..32]);
            out.extend_from_slice(&block[32..]);
        }
        out.truncate(total);
        out
    }

    #[test]
    fn same_seed_same_stream_and_forks_differ() {
        let mut a = test_rng(7);
        let mut b = test_rng(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut fa = a.fork();
        let mut fb = b.fork();
        assert_eq!(fa.next_u64(), fb.next_u64());
        assert_ne!(fa.next_u64(), a.next_u64());
        assert_ne!(test_rng(1).next_u64(), test_rng(2).next_u64());
    }

    #[test]
    fn output_matches_the_fast_key_erasure_construction_across_many_small_batches() {
        // A 40-byte batch: 1000 rekeys in 40 KB, and reads that straddle batch edges.
        let seed = [9u8; 32];
        let mut rng = Rng::with_batch(seed, 40);
        let mut got = Vec::new();
        for len in (1..=57).cycle().take(1400) {
            let mut chunk = vec![0u8; len];
            rng.fill_bytes(&mut chunk);
            got.extend_from_slice(&chunk);
        }
        assert!(got.len() > 40_000);
        assert_eq!(got, reference(seed, 40, got.len()));
    }

    #[test]
    fn a_snapshot_holds_neither_the_key_of_past_output_nor_the_output() {
        let seed = [3u8; 32];
        let mut rng = Rng::with_batch(seed, 64);
        let first: [u8; 48] = rng.gen_bytes();
        // What the generator holds now: no byte string of the past output, and not the key
        // that produced it (the seed).
        assert_ne!(rng.key, seed);
        assert!(rng.batch[..rng.used].iter().all(|&b| b == 0));
        let held: Vec<u8> = rng.key.iter().chain(rng.batch.iter()).copied().collect();
        assert!(!held.windows(16).any(|w| first.windows(16).any(|f| f == w)));
        // Regenerating from the snapshot's key gives only future output.
        let mut snapshot = Rng::with_batch(rng.key, 64);
        let future: [u8; 16] = snapshot.gen_bytes();
        assert!(!first.windows(16).any(|w| w == future));
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = test_rng(3);
        for bound in [1u64, 2, 3, 334, 1 << 40] {
            for _ in 0..100 {
                assert!(r.below(bound) < bound.max(1));
            }
        }
    }
}
