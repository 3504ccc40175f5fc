//! Just enough of the inner IP header to route and authenticate a packet: version,
//! addresses and total length. Full parsing lives in `core::ip`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Addresses and length of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerAddrs {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Length the header declares (the rest of the buffer is padding).
    pub total_len: usize,
}

/// Parse the addresses of an IPv4 or IPv6 packet; `None` if truncated or not IP.
pub fn parse(packet: &[u8]) -> Option<InnerAddrs> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if total_len < ihl.max(20) || total_len > packet.len() {
                return None;
            }
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some(InnerAddrs { src: Ipv4Addr::from(src).into(), dst: Ipv4Addr::from(dst).into(), total_len })
        }
        6 if packet.len() >= 40 => {
            let total_len = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            if total_len > packet.len() {
                return None;
            }
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some(InnerAddrs { src: Ipv6Addr::from(src).into(), dst: Ipv6Addr::from(dst).into(), total_len })
        }
        _ => None,
    }
}
