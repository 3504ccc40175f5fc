//! The packet filter: which new inbound flows a node accepts.
//!
//! A [`FilterRule`] is what the coordination server compiles from the policy's `acls`:
//! sources, destinations with port ranges, protocols. The node keeps the rules whose
//! destinations include it, compiled into masks so that matching is integer arithmetic.
//! Default deny: a packet no rule allows is dropped unless connection tracking knows it as
//! part of a flow (see [`super::flows`]).

use std::sync::Arc;

use super::packet::{IcmpKind, PacketInfo, Proto};
use crate::wireguard::allowed_ips::{addr_bits, mask};
use crate::wireguard::IpPrefix;

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Every port (`*`).
    pub const ALL: PortRange = PortRange { first: 0, last: u16::MAX };

    pub const fn single(port: u16) -> Self {
        Self { first: port, last: port }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// One rule: traffic from any of `srcs` to any of `dsts` over any of `protos` is allowed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilterRule {
    /// Shared: the coordination server gives one rule's sources to every node it reaches.
    pub srcs: Arc<[IpPrefix]>,
    pub dsts: Vec<(IpPrefix, PortRange)>,
    /// Empty means TCP, UDP and ICMP (the policy format's default).
    pub protos: Vec<Proto>,
}

/// A prefix as (family, network bits, mask), IPv4 in the top 32 bits.
#[derive(Clone, Copy, Debug)]
struct Mask {
    v4: bool,
    net: u128,
    mask: u128,
}

impl Mask {
    fn of(prefix: &IpPrefix) -> Self {
        let mask = mask(prefix.len());
        Self { v4: prefix.addr().is_ipv4(), net: addr_bits(prefix.addr()) & mask, mask }
    }

    fn contains(&self, v4: bool, addr: u128) -> bool {
        self.v4 == v4 && addr & self.mask == self.net
    }
}

const PROTO_TCP: u8 = 1;
const PROTO_UDP: u8 = 2;
const PROTO_ICMP: u8 = 4;

#[derive(Clone, Debug)]
struct CompiledRule {
    srcs: Vec<Mask>,
    dsts: Vec<(Mask, PortRange)>,
    /// Bit set of PROTO_*; `others` lists other protocol numbers named explicitly.
    protos: u8,
    others: Vec<u8>,
}

impl CompiledRule {
    /// Whether some destination contains `dst` (and, when given, `port`).
    fn reaches(&self, v4: bool, dst: u128, port: Option<u16>) -> bool {
        self.dsts.iter().any(|(m, ports)| m.contains(v4, dst) && port.is_none_or(|p| ports.contains(p)))
    }
}

/// The compiled rule set of one node. Replaced as a whole when a new one arrives.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    rules: Vec<FilterRule>,
    compiled: Vec<CompiledRule>,
}

impl Filter {
    /// A filter allowing what any of `rules` allows.
    pub fn new(rules: Vec<FilterRule>) -> Self {
        let compiled = rules
            .iter()
            .map(|r| {
                let (mut protos, mut others) = (0u8, Vec::new());
                if r.protos.is_empty() {
                    protos = PROTO_TCP | PROTO_UDP | PROTO_ICMP;
                }
                for p in &r.protos {
                    match p {
                        Proto::Tcp => protos |= PROTO_TCP,
                        Proto::Udp => protos |= PROTO_UDP,
                        Proto::Icmp => protos |= PROTO_ICMP,
                        Proto::Other(n) => others.push(*n),
                    }
                }
                CompiledRule {
                    srcs: r.srcs.iter().map(Mask::of).collect(),
                    dsts: r.dsts.iter().map(|(p, ports)| (Mask::of(p), *ports)).collect(),
                    protos,
                    others,
                }
            })
            .collect();
        Self { rules, compiled }
    }

    /// Allows nothing (the state before the first policy arrives).
    pub fn deny_all() -> Self {
        Self::default()
    }

    pub fn rules(&self) -> &[FilterRule] {
        &self.rules
    }

