//! ICMP echo for `meshctl ping`: the request a node sends into its own tunnel and the
//! recognition of the reply among the packets coming back (IPv4 and IPv6).

use std::net::IpAddr;

use bytes::BytesMut;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
};

/// An echo reply as it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoReply {
    pub from: IpAddr,
    pub ident: u16,
    pub seq: u16,
}

/// An echo request from `src` to `dst` (same family; `None` otherwise), `headroom` zero
/// bytes in front (the room the node's outbound path expects before the packet).
pub fn echo_request(src: IpAddr, dst: IpAddr, ident: u16, seq: u16, data: &[u8], headroom: usize) -> Option<BytesMut> {
    let caps = ChecksumCapabilities::default();
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let icmp = Icmpv4Repr::EchoRequest { ident, seq_no: seq, data };
            let ip = Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Icmp,
                payload_len: icmp.buffer_len(),
                hop_limit: 64,
            };
            let mut out = BytesMut::zeroed(headroom + ip.buffer_len() + ip.payload_len);
            let packet = out.get_mut(headroom..)?;
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut packet[..]), &caps);
            icmp.emit(&mut Icmpv4Packet::new_unchecked(packet.get_mut(ip.buffer_len()..)?), &caps);
            Some(out)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let icmp = Icmpv6Repr::EchoRequest { ident, seq_no: seq, data };
            let ip = Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Icmpv6,
                payload_len: icmp.buffer_len(),
                hop_limit: 64,
            };
            let mut out = BytesMut::zeroed(headroom + ip.buffer_len() + ip.payload_len);
            let packet = out.get_mut(headroom..)?;
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut packet[..]));
            icmp.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(packet.get_mut(ip.buffer_len()..)?), &caps);
            Some(out)
        }
        _ => None,
    }
}

/// The echo reply `packet` (an IP packet, checksums verified) is, if it is one.
pub fn echo_reply(packet: &[u8]) -> Option<EchoReply> {
    let caps = ChecksumCapabilities::default();
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Icmp || ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
            match Icmpv4Repr::parse(&icmp, &caps).ok()? {
                Icmpv4Repr::EchoReply { ident, seq_no, .. } => {
                    Some(EchoReply { from: IpAddr::V4(ip.src_addr()), ident, seq: seq_no })
                }
                _ => None,
            }
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if ip.next_header() != IpProtocol::Icmpv6 {
                return None;
            }
            let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            match Icmpv6Repr::parse(&src, &dst, &icmp, &caps).ok()? {
                Icmpv6Repr::EchoReply { ident, seq_no, .. } => {
                    Some(EchoReply { from: IpAddr::V6(src), ident, seq: seq_no })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `packet` could be an ICMP echo reply: one byte compare each, cheap enough to
/// ask of every packet while a ping waits.
pub fn may_be_echo_reply(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let header_len = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
            packet.get(9) == Some(&1) && packet.get(header_len) == Some(&0)
        }
        Some(6) => packet.get(6) == Some(&58) && packet.get(40) == Some(&129),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply made from a request by swapping addresses and the type, as a peer's stack
    /// does.
    fn reply_to(request: &[u8]) -> Vec<u8> {
        let caps = ChecksumCapabilities::default();
        if request[0] >> 4 == 4 {
            let ip = Ipv4Packet::new_checked(request).unwrap_or_else(|e| panic!("{e}"));
            let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap_or_else(|e| panic!("{e}"));
            let Ok(Icmpv4Repr::EchoRequest { ident, seq_no, data }) = Icmpv4Repr::parse(&icmp, &caps) else {
                panic!("not a request")
            };
            let reply = Icmpv4Repr::EchoReply { ident, seq_no, data };
            let repr = Ipv4Repr {
                src_addr: ip.dst_addr(),
                dst_addr: ip.src_addr(),
                next_header: IpProtocol::Icmp,
                payload_len: reply.buffer_len(),
                hop_limit: 64,
            };
            let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]), &caps);
            reply.emit(&mut Icmpv4Packet::new_unchecked(&mut out[repr.buffer_len()..]), &caps);
            out
        } else {
            let ip = Ipv6Packet::new_checked(request).unwrap_or_else(|e| panic!("{e}"));
            let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap_or_else(|e| panic!("{e}"));
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            let Ok(Icmpv6Repr::EchoRequest { ident, seq_no, data }) = Icmpv6Repr::parse(&s, &d, &icmp, &caps) else {
                panic!("not a request")
            };
            let reply = Icmpv6Repr::EchoReply { ident, seq_no, data };
            let repr = Ipv6Repr {
                src_addr: d,
                dst_addr: s,
                next_header: IpProtocol::Icmpv6,
                payload_len: reply.buffer_len(),
                hop_limit: 64,
            };
            let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut out[..]));
            reply.emit(&d, &s, &mut Icmpv6Packet::new_unchecked(&mut out[repr.buffer_len()..]), &caps);
            out
        }
    }

    #[test]
    fn requests_parse_and_replies_are_recognised_in_both_families() {
        let pairs: [(IpAddr, IpAddr); 2] = [
            (
                "100.64.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
                "100.64.0.2".parse().unwrap_or_else(|e| panic!("{e}")),
            ),
            (
                "fd7a:115c:a1e0::1".parse().unwrap_or_else(|e| panic!("{e}")),
                "fd7a:115c:a1e0::2".parse().unwrap_or_else(|e| panic!("{e}")),
            ),
        ];
        for (src, dst) in pairs {
            let request = echo_request(src, dst, 7, 9, b"meshctl", 16).unwrap_or_else(|| panic!("request"));
            assert!(request[..16].iter().all(|&b| b == 0), "headroom");
            let packet = &request[16..];
            assert!(crate::ip::PacketInfo::parse(packet).is_ok());
            assert_eq!(echo_reply(packet), None, "a request is not a reply");
            assert!(!may_be_echo_reply(packet));
            let reply = reply_to(packet);
            assert!(may_be_echo_reply(&reply));
            assert_eq!(echo_reply(&reply), Some(EchoReply { from: dst, ident: 7, seq: 9 }));
            let mut corrupt = reply.clone();
            let last = corrupt.len() - 1;
            corrupt[last] ^= 1;
            assert_eq!(echo_reply(&corrupt), None, "a bad checksum is not a reply");
        }
        assert!(echo_request(
            "100.64.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
            "fd7a:115c:a1e0::2".parse().unwrap_or_else(|e| panic!("{e}")),
            1,
            1,
            b"",
            0
        )
        .is_none());
        assert_eq!(echo_reply(b""), None);
        assert_eq!(echo_reply(&[0x45; 30]), None);
    }
}
