//! Protocol constants from the WireGuard paper (section 6) and wireguard-go.

use std::time::Duration;

/// An initiator starts a new handshake when its current session is this old (on send).
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// No packet is sent or accepted on a session older than this.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// The initiator also rekeys on receive once the session is this old (180 - 10 - 5).
pub const REKEY_ON_RECEIVE_AFTER_TIME: Duration = Duration::from_secs(165);
/// Handshake retries stop after this long without an answer.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Base interval between handshake retries (jitter is added).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound (exclusive) of the random jitter added to a retry, in milliseconds.
pub const REKEY_TIMEOUT_JITTER_MAX_MS: u64 = 334;
/// A keepalive is sent this long after receiving data if nothing was sent meanwhile.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// All key material of a peer is erased this long after the last session was derived.
pub const ZERO_KEYS_AFTER_TIME: Duration = Duration::from_secs(540);
/// A session is rekeyed after this many messages were sent on it.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// No packet is sent or accepted with a counter at or above this.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// At most one initiation per peer is processed per this interval (flood gate).
pub const INITIATIONS_MIN_INTERVAL: Duration = Duration::from_millis(20);
/// The responder's cookie secret is replaced after this long; cookies live as long.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);
/// How long a node stays "under load" after the handshake rate last exceeded the threshold.
pub const UNDER_LOAD_HOLD_TIME: Duration = Duration::from_secs(1);
/// Default handshake messages per second above which mac2 (a cookie) is required.
/// wireguard-go switches at 1/8 of its 4096-entry handshake queue; this is the same figure
/// expressed as a rate, since a sans-IO machine handles each message as it arrives.
pub const DEFAULT_HANDSHAKE_LOAD_THRESHOLD: u32 = 512;
/// Packets held per peer while a handshake is in flight (wireguard-go: QueueStagedSize).
pub const MAX_STAGED_PACKETS: usize = 128;