    /// Whether the rules allow this inbound packet on its own (without flow state).
    ///
    /// ICMP echo requests are allowed whenever some rule opens any port from the source to
    /// the destination, so `ping` works wherever a connection would.
    pub fn allows(&self, info: &PacketInfo) -> bool {
        let v4 = info.src.is_ipv4();
        let (src, dst) = (addr_bits(info.src), addr_bits(info.dst));
        let echo = matches!(info.icmp, Some(IcmpKind::EchoRequest { .. }));
        self.compiled.iter().any(|rule| {
            rule.srcs.iter().any(|m| m.contains(v4, src))
                && match info.proto {
                    Proto::Icmp if echo => rule.reaches(v4, dst, None),
                    Proto::Tcp => rule.protos & PROTO_TCP != 0 && rule.reaches(v4, dst, Some(info.dst_port)),
                    Proto::Udp => rule.protos & PROTO_UDP != 0 && rule.reaches(v4, dst, Some(info.dst_port)),
                    Proto::Icmp => rule.protos & PROTO_ICMP != 0 && rule.reaches(v4, dst, None),
                    Proto::Other(n) => rule.others.contains(&n) && rule.reaches(v4, dst, None),
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::ip::packet::TcpFlags;
    use proptest::prelude::*;

    /// The rules read literally, the way the policy describes them.
    fn reference(rules: &[FilterRule], info: &PacketInfo) -> bool {
        let echo = matches!(info.icmp, Some(IcmpKind::EchoRequest { .. }));
        rules.iter().any(|r| {
            let protos: Vec<Proto> =
                if r.protos.is_empty() { vec![Proto::Tcp, Proto::Udp, Proto::Icmp] } else { r.protos.clone() };
            r.srcs.iter().any(|s| s.contains(info.src))
                && if echo {
                    r.dsts.iter().any(|(d, _)| d.contains(info.dst))
                } else {
                    protos.contains(&info.proto)
                        && r.dsts.iter().any(|(d, ports)| {
                            d.contains(info.dst)
                                && (!matches!(info.proto, Proto::Tcp | Proto::Udp) || ports.contains(info.dst_port))
                        })
                }
        })
    }

    fn addr() -> impl Strategy<Value = IpAddr> {
        // A small address space so that random prefixes and packets meet often.
        prop_oneof![
            (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::from([100, 64, a, b])),
            (0u16..4).prop_map(|a| IpAddr::from([0xfd7a, 0, 0, 0, 0, 0, 0, a])),
        ]
    }

    fn prefix() -> impl Strategy<Value = IpPrefix> {
        (addr(), 0u8..=130).prop_map(|(a, len)| {
            let max = if a.is_ipv4() { 32 } else { 128 };
            IpPrefix::new(a, len.min(max)).unwrap_or_else(|e| panic!("{e}"))
        })
    }

    fn proto() -> impl Strategy<Value = Proto> {
        prop_oneof![Just(Proto::Tcp), Just(Proto::Udp), Just(Proto::Icmp), Just(Proto::Other(47))]
    }

    fn rule() -> impl Strategy<Value = FilterRule> {
        (
            proptest::collection::vec(prefix(), 0..3),
            proptest::collection::vec((prefix(), 0u16..30, 0u16..30), 0..3),
            proptest::collection::vec(proto(), 0..3),
        )
            .prop_map(|(srcs, dsts, protos)| FilterRule {
                srcs: srcs.into(),
                dsts: dsts.into_iter().map(|(p, a, b)| (p, PortRange { first: a.min(b), last: a.max(b) })).collect(),
                protos,
            })
    }

    fn packet() -> impl Strategy<Value = PacketInfo> {
        (addr(), addr(), proto(), 0u16..30, 0u8..3).prop_map(|(src, dst, proto, port, icmp)| PacketInfo {
            src,
            dst: if dst.is_ipv4() == src.is_ipv4() { dst } else { src },
            proto,
            src_port: 40000,
            dst_port: port,
            tcp: TcpFlags::default(),
            icmp: (proto == Proto::Icmp).then_some(match icmp {
                0 => IcmpKind::EchoRequest { ident: port },
                1 => IcmpKind::EchoReply { ident: port },
                _ => IcmpKind::Error,
            }),
            total_len: 40,
        })
    }

    proptest! {
        #[test]
        fn compiled_filter_matches_the_literal_reading(
            rules in proptest::collection::vec(rule(), 0..8),
            packets in proptest::collection::vec(packet(), 1..40),
        ) {
            let filter = Filter::new(rules.clone());
            for p in &packets {
                prop_assert_eq!(filter.allows(p), reference(&rules, p), "{:?}", p);
            }
        }
    }

    #[test]
    fn deny_all_denies() {
        let info = PacketInfo {
            src: IpAddr::from([100, 64, 0, 1]),
            dst: IpAddr::from([100, 64, 0, 2]),
            proto: Proto::Tcp,
            src_port: 1,
            dst_port: 22,
            tcp: TcpFlags { syn: true, ..TcpFlags::default() },
            icmp: None,
            total_len: 40,
        };
        assert!(!Filter::deny_all().allows(&info));
        let all = Filter::new(vec![FilterRule {
            srcs: vec!["0.0.0.0/0".parse().unwrap_or_else(|e| panic!("{e}"))].into(),
            dsts: vec![("100.64.0.2/32".parse().unwrap_or_else(|e| panic!("{e}")), PortRange::single(22))],
            protos: vec![],
        }]);
        assert!(all.allows(&info));
        assert!(!all.allows(&PacketInfo { dst_port: 23, ..info }));
    }
}
