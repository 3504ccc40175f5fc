//! Lookups over the registered nodes that a registration needs (machine key, node key,
//! name, addresses), so that a join costs the same at 10 nodes and at 10k.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::NodeRecord;
use crate::policy::NodeId;
use crate::wireguard::PublicKey;

/// The CGNAT range nodes get IPv4 addresses from, and the ULA /48 of IPv6 addresses: the
/// node at offset `o` gets `100.64.0.0 + o` and `fd7a:115c:a1e0:: + o`.
const V4_BASE: u32 = 0x6440_0000; // 100.64.0.0/10
const V4_SIZE: u32 = 1 << 22;
const V6_BASE: u128 = 0xfd7a_115c_a1e0_0000_0000_0000_0000_0000;

#[derive(Debug, Default)]
pub(crate) struct NodeIndex {
    machine_keys: BTreeMap<PublicKey, NodeId>,
    node_keys: BTreeMap<PublicKey, NodeId>,
    names: BTreeMap<String, NodeId>,
    addresses: BTreeMap<IpAddr, NodeId>,
    /// Where the search for a free address starts (just after the last one handed out).
    cursor: u32,
}

impl NodeIndex {
    pub(super) fn add(&mut self, n: &NodeRecord) {
        self.machine_keys.insert(n.machine_key, n.id);
        self.node_keys.insert(n.node_key, n.id);
        self.names.insert(n.name.clone(), n.id);
        for a in &n.addresses {
            self.addresses.insert(*a, n.id);
        }
    }

    pub(super) fn remove(&mut self, n: &NodeRecord) {
        remove_if(&mut self.machine_keys, &n.machine_key, n.id);
        remove_if(&mut self.node_keys, &n.node_key, n.id);
        remove_if(&mut self.names, &n.name, n.id);
        for a in &n.addresses {
            remove_if(&mut self.addresses, a, n.id);
        }
    }

    pub(super) fn by_machine_key(&self, key: &PublicKey) -> Option<NodeId> {
        self.machine_keys.get(key).copied()
    }

    pub(super) fn by_node_key(&self, key: &PublicKey) -> Option<NodeId> {
        self.node_keys.get(key).copied()
    }

    pub(super) fn by_name(&self, name: &str) -> Option<NodeId> {
        self.names.get(name).copied()
    }

    /// A free IPv4 and IPv6 pair: never one a node holds.
    pub(super) fn free_addresses(&self) -> Option<(u32, Vec<IpAddr>)> {
        let usable = 1..V4_SIZE - 1;
        let start = self.cursor.clamp(usable.start, usable.end - 1);
        (start..usable.end).chain(usable.start..start).find_map(|offset| {
            let v4 = IpAddr::V4(Ipv4Addr::from(V4_BASE + offset));
            let v6 = IpAddr::V6(Ipv6Addr::from(V6_BASE + u128::from(offset)));
            (!self.addresses.contains_key(&v4) && !self.addresses.contains_key(&v6)).then(|| (offset, vec![v4, v6]))
        })
    }

    /// The search for the next free pair starts after `offset`.
    pub(super) fn handed_out(&mut self, offset: u32) {
        self.cursor = offset.saturating_add(1);
    }
}

fn remove_if<K, Q>(map: &mut BTreeMap<K, NodeId>, key: &Q, id: NodeId)
where
    K: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ?Sized,
{
    if map.get(key) == Some(&id) {
        map.remove(key);
    }
}
