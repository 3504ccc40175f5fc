//! Numeric seeds for the simulator and tests: the one place a `u64` becomes the 32 bytes of
//! seed material the core's generator takes. Production never comes here (its shells read
//! the seed material from the OS).

use blake2::{Blake2s256, Digest};
use mesh_core::rng::{Rng, SEED_LEN};

/// 32 bytes of seed material expanded from a numeric seed.
pub fn seed_material(seed: u64) -> [u8; SEED_LEN] {
    let mut hash = Blake2s256::new();
    hash.update(b"mesh-sim seed v1");
    hash.update(seed.to_le_bytes());
    hash.finalize().into()
}

/// A generator for a numeric seed.
pub fn seeded_rng(seed: u64) -> Rng {
    Rng::new(seed_material(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_expand_apart_and_repeatably() {
        assert_eq!(seed_material(7), seed_material(7));
        assert_ne!(seed_material(7), seed_material(8));
        assert_eq!(seeded_rng(1).next_u64(), seeded_rng(1).next_u64());
    }
}
