//! Allowed IPs: a longest-prefix-match table from IP prefixes to peers.
//!
//! The same table routes outbound packets (destination -> peer) and authenticates inbound
//! ones (the inner source must map back to the peer whose key decrypted the packet). A
//! prefix belongs to exactly one peer; inserting it for another peer moves it.
//!
//! One binary trie per address family, nodes in a `Vec` arena: a lookup is at most 32 or
//! 128 steps of array indexing, with no allocation.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use thiserror::Error;

/// An IP prefix such as `10.0.0.0/8` or `fd7a::/48`. Host bits are cleared on creation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// A malformed prefix.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PrefixError {
    #[error("prefix length {0} too long for the address family")]
    TooLong(u8),
    #[error("cannot parse prefix {0:?}")]
    Parse(String),
}

impl IpPrefix {
    /// `addr/len`, with host bits cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::TooLong(len));
        }
        let bits = addr_bits(addr);
        let masked = if len == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(len))) };
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::from(((masked >> 96) as u32).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(masked.to_be_bytes()),
        };
        Ok(Self { addr, len })
    }

    /// A single host (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self { addr, len: if addr.is_ipv4() { 32 } else { 128 } }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is the zero-length prefix of its family.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `addr` lies in this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
        addr.is_ipv4() == self.addr.is_ipv4() && (addr_bits(addr) ^ addr_bits(self.addr)) & mask == 0
    }
}

impl fmt::Debug for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PrefixError::Parse(s.to_string());
        match s.split_once('/') {
            Some((a, l)) => IpPrefix::new(a.parse().map_err(|_| bad())?, l.parse().map_err(|_| bad())?),
            None => Ok(IpPrefix::host(s.parse().map_err(|_| bad())?)),
        }
    }
}

/// The address as the top bits of a u128 (IPv4 in the top 32 bits).
fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

const NONE: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Node<V> {
    children: [u32; 2],
    value: Option<V>,
}

#[derive(Clone, Debug)]
struct Trie<V> {
    nodes: Vec<Node<V>>,
}

impl<V: Copy + PartialEq> Trie<V> {
    fn new() -> Self {
        Self { nodes: vec![Node { children: [NONE; 2], value: None }] }
    }

    fn insert(&mut self, bits: u128, len: u8, value: V) -> Option<V> {
        let mut at = 0usize;
        for depth in 0..u32::from(len) {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            let next = self.nodes[at].children[bit];
            at = if next == NONE {
                self.nodes.push(Node { children: [NONE; 2], value: None });
                let new = (self.nodes.len() - 1) as u32;
                self.nodes[at].children[bit] = new;
                new as usize
            } else {
                next as usize
            };
        }
        self.nodes[at].value.replace(value)
    }

    fn find_node(&self, bits: u128, len: u8) -> Option<usize> {
        let mut at = 0usize;
        for depth in 0..u32::from(len) {
            let next = self.nodes[at].children[((bits >> (127 - depth)) & 1) as usize];
            if next == NONE {
                return None;
            }
            at = next as usize;
        }
        Some(at)
    }

    fn remove(&mut self, bits: u128, len: u8) -> Option<V> {
        let at = self.find_node(bits, len)?;
        self.nodes[at].value.take()
    }

    fn lookup(&self, bits: u128, max_depth: u32) -> Option<V> {
        let mut at = 0usize;
        let mut best = self.nodes[0].value;
        for depth in 0..max_depth {
            let next = self.nodes[at].children[((bits >> (127 - depth)) & 1) as usize];
            if next == NONE {
                break;
            }
            at = next as usize;
            if let Some(v) = self.nodes[at].value {
                best = Some(v);
            }
        }
        best
    }

    /// All (bits, len, value) in trie order (deterministic).
    fn entries(&self, out: &mut Vec<(u128, u8, V)>) {
        let mut stack = vec![(0usize, 0u128, 0u8)];
        while let Some((at, bits, len)) = stack.pop() {
            if let Some(v) = self.nodes[at].value {
                out.push((bits, len, v));
            }
            for bit in [1usize, 0] {
                let child = self.nodes[at].children[bit];
                if child != NONE {
                    let b = bits | ((bit as u128) << (127 - u32::from(len)));
                    stack.push((child as usize, b, len + 1));
                }
            }
        }
    }
}

