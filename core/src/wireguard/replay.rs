//! The anti-replay window of RFC 6479: a ring of 64-bit blocks covering 8128 counters.
//!
//! Checking is split from updating so that the window moves only after the packet's
//! authentication tag verified: an attacker cannot slide it with forged counters.

use super::constants::REJECT_AFTER_MESSAGES;

const BLOCK_BITS: u64 = 64;
const BLOCKS: usize = 128;
/// Counters older than `newest - WINDOW_SIZE` are rejected.
pub const WINDOW_SIZE: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// Which counters have been seen.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// Highest counter accepted so far (meaningful once `seen_any`).
    newest: u64,
    seen_any: bool,
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self { newest: 0, seen_any: false, bitmap: [0; BLOCKS] }
    }
}

impl ReplayWindow {
    /// Whether `counter` would be accepted. Does not change the window.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if !self.seen_any || counter > self.newest {
            return true;
        }
        if self.newest - counter > WINDOW_SIZE {
            return false;
        }
        let (block, bit) = Self::position(counter);
        self.bitmap[block] & bit == 0
    }

    /// Record `counter` as seen. Returns `false` (and changes nothing) if it was a replay
    /// or too old.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if !self.seen_any || counter > self.newest {
            let old_block = if self.seen_any { self.newest / BLOCK_BITS } else { 0 };
            let new_block = counter / BLOCK_BITS;
            let first_clear = if self.seen_any { old_block + 1 } else { 0 };
            let to_clear = (new_block + 1).saturating_sub(first_clear).min(BLOCKS as u64);
            for i in 0..to_clear {
                self.bitmap[((first_clear + i) % BLOCKS as u64) as usize] = 0;
            }
            self.newest = counter;
            self.seen_any = true;
        }
        let (block, bit) = Self::position(counter);
        self.bitmap[block] |= bit;
        true
    }

    fn position(counter: u64) -> (usize, u64) {
        (((counter / BLOCK_BITS) % BLOCKS as u64) as usize, 1u64 << (counter % BLOCK_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The obvious model: a set of everything seen and the rule "not older than the window".
    #[derive(Default)]
    struct Model {
        seen: BTreeSet<u64>,
        newest: Option<u64>,
    }

    impl Model {
        fn update(&mut self, c: u64) -> bool {
            if c >= REJECT_AFTER_MESSAGES || self.seen.contains(&c) {
                return false;
            }
            if let Some(n) = self.newest {
                if c < n && n - c > WINDOW_SIZE {
                    return false;
                }
            }
            self.seen.insert(c);
            self.newest = Some(self.newest.map_or(c, |n| n.max(c)));
            true
        }
    }

    #[test]
    fn basics() {
        let mut w = ReplayWindow::default();
        assert!(w.update(0));
        assert!(!w.update(0));
        assert!(w.update(10_000));
        assert!(!w.update(10_000 - WINDOW_SIZE - 1));
        assert!(w.update(10_000 - WINDOW_SIZE));
        assert!(!w.update(REJECT_AFTER_MESSAGES));
    }

    proptest! {
        #[test]
        fn matches_reference_model(steps in proptest::collection::vec((0u64..3, 0u64..20_000), 1..400)) {
            let mut w = ReplayWindow::default();
            let mut m = Model::default();
            let mut base = 0u64;
            for (kind, x) in steps {
                // Mix small jumps, big jumps and replays of old counters.
                let c = match kind { 0 => base + x % 200, 1 => { base += x; base }, _ => base.saturating_sub(x) };
                let checked = w.check(c);
                let expected = m.update(c);
                prop_assert_eq!(checked, expected, "check({})", c);
                prop_assert_eq!(w.update(c), expected, "update({})", c);
            }
        }
    }
}
