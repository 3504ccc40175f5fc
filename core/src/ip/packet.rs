//! What the filter and the router need to know about an IP packet, read with smoltcp's
//! checked wire types: addresses, protocol, ports, TCP flags, ICMP kind, declared length.
//!
//! [`IpHeader`] is the one reader of the IP header itself: WireGuard's inner-source check,
//! [`PacketInfo`] and the TCP stack's sequence fix-up all go through it, so a packet is
//! well-formed or not in the same way everywhere.
//!
//! Fragments and IPv6 extension headers are refused by [`PacketInfo`]: the filter cannot
//! see the ports of a non-first fragment, and the mesh MTU makes fragmentation
//! unnecessary. [`IpHeader`] only reports them (WireGuard carries whatever the allowed IPs
//! admit; judging the contents is the filter's job).

use std::net::IpAddr;
use std::ops::Range;

use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};
use thiserror::Error;

/// Transport protocol of a packet, as the filter distinguishes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMPv4 or ICMPv6.
    Icmp,
    Other(u8),
}

impl Proto {
    /// The IANA protocol number (ICMP maps to 1; use the address family for ICMPv6).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
            Proto::Other(n) => n,
        }
    }
}

/// The TCP flags that matter to connection tracking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// ICMP messages the filter treats differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    EchoRequest {
        ident: u16,
    },
    EchoReply {
        ident: u16,
    },
    /// Unreachable, time exceeded and the like: about another packet.
    Error,
    Other,
}

/// Parsed headers of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    /// TCP/UDP ports; for ICMP echo both carry the identifier; otherwise 0.
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp: TcpFlags,
    pub icmp: Option<IcmpKind>,
    /// The length the IP header declares (bytes beyond it are padding).
    pub total_len: usize,
}

/// Why a packet was refused before any rule looked at it.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty packet")]
    Empty,
    #[error("IP version {0} is not 4 or 6")]
    Version(u8),
    #[error("malformed or truncated IP header")]
    IpHeader,
    #[error("fragmented packet")]
    Fragment,
    #[error("IPv6 extension header {0}")]
    Extension(u8),
    #[error("malformed or truncated {0:?} header")]
    Transport(Proto),
}

/// The fixed IP header of a packet, checked: the buffer holds the whole header and the
/// length it declares (bytes beyond `total_len` are padding), IPv4's IHL is at least 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4's protocol or IPv6's next header (an extension header is reported as such).
    pub next_header: IpProtocol,
    /// Bytes of header before the payload (IPv4 options included; 40 for IPv6).
    pub header_len: usize,
    /// The length the header declares.
    pub total_len: usize,
    /// An IPv4 fragment (more fragments, or a non-zero offset). IPv6 fragments show up as
    /// the `Ipv6Frag` next header.
    pub fragment: bool,
}

impl IpHeader {
    /// Read the header of an IPv4 or IPv6 packet. Allocation-free and branch-light: it runs
    /// twice per packet on the data path (route or inner-source check, then the filter).
    #[inline(always)]
    pub fn parse(packet: &[u8]) -> Result<Self, ParseError> {
        match packet.first().ok_or(ParseError::Empty)? >> 4 {
            4 => Self::parse_v4(packet),
            6 => Self::parse_v6(packet),
            v => Err(ParseError::Version(v)),
        }
    }

    /// [`Self::parse`] for a packet whose version nibble is 4.
    #[inline(always)]
    fn parse_v4(packet: &[u8]) -> Result<Self, ParseError> {
        let ip = Ipv4Packet::new_checked(packet).map_err(|_| ParseError::IpHeader)?;
        Ok(Self {
            src: ip.src_addr().into(),
            dst: ip.dst_addr().into(),
            next_header: ip.next_header(),
            header_len: usize::from(ip.header_len()),
            total_len: usize::from(ip.total_len()),
            fragment: ip.more_frags() || ip.frag_offset() != 0,
        })
    }

    /// [`Self::parse`] for a packet whose version nibble is 6.
    #[inline(always)]
    fn parse_v6(packet: &[u8]) -> Result<Self, ParseError> {
        let ip = Ipv6Packet::new_checked(packet).map_err(|_| ParseError::IpHeader)?;
        Ok(Self {
            src: ip.src_addr().into(),
            dst: ip.dst_addr().into(),
            next_header: ip.next_header(),
            header_len: ip.header_len(),
            total_len: ip.total_len(),
            fragment: false,
        })
    }