/// Longest-prefix-match table for both address families.
#[derive(Clone, Debug)]
pub struct AllowedIps<V> {
    v4: Trie<V>,
    v6: Trie<V>,
}

impl<V: Copy + PartialEq> Default for AllowedIps<V> {
    fn default() -> Self {
        Self { v4: Trie::new(), v6: Trie::new() }
    }
}

impl<V: Copy + PartialEq> AllowedIps<V> {
    fn trie(&self, addr: IpAddr) -> &Trie<V> {
        if addr.is_ipv4() {
            &self.v4
        } else {
            &self.v6
        }
    }

    fn trie_mut(&mut self, addr: IpAddr) -> &mut Trie<V> {
        if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Map `prefix` to `value`, returning the previous owner of exactly this prefix.
    pub fn insert(&mut self, prefix: IpPrefix, value: V) -> Option<V> {
        self.trie_mut(prefix.addr).insert(addr_bits(prefix.addr), prefix.len, value)
    }

    /// Remove exactly this prefix.
    pub fn remove(&mut self, prefix: IpPrefix) -> Option<V> {
        self.trie_mut(prefix.addr).remove(addr_bits(prefix.addr), prefix.len)
    }

    /// Remove every prefix that maps to `value`, returning how many.
    pub fn remove_value(&mut self, value: V) -> usize {
        let mut removed = 0;
        for trie in [&mut self.v4, &mut self.v6] {
            for node in &mut trie.nodes {
                if node.value == Some(value) {
                    node.value = None;
                    removed += 1;
                }
            }
        }
        removed
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<V> {
        let depth = if addr.is_ipv4() { 32 } else { 128 };
        self.trie(addr).lookup(addr_bits(addr), depth)
    }

    /// Every prefix with its value, IPv4 first, in address order.
    pub fn entries(&self) -> Vec<(IpPrefix, V)> {
        let mut out = Vec::new();
        for (v4, trie) in [(true, &self.v4), (false, &self.v6)] {
            let mut raw = Vec::new();
            trie.entries(&mut raw);
            for (bits, len, v) in raw {
                let addr = if v4 {
                    IpAddr::from(((bits >> 96) as u32).to_be_bytes())
                } else {
                    IpAddr::from(bits.to_be_bytes())
                };
                out.push((IpPrefix { addr, len }, v));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::default();
        t.insert(p("10.0.0.0/8"), 1);
        t.insert(p("10.1.0.0/16"), 2);
        t.insert(p("10.1.2.3/32"), 3);
        t.insert(p("fd7a:115c:a1e0::/48"), 4);
        t.insert(p("::/0"), 5);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.lookup(ip("10.9.9.9")), Some(1));
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(2));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(3));
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
        assert_eq!(t.lookup(ip("fd7a:115c:a1e0::1")), Some(4));
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(5));
        assert_eq!(t.remove_value(2), 1);
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(1));
        assert_eq!(p("10.1.2.3/8"), p("10.0.0.0/8"));
        assert_eq!(t.entries().len(), 4);
    }

    proptest! {
        #[test]
        fn matches_linear_scan(
            prefixes in proptest::collection::vec((any::<u32>(), 0u8..=32, 0u8..8), 0..40),
            probes in proptest::collection::vec(any::<u32>(), 1..50),
        ) {
            let mut t = AllowedIps::default();
            let mut reference: Vec<(IpPrefix, u8)> = Vec::new();
            for (a, len, v) in prefixes {
                let prefix = IpPrefix::new(IpAddr::from(a.to_be_bytes()), len).unwrap_or_else(|e| panic!("{e}"));
                t.insert(prefix, v);
                reference.retain(|(q, _)| *q != prefix);
                reference.push((prefix, v));
            }
            for a in probes {
                let addr = IpAddr::from(a.to_be_bytes());
                let expected = reference.iter().filter(|(q, _)| q.contains(addr)).max_by_key(|(q, _)| q.len()).map(|(_, v)| *v);
                prop_assert_eq!(t.lookup(addr), expected);
            }
        }
    }
}
