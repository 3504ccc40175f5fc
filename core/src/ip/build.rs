//! Building IPv4 packets with correct checksums, through smoltcp's wire types: the replies
//! the node writes itself (MagicDNS over UDP, ICMP host unreachable) and the packets tests
//! and the simulator inject.

use std::net::{IpAddr, Ipv4Addr};

use bytes::BytesMut;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket,
    TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

use super::packet::PacketInfo;

/// An IPv4/UDP packet.
pub fn udp_v4(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let udp = UdpRepr { src_port, dst_port };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; ip.buffer_len() + ip.payload_len];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut buf[ip.buffer_len()..]),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    buf
}

/// ICMPv4 host unreachable from `ours` to the sender of `original` (a packet with no route
/// into the mesh); `None` unless `original` is IPv4. Only the parsed headers of the original
/// are at hand, so the quote is rebuilt from them: its IP header and the ports, which is what
/// the sender's stack needs to find the socket (RFC 792's first 8 bytes).
pub fn icmp_v4_host_unreachable(ours: Ipv4Addr, original: &PacketInfo) -> Option<BytesMut> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (original.src, original.dst) else { return None };
    let quoted = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::from(original.proto.number()),
        payload_len: 8,
        hop_limit: 64,
    };
    let mut data = [0u8; 8];
    data[..2].copy_from_slice(&original.src_port.to_be_bytes());
    data[2..4].copy_from_slice(&original.dst_port.to_be_bytes());
    let icmp =
        Icmpv4Repr::DstUnreachable { reason: Icmpv4DstUnreachable::HostUnreachable, header: quoted, data: &data };
    let ip = Ipv4Repr {
        src_addr: ours,
        dst_addr: src,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let mut out = BytesMut::zeroed(ip.buffer_len() + ip.payload_len);
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]), &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut out[ip.buffer_len()..]), &caps);
    Some(out)
}

/// The TCP fields of a segment without payload or options (a SYN, ACK, RST, FIN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment {
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    pub control: TcpControl,
    pub seq: u32,
    pub ack: Option<u32>,
}

impl TcpSegment {
    /// A SYN with sequence number 1000.
    pub fn syn(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16) -> Self {
        Self { src, src_port, dst, dst_port, control: TcpControl::Syn, seq: 1000, ack: None }
    }

    /// The IPv4 packet carrying this segment.
    pub fn to_packet(&self) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: self.src_port,
            dst_port: self.dst_port,
            control: self.control,
            seq_number: TcpSeqNumber(self.seq as i32),
            ack_number: self.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: 64240,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: self.src,
            dst_addr: self.dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.header_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; ip.buffer_len() + tcp.header_len()];
        let caps = ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(&mut buf[ip.buffer_len()..]),
            &IpAddress::Ipv4(self.src),
            &IpAddress::Ipv4(self.dst),
            &caps,
        );
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::packet::{IcmpKind, Proto};

    #[test]
    fn host_unreachable_quotes_the_original_and_checks_out() {
        let syn = TcpSegment::syn(Ipv4Addr::new(100, 64, 0, 1), 40000, Ipv4Addr::new(100, 64, 9, 9), 80).to_packet();
        let original = PacketInfo::parse(&syn).unwrap_or_else(|e| panic!("{e}"));
        let reply = icmp_v4_host_unreachable(Ipv4Addr::new(100, 64, 0, 1), &original)
            .unwrap_or_else(|| panic!("IPv4 gets an answer"));
        let info = PacketInfo::parse(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((info.proto, info.icmp), (Proto::Icmp, Some(IcmpKind::Error)));
        assert_eq!(info.dst, original.src);
        let ip = Ipv4Packet::new_checked(&reply[..]).unwrap_or_else(|e| panic!("{e}"));
        assert!(ip.verify_checksum());
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap_or_else(|e| panic!("{e}"));
        assert!(icmp.verify_checksum());
        assert_eq!(&icmp.data()[12..20], &syn[12..20], "the original's addresses");
        assert_eq!(&icmp.data()[20..24], &syn[20..24], "the original's ports");
        let v6 = PacketInfo { src: "fd7a::1".parse().unwrap_or_else(|e| panic!("{e}")), ..original };
        assert_eq!(icmp_v4_host_unreachable(Ipv4Addr::new(100, 64, 0, 1), &v6), None);
    }
}
