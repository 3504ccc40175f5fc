//! WireGuard, complete and sans-IO: handshake (Noise IKpsk2 via snow), cookies, sessions
//! with in-place ChaCha20-Poly1305, the replay window, timers, allowed IPs and roaming.
//! Interoperates with wireguard-go and boringtun (see DESIGN.md, "WireGuard facts").

pub mod allowed_ips;
pub mod constants;
pub mod cookie;
mod device;
mod error;
mod keypair;
pub mod keys;
pub mod messages;
pub(crate) mod noise;
mod peer;
pub mod replay;
mod tai64n;
mod timers;

pub use allowed_ips::{AllowedIps, IpPrefix, PrefixError};
pub use device::{Config, ConfigError, Event, PeerStatus, Received, SessionStatus, Stats, Transmit, WireGuard};
pub use error::{DropCounts, DropReason};
pub use keys::{PresharedKey, PrivateKey, PublicKey};
pub use messages::{MessageError, MessageKind, DATA_HEADER_LEN, DATA_OVERHEAD};
pub use peer::{PeerConfig, PeerId, PeerStats};
pub use tai64n::Tai64n;

use bytes::BytesMut;

/// Lay out an IP packet for [`WireGuard::handle_packet`]: headroom, the packet, and
/// capacity for padding and tag so sealing never reallocates.
pub fn packet_buffer(packet: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(packet.len() + DATA_OVERHEAD);
    buf.resize(DATA_HEADER_LEN, 0);
    buf.extend_from_slice(packet);
    buf
}
