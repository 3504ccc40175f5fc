//! The RFC 6479 replay window against the obvious model (a set of seen counters and the
//! window rule). Any disagreement is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::wireguard::constants::REJECT_AFTER_MESSAGES;
use mesh_core::wireguard::replay::{ReplayWindow, WINDOW_SIZE};
use std::collections::BTreeSet;

fuzz_target!(|data: &[u8]| {
    let mut window = ReplayWindow::default();
    let mut seen = BTreeSet::new();
    let mut newest: Option<u64> = None;
    let mut base = 0u64;
    for chunk in data.chunks_exact(3) {
        let delta = u64::from(u16::from_le_bytes([chunk[1], chunk[2]]));
        let counter = match chunk[0] % 4 {
            0 => base.saturating_add(delta),
            1 => {
                base = base.saturating_add(delta * 64);
                base
            }
            2 => base.saturating_sub(delta),
            _ => REJECT_AFTER_MESSAGES - 1 - delta,
        };
        let expected = counter < REJECT_AFTER_MESSAGES
            && !seen.contains(&counter)
            && newest.is_none_or(|n| counter >= n || n - counter <= WINDOW_SIZE);
        assert_eq!(window.check(counter), expected, "check {counter}");
        assert_eq!(window.update(counter), expected, "update {counter}");
        if expected {
            seen.insert(counter);
            newest = Some(newest.map_or(counter, |n| n.max(counter)));
        }
    }
});
