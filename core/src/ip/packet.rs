//! What the filter and the router need to know about an IP packet, read with smoltcp's
//! checked wire types: addresses, protocol, ports, TCP flags, ICMP kind, declared length.
//!
//! Fragments and IPv6 extension headers are refused: the filter cannot see the ports of a
//! non-first fragment, and the mesh MTU makes fragmentation unnecessary.

use std::net::IpAddr;

use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};
use thiserror::Error;

/// Transport protocol of a packet, as the filter distinguishes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

impl PacketInfo {
    /// Parse an IPv4 or IPv6 packet.
    pub fn parse(packet: &[u8]) -> Result<Self, ParseError> {
        match packet.first().ok_or(ParseError::Empty)? >> 4 {
            4 => Self::parse_v4(packet),
            6 => Self::parse_v6(packet),
            v => Err(ParseError::Version(v)),
        }
    }

    fn parse_v4(packet: &[u8]) -> Result<Self, ParseError> {
        let ip = Ipv4Packet::new_checked(packet).map_err(|_| ParseError::IpHeader)?;
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Err(ParseError::Fragment);
        }
        let total_len = usize::from(ip.total_len());
        let payload = &packet[usize::from(ip.header_len())..total_len];
        let mut info = Self::addresses(ip.src_addr().into(), ip.dst_addr().into(), total_len);
        match ip.next_header() {
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
        Ok(info)
    }

    fn parse_v6(packet: &[u8]) -> Result<Self, ParseError> {
        let ip = Ipv6Packet::new_checked(packet).map_err(|_| ParseError::IpHeader)?;
        let total_len = ip.total_len();
        let payload = &packet[40..total_len];
        let mut info = Self::addresses(ip.src_addr().into(), ip.dst_addr().into(), total_len);
        match ip.next_header() {
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
        Ok(info)
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
    use super::*;

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