    /// Where the payload lies in the packet (padding excluded).
    pub fn payload(&self) -> Range<usize> {
        self.header_len..self.total_len
    }
}

impl PacketInfo {
    /// Parse an IPv4 or IPv6 packet.
    pub fn parse(packet: &[u8]) -> Result<Self, ParseError> {
        // Dispatched on the version here too, so each family's path is straight-line code
        // (one branch on the version instead of a second one on the address family).
        match packet.first().ok_or(ParseError::Empty)? >> 4 {
            4 => {
                let ip = IpHeader::parse_v4(packet)?;
                let mut info = Self::header(&ip)?;
                info.parse_v4_transport(ip.next_header, &packet[ip.payload()])?;
                Ok(info)
            }
            6 => {
                let ip = IpHeader::parse_v6(packet)?;
                let mut info = Self::header(&ip)?;
                info.parse_v6_transport(ip.next_header, &packet[ip.payload()])?;
                Ok(info)
            }
            v => Err(ParseError::Version(v)),
        }
    }

    /// The fields the IP header gives; fragments refused.
    #[inline(always)]
    fn header(ip: &IpHeader) -> Result<Self, ParseError> {
        if ip.fragment {
            return Err(ParseError::Fragment);
        }
        Ok(Self::addresses(ip.src, ip.dst, ip.total_len))
    }

    #[inline(always)]
    fn parse_v4_transport(&mut self, next_header: IpProtocol, payload: &[u8]) -> Result<(), ParseError> {
        let info = self;
        match next_header {
            IpProtocol::Icmp => {
                info.proto = Proto::Icmp;
                let icmp = Icmpv4Packet::new_checked(payload).map_err(|_| ParseError::Transport(Proto::Icmp))?;
                let kind = match icmp.msg_type() {
                    Icmpv4Message::EchoRequest => IcmpKind::EchoRequest { ident: icmp.echo_ident() },
                    Icmpv4Message::EchoReply => IcmpKind::EchoReply { ident: icmp.echo_ident() },
                    Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded | Icmpv4Message::ParamProblem => {
                        IcmpKind::Error
                    }
                    _ => IcmpKind::Other,
                };
                info.set_icmp(kind);
            }
            other => info.set_transport(other, payload)?,
        }
        Ok(())
    }

    #[inline(always)]
    fn parse_v6_transport(&mut self, next_header: IpProtocol, payload: &[u8]) -> Result<(), ParseError> {
        let info = self;
        match next_header {
            IpProtocol::Icmpv6 => {
                info.proto = Proto::Icmp;
                let icmp = Icmpv6Packet::new_checked(payload).map_err(|_| ParseError::Transport(Proto::Icmp))?;
                let kind = match icmp.msg_type() {
                    Icmpv6Message::EchoRequest => IcmpKind::EchoRequest { ident: icmp.echo_ident() },
                    Icmpv6Message::EchoReply => IcmpKind::EchoReply { ident: icmp.echo_ident() },
                    Icmpv6Message::DstUnreachable
                    | Icmpv6Message::PktTooBig
                    | Icmpv6Message::TimeExceeded
                    | Icmpv6Message::ParamProblem => IcmpKind::Error,
                    _ => IcmpKind::Other,
                };
                info.set_icmp(kind);
            }
            p @ (IpProtocol::HopByHop
            | IpProtocol::Ipv6Route
            | IpProtocol::Ipv6Frag
            | IpProtocol::Ipv6Opts
            // smoltcp decodes 51 as IpSecAh, never as Unknown(51).
            | IpProtocol::IpSecAh
            | IpProtocol::Unknown(135 | 139 | 140)) => return Err(ParseError::Extension(u8::from(p))),
            other => info.set_transport(other, payload)?,
        }
        Ok(())
    }

    /// Addresses and length only; the transport fields are filled in by the parser.
    fn addresses(src: IpAddr, dst: IpAddr, total_len: usize) -> Self {
        Self {
            src,
            dst,
            proto: Proto::Other(0),
            src_port: 0,
            dst_port: 0,
            tcp: TcpFlags::default(),
            icmp: None,
            total_len,
        }
    }

    fn set_icmp(&mut self, kind: IcmpKind) {
        if let IcmpKind::EchoRequest { ident } | IcmpKind::EchoReply { ident } = kind {
            self.src_port = ident;
            self.dst_port = ident;
        }
        self.icmp = Some(kind);
    }

