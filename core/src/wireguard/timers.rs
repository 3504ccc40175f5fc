//! Per-peer timers, as deadlines. Each `on_*` method is one of the events of the
//! WireGuard paper's section 6 (and wireguard-go's timers.go); [`PeerTimers::expire`]
//! reports which deadlines have passed so the device can act on them.

use std::time::Duration;

use super::constants::{KEEPALIVE_TIMEOUT, REKEY_TIMEOUT, ZERO_KEYS_AFTER_TIME};
use crate::time::Instant;

/// Deadlines of one peer; `None` means not armed.
#[derive(Clone, Debug, Default)]
pub struct PeerTimers {
    /// Resend the initiation if no response arrived.
    pub retransmit_handshake: Option<Instant>,
    /// Send a keepalive: we received data and have sent nothing since.
    pub send_keepalive: Option<Instant>,
    need_another_keepalive: bool,
    /// Start a handshake: we sent data and have received nothing since.
    pub new_handshake: Option<Instant>,
    /// Erase all keys: no session was derived for a long time.
    pub zero_key_material: Option<Instant>,
    /// Send a keepalive regardless (configured per peer).
    pub persistent_keepalive: Option<Instant>,
}

/// The deadlines that passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub retransmit_handshake: bool,
    pub send_keepalive: bool,
    pub new_handshake: bool,
    pub zero_key_material: bool,
    pub persistent_keepalive: bool,
}

fn take_if_due(slot: &mut Option<Instant>, now: Instant) -> bool {
    match *slot {
        Some(at) if at <= now => {
            *slot = None;
            true
        }
        _ => false,
    }
}

impl PeerTimers {
    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Disarm and report every deadline at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Expired {
        let mut expired = Expired {
            retransmit_handshake: take_if_due(&mut self.retransmit_handshake, now),
            send_keepalive: take_if_due(&mut self.send_keepalive, now),
            new_handshake: take_if_due(&mut self.new_handshake, now),
            zero_key_material: take_if_due(&mut self.zero_key_material, now),
            persistent_keepalive: take_if_due(&mut self.persistent_keepalive, now),
        };
        if expired.send_keepalive && self.need_another_keepalive {
            self.need_another_keepalive = false;
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        }
        if expired.zero_key_material {
            // Nothing else matters once the keys are gone.
            expired.retransmit_handshake = false;
            self.retransmit_handshake = None;
        }
        expired
    }

    /// A data packet (not a keepalive) was sent. `jitter` is called only when the timer is
    /// armed, not for every packet of a burst: randomness is drawn where it is used.
    pub fn on_data_sent(&mut self, now: Instant, jitter: impl FnOnce() -> Duration) {
        if self.new_handshake.is_none() {
            self.new_handshake = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter());
        }
    }

    /// A data packet (not a keepalive) was received.
    pub fn on_data_received(&mut self, now: Instant) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        } else {
            self.need_another_keepalive = true;
        }
    }

    /// Any authenticated packet (data, keepalive or handshake) was sent.
    pub fn on_authenticated_sent(&mut self) {
        self.send_keepalive = None;
    }

    /// Any authenticated packet was received.
    pub fn on_authenticated_received(&mut self) {
        self.new_handshake = None;
    }

    /// An authenticated packet went either way: push the persistent keepalive back.
    pub fn on_authenticated_traversal(&mut self, now: Instant, persistent: Option<Duration>) {
        if let Some(interval) = persistent {
            self.persistent_keepalive = Some(now + interval);
        }
    }

    /// An initiation was sent: arm the retry.
    pub fn on_initiation_sent(&mut self, now: Instant, jitter: Duration) {
        self.retransmit_handshake = Some(now + REKEY_TIMEOUT + jitter);
    }

    /// Our initiation was answered.
    pub fn on_handshake_complete(&mut self) {
        self.retransmit_handshake = None;
    }

    /// New session keys exist (either role).
    pub fn on_session_derived(&mut self, now: Instant) {
        self.zero_key_material = Some(now + ZERO_KEYS_AFTER_TIME);
    }

    /// The retry series gave up: keys go at the latest 540 s from now.
    pub fn on_gave_up(&mut self, now: Instant) {
        self.retransmit_handshake = None;
        if self.zero_key_material.is_none() {
            self.zero_key_material = Some(now + ZERO_KEYS_AFTER_TIME);
        }
    }

    /// Everything off (keys erased or peer removed).
    pub fn clear(&mut self) {
        *self = Self { persistent_keepalive: self.persistent_keepalive, ..Self::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_data_draws_jitter_once_per_armed_timer() {
        let mut timers = PeerTimers::default();
        let mut draws = 0;
        let now = Instant::from_micros(1_000_000);
        for _ in 0..100 {
            timers.on_data_sent(now, || {
                draws += 1;
                Duration::from_millis(7)
            });
        }
        assert_eq!(draws, 1, "only the send that armed the timer draws");
        assert_eq!(timers.new_handshake, Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + Duration::from_millis(7)));
        // A reply disarms it; the next send arms it again, and draws again.
        timers.on_authenticated_received();
        for _ in 0..100 {
            timers.on_data_sent(now, || {
                draws += 1;
                Duration::ZERO
            });
        }
        assert_eq!(draws, 2);
    }
}
