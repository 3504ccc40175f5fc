//! Allowed IPs: a longest-prefix-match table from IP prefixes to peers.
//!
//! The same table routes outbound packets (destination -> peer) and authenticates inbound
//! ones (the inner source must map back to the peer whose key decrypted the packet). A
//! prefix belongs to exactly one peer; inserting it for another peer moves it.
//!
//! Per address family, a hash map per (prefix length, network) probed longest length first;
//! a lookup allocates nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use rustc_hash::FxBuildHasher;
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
        let masked = bits & mask(len);
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

    /// `0.0.0.0/0` or `::/0`.
    pub fn default_route(v6: bool) -> Self {
        let addr = if v6 { IpAddr::from([0u16; 8]) } else { IpAddr::from([0u8; 4]) };
        Self { addr, len: 0 }
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
        addr.is_ipv4() == self.addr.is_ipv4() && (addr_bits(addr) ^ addr_bits(self.addr)) & mask(self.len) == 0
    }
}

/// On the wire as `(address, length)`; a length too long for the family is refused.
impl serde::Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&(self.addr, self.len), s)
    }
}

impl<'de> serde::Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (addr, len): (IpAddr, u8) = serde::Deserialize::deserialize(d)?;
        IpPrefix::new(addr, len).map_err(serde::de::Error::custom)
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

/// The address as the top bits of a u128 (IPv4 in the top 32 bits): how allowed IPs and
/// the packet filter both match prefixes, with [`mask`].
pub(crate) fn addr_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The network mask of a prefix length, as the top bits of a u128.
pub(crate) fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// One address family: the prefixes in a `BTreeMap` (the truth, iterated in order) and the
/// same entries in a hash map keyed by (length, network bits) for lookups. A lookup tries
/// each prefix length present, longest first: with the usual tables (a /32 per peer plus a
/// few routes) that is one or two hash probes, where a bit trie walks up to 32 or 128 nodes.
#[derive(Clone, Debug)]
struct Family<V> {
    entries: BTreeMap<(u8, u128), V>,
    index: HashMap<(u8, u128), V, FxBuildHasher>,
    /// Prefix lengths present, longest first, with how many prefixes have each.
    lengths: Vec<(u8, usize)>,
}

impl<V: Copy + PartialEq> Family<V> {
    fn new() -> Self {
        Self { entries: BTreeMap::new(), index: HashMap::with_hasher(FxBuildHasher), lengths: Vec::new() }
    }

    fn insert(&mut self, bits: u128, len: u8, value: V) -> Option<V> {
        let key = (len, bits & mask(len));
        self.index.insert(key, value);
        let previous = self.entries.insert(key, value);
        if previous.is_none() {
            match self.lengths.iter_mut().find(|(l, _)| *l == len) {
                Some((_, n)) => *n += 1,
                None => {
                    self.lengths.push((len, 1));
                    self.lengths.sort_by_key(|&(len, _)| std::cmp::Reverse(len));
                }
            }
        }
        previous
    }

    fn remove(&mut self, bits: u128, len: u8) -> Option<V> {
        let key = (len, bits & mask(len));
        let previous = self.entries.remove(&key)?;
        self.index.remove(&key);
        if let Some(i) = self.lengths.iter().position(|(l, _)| *l == len) {
            self.lengths[i].1 -= 1;
            if self.lengths[i].1 == 0 {
                self.lengths.remove(i);
            }
        }
        Some(previous)
    }

    fn lookup(&self, bits: u128) -> Option<V> {
        self.lengths.iter().find_map(|&(len, _)| self.index.get(&(len, bits & mask(len))).copied())
    }
}

/// Longest-prefix-match table for both address families.
#[derive(Clone, Debug)]
pub struct AllowedIps<V> {
    v4: Family<V>,
    v6: Family<V>,
}

impl<V: Copy + PartialEq> Default for AllowedIps<V> {
    fn default() -> Self {
        Self { v4: Family::new(), v6: Family::new() }
    }
}

impl<V: Copy + PartialEq> AllowedIps<V> {
    fn family(&self, addr: IpAddr) -> &Family<V> {
        if addr.is_ipv4() {
            &self.v4
        } else {
            &self.v6
        }
    }

    fn family_mut(&mut self, addr: IpAddr) -> &mut Family<V> {
        if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Map `prefix` to `value`, returning the previous owner of exactly this prefix.
    pub fn insert(&mut self, prefix: IpPrefix, value: V) -> Option<V> {
        self.family_mut(prefix.addr).insert(addr_bits(prefix.addr), prefix.len, value)
    }

    /// Remove exactly this prefix.
    pub fn remove(&mut self, prefix: IpPrefix) -> Option<V> {
        self.family_mut(prefix.addr).remove(addr_bits(prefix.addr), prefix.len)
    }

    /// Remove every prefix that maps to `value`, returning how many.
    pub fn remove_value(&mut self, value: V) -> usize {
        let mut removed = 0;
        for family in [&mut self.v4, &mut self.v6] {
            let keys: Vec<(u8, u128)> = family.entries.iter().filter(|(_, v)| **v == value).map(|(k, _)| *k).collect();
            for (len, bits) in keys {
                family.remove(bits, len);
                removed += 1;
            }
        }
        removed
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<V> {
        self.family(addr).lookup(addr_bits(addr))
    }

    /// Every prefix with its value, IPv4 first, by length then address.
    pub fn entries(&self) -> Vec<(IpPrefix, V)> {
        let mut out = Vec::new();
        for (v4, family) in [(true, &self.v4), (false, &self.v6)] {
            for (&(len, bits), &v) in &family.entries {
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