    fn set_transport(&mut self, proto: IpProtocol, payload: &[u8]) -> Result<(), ParseError> {
        match proto {
            IpProtocol::Tcp => {
                self.proto = Proto::Tcp;
                let tcp = TcpPacket::new_checked(payload).map_err(|_| ParseError::Transport(Proto::Tcp))?;
                self.src_port = tcp.src_port();
                self.dst_port = tcp.dst_port();
                self.tcp = TcpFlags { syn: tcp.syn(), ack: tcp.ack(), fin: tcp.fin(), rst: tcp.rst() };
            }
            IpProtocol::Udp => {
                self.proto = Proto::Udp;
                let udp = UdpPacket::new_checked(payload).map_err(|_| ParseError::Transport(Proto::Udp))?;
                self.src_port = udp.src_port();
                self.dst_port = udp.dst_port();
            }
            other => self.proto = Proto::Other(u8::from(other)),
        }
        Ok(())
    }

    /// Whether this TCP segment opens a connection (SYN without ACK).
    pub fn is_tcp_syn(&self) -> bool {
        self.proto == Proto::Tcp && self.tcp.syn && !self.tcp.ack
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// WireGuard's own inner-header reader before [`IpHeader`] replaced it, kept as the
    /// reference: (source, destination, total length).
    fn old_inner_ip(packet: &[u8]) -> Option<(IpAddr, IpAddr, usize)> {
        match packet.first()? >> 4 {
            4 if packet.len() >= 20 => {
                let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
                let ihl = usize::from(packet[0] & 0x0f) * 4;
                if total_len < ihl.max(20) || total_len > packet.len() {
                    return None;
                }
                let src: [u8; 4] = packet[12..16].try_into().ok()?;
                let dst: [u8; 4] = packet[16..20].try_into().ok()?;
                Some((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into(), total_len))
            }
            6 if packet.len() >= 40 => {
                let total_len = 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
                if total_len > packet.len() {
                    return None;
                }
                let src: [u8; 16] = packet[8..24].try_into().ok()?;
                let dst: [u8; 16] = packet[24..40].try_into().ok()?;
                Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into(), total_len))
            }
            _ => None,
        }
    }

    /// The TCP stack's own reader (`tcp::ack_seq`) before [`IpHeader`] replaced it.
    fn old_ip_parts(packet: &[u8]) -> Option<(IpAddr, IpAddr, Range<usize>)> {
        match packet.first()? >> 4 {
            4 => {
                let ip = Ipv4Packet::new_checked(packet).ok()?;
                let (start, end) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
                let tcp = ip.next_header() == IpProtocol::Tcp && start <= end;
                tcp.then(|| (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()), start..end))
            }
            6 => {
                let ip = Ipv6Packet::new_checked(packet).ok()?;
                let start = ip.header_len();
                let end = start + usize::from(ip.payload_len());
                let tcp = ip.next_header() == IpProtocol::Tcp && end <= packet.len();
                tcp.then(|| (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()), start..end))
            }
            _ => None,
        }
    }

    /// Packets near the edge: a real IPv4 or IPv6 header with its length fields, IHL and
    /// protocol drawn at random, then a random tail; and plain random bytes.
    fn edge_packet() -> impl Strategy<Value = Vec<u8>> {
        let v4 = (0u8..16, 0u16..120, any::<[u8; 2]>(), prop_oneof![Just(6u8), Just(17), any::<u8>()], 0usize..100)
            .prop_map(|(ihl, total, frag, proto, tail)| {
                let mut p = vec![0x40 | ihl, 0, (total >> 8) as u8, total as u8, 0, 0, frag[0], frag[1], 64, proto];
                p.extend_from_slice(&[0, 0, 100, 64, 0, 1, 100, 64, 0, 2]);
                p.resize(20 + tail, 0xa5);
                p
            });
        let v6 = (0u16..120, prop_oneof![Just(6u8), Just(44), any::<u8>()], 0usize..100).prop_map(|(len, nh, tail)| {
            let mut p = vec![0x60, 0, 0, 0, (len >> 8) as u8, len as u8, nh, 64];
            p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets().repeat(2));
            p.resize(40 + tail, 0x5a);
            p
        });
        prop_oneof![v4, v6, proptest::collection::vec(any::<u8>(), 0..80)]
    }

    proptest! {
        /// One parser for the three readers: it accepts what WireGuard's and the TCP
        /// stack's readers accepted, with the same fields. Where they differed it is
        /// stricter: the old WireGuard reader let an IPv4 IHL below 5 (a header shorter
        /// than the addresses it claims) through.
        #[test]
        fn one_header_parser_agrees_with_the_readers_it_replaced(packet in edge_packet()) {
            let new = IpHeader::parse(&packet).ok();
            let ihl_below_5 = packet.first().is_some_and(|b| b >> 4 == 4 && b & 0x0f < 5);
            match old_inner_ip(&packet) {
                Some(_) if ihl_below_5 => prop_assert_eq!(new, None),
                old => prop_assert_eq!(new.map(|h| (h.src, h.dst, h.total_len)), old),
            }
            let tcp = new.filter(|h| h.next_header == IpProtocol::Tcp).map(|h| (h.src, h.dst, h.payload()));
            prop_assert_eq!(tcp, old_ip_parts(&packet));
            if let Ok(info) = PacketInfo::parse(&packet) {
                let header = new.unwrap_or_else(|| panic!("PacketInfo parsed what IpHeader refused"));
                prop_assert_eq!((info.src, info.dst, info.total_len), (header.src, header.dst, header.total_len));
            }
        }
    }

    #[test]
    fn a_short_ihl_is_refused_even_when_the_total_length_looks_right() {
        let mut p = v4(17, &[0, 53, 0, 54, 0, 8, 0, 0]);
        p[0] = 0x44;
        assert!(old_inner_ip(&p).is_some(), "the old WireGuard reader took it");
        assert_eq!(IpHeader::parse(&p), Err(ParseError::IpHeader));
    }

    /// IPv4 header (no options) + `transport`, protocol `proto`.
    fn v4(proto: u8, transport: &[u8]) -> Vec<u8> {
        let total = 20 + transport.len();
        let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&[100, 64, 0, 1, 100, 64, 0, 2]);
        p.extend_from_slice(transport);
        p
    }

    fn tcp(flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&22u16.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t
    }

    #[test]
    fn tcp_syn_udp_and_icmp_echo() {
        let syn = PacketInfo::parse(&v4(6, &tcp(0x02))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((syn.proto, syn.src_port, syn.dst_port), (Proto::Tcp, 40000, 22));
        assert!(syn.is_tcp_syn());
        let synack = PacketInfo::parse(&v4(6, &tcp(0x12))).unwrap_or_else(|e| panic!("{e}"));
        assert!(!synack.is_tcp_syn());
        let udp = PacketInfo::parse(&v4(17, &[0, 53, 0, 54, 0, 8, 0, 0])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((udp.proto, udp.src_port, udp.dst_port), (Proto::Udp, 53, 54));
        let echo = PacketInfo::parse(&v4(1, &[8, 0, 0, 0, 0x12, 0x34, 0, 1])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(echo.icmp, Some(IcmpKind::EchoRequest { ident: 0x1234 }));
        let gre = PacketInfo::parse(&v4(47, &[0; 4])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gre.proto, Proto::Other(47));
    }

    #[test]
    fn malformed_truncated_and_fragmented() {
        assert_eq!(PacketInfo::parse(&[]), Err(ParseError::Empty));
        assert_eq!(PacketInfo::parse(&[0x50; 30]), Err(ParseError::Version(5)));
        let good = v4(6, &tcp(0x02));
        for cut in 1..good.len() {
            assert!(PacketInfo::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut frag = good.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(PacketInfo::parse(&frag), Err(ParseError::Fragment));
        let mut bad_ihl = good.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(PacketInfo::parse(&bad_ihl), Err(ParseError::IpHeader));
        let mut bad_offset = good;
        bad_offset[20 + 12] = 0xf0; // TCP data offset past the end
        assert_eq!(PacketInfo::parse(&bad_offset), Err(ParseError::Transport(Proto::Tcp)));
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 44, 64];
        v6.extend_from_slice(&[0; 32]);
        v6.extend_from_slice(&[0; 8]);
        assert_eq!(PacketInfo::parse(&v6), Err(ParseError::Extension(44)));
        // Every IPv6 extension header, AH (51) included, hides the ports behind it.
        for next in [0u8, 43, 44, 51, 60, 135, 139, 140] {
            v6[6] = next;
            assert_eq!(PacketInfo::parse(&v6), Err(ParseError::Extension(next)), "next header {next}");
        }
    }
}
