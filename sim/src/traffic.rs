//! The traffic application: small IPv4/UDP packets between mesh addresses.
//!
//! Each running node periodically sends one packet to a random peer. The packet is a valid
//! IPv4 header (correct total length and header checksum) plus a UDP header and a payload
//! carrying the sender's per-pair sequence number and send time, so the receiver can count
//! deliveries per ordered pair and measure latency. WireGuard only looks at the IP header
//! (to route by destination and to check the source against the sender's allowed IPs), so
//! this is exactly what a real TUN device would hand it.

use std::net::Ipv4Addr;
use std::time::Duration;

use mesh_core::rng::Rng;
use mesh_core::time::Instant;
use thiserror::Error;

/// UDP port of the traffic application (source and destination).
pub const APP_PORT: u16 = 40_000;
const IPV4_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
/// Sequence number and send time.
const PAYLOAD_LEN: usize = 16;
/// Length of every application packet.
pub const APP_PACKET_LEN: usize = IPV4_HEADER_LEN + UDP_HEADER_LEN + PAYLOAD_LEN;

/// How often nodes send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficConfig {
    /// Mean gap between two packets of one node; each gap is uniform in 0.5..1.5 times this.
    pub interval: Duration,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self { interval: Duration::from_millis(100) }
    }
}

impl TrafficConfig {
    /// The gap before a node's next packet.
    pub fn next_gap(&self, rng: &mut Rng) -> Duration {
        let mean = u64::try_from(self.interval.as_micros()).unwrap_or(u64::MAX).max(2);
        Duration::from_micros(mean / 2 + rng.below(mean))
    }
}

/// Why a decrypted packet is not an application packet.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    #[error("packet has {0} bytes, expected {APP_PACKET_LEN}")]
    Length(usize),
    #[error("not an IPv4 packet with a 20-byte header")]
    NotIpv4,
    #[error("bad IPv4 header checksum")]
    Checksum,
    #[error("not UDP to the application port")]
    NotApp,
}

/// An application packet's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppPacket {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Per ordered pair, starting at 0.
    pub seq: u64,
    /// Virtual time it was sent.
    pub sent_at: Instant,
}

/// RFC 1071 one's-complement checksum of an IPv4 header (checksum field included; a valid
/// header sums to zero).
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl AppPacket {
    /// The packet's bytes.
    pub fn encode(&self) -> [u8; APP_PACKET_LEN] {
        let mut p = [0u8; APP_PACKET_LEN];
        let total = APP_PACKET_LEN as u16;
        p[0] = 0x45; // version 4, IHL 5
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[4..6].copy_from_slice(&(self.seq as u16).to_be_bytes()); // identification
        p[6] = 0x40; // don't fragment
        p[8] = 64; // TTL
        p[9] = 17; // UDP
        p[12..16].copy_from_slice(&self.src.octets());
        p[16..20].copy_from_slice(&self.dst.octets());
        let checksum = ipv4_checksum(&p[..IPV4_HEADER_LEN]);
        p[10..12].copy_from_slice(&checksum.to_be_bytes());
        let udp = &mut p[IPV4_HEADER_LEN..];
        udp[0..2].copy_from_slice(&APP_PORT.to_be_bytes());
        udp[2..4].copy_from_slice(&APP_PORT.to_be_bytes());
        udp[4..6].copy_from_slice(&((UDP_HEADER_LEN + PAYLOAD_LEN) as u16).to_be_bytes());
        // UDP checksum 0: "none", allowed over IPv4.
        udp[8..16].copy_from_slice(&self.seq.to_be_bytes());
        udp[16..24].copy_from_slice(&self.sent_at.as_micros().to_be_bytes());
        p
    }

    /// Parse and validate a packet produced by [`Self::encode`].
    pub fn decode(p: &[u8]) -> Result<Self, PacketError> {
        if p.len() != APP_PACKET_LEN {
            return Err(PacketError::Length(p.len()));
        }
        if p[0] != 0x45 || usize::from(u16::from_be_bytes([p[2], p[3]])) != APP_PACKET_LEN {
            return Err(PacketError::NotIpv4);
        }
        if ipv4_checksum(&p[..IPV4_HEADER_LEN]) != 0 {
            return Err(PacketError::Checksum);
        }
        let udp = &p[IPV4_HEADER_LEN..];
        if p[9] != 17 || udp[2..4] != APP_PORT.to_be_bytes() {
            return Err(PacketError::NotApp);
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&udp[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Self {
            src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
            dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
            seq: word(8),
            sent_at: Instant::from_micros(word(16)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_a_valid_header() {
        let pkt = AppPacket {
            src: Ipv4Addr::new(100, 64, 0, 1),
            dst: Ipv4Addr::new(100, 64, 1, 7),
            seq: 123_456,
            sent_at: Instant::from_micros(987_654_321),
        };
        let bytes = pkt.encode();
        assert_eq!(ipv4_checksum(&bytes[..20]), 0);
        assert_eq!(u16::from_be_bytes([bytes[2], bytes[3]]) as usize, APP_PACKET_LEN);
        assert_eq!(AppPacket::decode(&bytes), Ok(pkt));
        let mut bad = bytes;
        bad[15] ^= 1;
        assert_eq!(AppPacket::decode(&bad), Err(PacketError::Checksum));
        assert_eq!(AppPacket::decode(&bytes[..30]), Err(PacketError::Length(30)));
    }

    #[test]
    fn checksum_matches_a_known_header() {
        // The example header from Wikipedia's "IPv4 header checksum" article.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&header), 0xb861);
    }

    #[test]
    fn gaps_are_jittered_around_the_interval() {
        let config = TrafficConfig::default();
        let mut rng = crate::seed::seeded_rng(3);
        for _ in 0..1000 {
            let gap = config.next_gap(&mut rng);
            assert!(gap >= Duration::from_millis(50) && gap < Duration::from_millis(150));
        }
    }
}
