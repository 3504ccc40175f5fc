//! Why the device dropped something. Every drop is counted (see [`DropCounts`]) and traced.

use thiserror::Error;

use super::messages::MessageError;

/// The reason an input was dropped.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    #[error("malformed message: {0}")]
    Malformed(#[from] MessageError),
    #[error("invalid mac1")]
    BadMac1,
    #[error("under load without a valid cookie (cookie reply sent)")]
    CookieRequired,
    #[error("handshake message failed to decrypt")]
    HandshakeFailed,
    #[error("initiation from an unknown static key")]
    UnknownPeer,
    #[error("initiation timestamp not newer than the last one (replay)")]
    StaleTimestamp,
    #[error("second initiation from the same peer within 20 ms")]
    InitiationFlood,
    #[error("unknown receiver index")]
    UnknownIndex,
    #[error("response does not match the handshake in flight")]
    UnexpectedResponse,
    #[error("cookie reply failed to decrypt")]
    BadCookieReply,
    #[error("session expired")]
    SessionExpired,
    #[error("replayed or too old counter")]
    Replay,
    #[error("authentication tag mismatch")]
    BadTag,
    #[error("inner packet is not a valid IP packet")]
    BadInnerPacket,
    #[error("inner source address is not in the peer's allowed IPs")]
    InnerSourceNotAllowed,
    #[error("no peer's allowed IPs contain the destination")]
    NoRoute,
    #[error("peer has no known endpoint")]
    NoEndpoint,
    #[error("packet larger than a datagram can carry")]
    TooLarge,
}

impl DropReason {
    /// Number of distinct reasons.
    pub const COUNT: usize = 18;

    /// A dense index for counters.
    pub fn index(&self) -> usize {
        match self {
            DropReason::Malformed(_) => 0,
            DropReason::BadMac1 => 1,
            DropReason::CookieRequired => 2,
            DropReason::HandshakeFailed => 3,
            DropReason::UnknownPeer => 4,
            DropReason::StaleTimestamp => 5,
            DropReason::InitiationFlood => 6,
            DropReason::UnknownIndex => 7,
            DropReason::UnexpectedResponse => 8,
            DropReason::BadCookieReply => 9,
            DropReason::SessionExpired => 10,
            DropReason::Replay => 11,
            DropReason::BadTag => 12,
            DropReason::BadInnerPacket => 13,
            DropReason::InnerSourceNotAllowed => 14,
            DropReason::NoRoute => 15,
            DropReason::NoEndpoint => 16,
            DropReason::TooLarge => 17,
        }
    }
}

/// Drop counters, one per [`DropReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::COUNT]);

impl DropCounts {
    pub fn record(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }

    /// How many inputs were dropped for `reason` (the payload of `Malformed` is ignored).
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}
