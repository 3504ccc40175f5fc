//! The simulated underlay: who has which address, which link joins each ordered pair of
//! nodes, and which paths a partition has cut.
//!
//! Addresses are a function of the node's index, so looking a node up by address is
//! arithmetic, not a map lookup, on the per-datagram path: node `i` has underlay address
//! `10.0.x.y:51820` and mesh address `100.64.x.y`, where `x.y` is `i + 1` in base 256.
//!
//! Links are a dense matrix of [`LinkDirection`]s (`[from][to]`), created with the default
//! link configuration as nodes are added; partitions are a flag on a direction, so a
//! symmetric partition blocks both directions and a one-way partition blocks one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::link::{LinkConfig, LinkDirection};
use crate::node::NodeId;

/// UDP port every node's WireGuard listens on.
pub const UNDERLAY_PORT: u16 = 51820;

/// The most nodes a world can hold (two address octets, zero excluded).
pub const MAX_NODES: usize = 65_535;

fn host_octets(node: NodeId) -> [u8; 2] {
    // Callers never hold an index >= MAX_NODES (World::add_node refuses), so this fits.
    let n = u16::try_from(node.0 + 1).unwrap_or(u16::MAX);
    n.to_be_bytes()
}

fn node_from_octets(hi: u8, lo: u8) -> Option<NodeId> {
    let n = usize::from(u16::from_be_bytes([hi, lo]));
    n.checked_sub(1).map(NodeId)
}

/// The underlay UDP address of `node` (`10.0.x.y:51820`).
pub fn underlay_addr(node: NodeId) -> SocketAddr {
    let [hi, lo] = host_octets(node);
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, hi, lo)), UNDERLAY_PORT)
}

/// The mesh (tunnel) address of `node` (`100.64.x.y`).
pub fn mesh_addr(node: NodeId) -> Ipv4Addr {
    let [hi, lo] = host_octets(node);
    Ipv4Addr::new(100, 64, hi, lo)
}

/// The node whose underlay address is `addr`, if the address has the simulator's shape
/// (whether such a node exists is checked by [`Network::contains`]).
pub fn node_at_underlay(addr: SocketAddr) -> Option<NodeId> {
    match addr {
        SocketAddr::V4(v4) if v4.port() == UNDERLAY_PORT => {
            let [a, b, hi, lo] = v4.ip().octets();
            if (a, b) == (10, 0) {
                node_from_octets(hi, lo)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The node whose mesh address is `addr`, if the address has the simulator's shape.
pub fn node_at_mesh(addr: Ipv4Addr) -> Option<NodeId> {
    let [a, b, hi, lo] = addr.octets();
    if (a, b) == (100, 64) {
        node_from_octets(hi, lo)
    } else {
        None
    }
}

/// Links and partitions between the nodes of a world.
#[derive(Debug)]
pub struct Network {
    default_link: LinkConfig,
    /// `links[from][to]`; the diagonal exists but is never used.
    links: Vec<Vec<LinkDirection>>,
}

impl Network {
    /// A network with no nodes; links to nodes added later get `default_link`.
    pub fn new(default_link: LinkConfig) -> Self {
        Self { default_link, links: Vec::new() }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Whether `node` exists.
    pub fn contains(&self, node: NodeId) -> bool {
        node.0 < self.links.len()
    }

    /// The configuration given to links of nodes added from now on.
    pub fn set_default_link(&mut self, config: LinkConfig) {
        self.default_link = config;
    }

    /// Add a node, linked to every existing node (both directions) with the default link.
    pub(crate) fn add_node(&mut self) -> NodeId {
        let id = NodeId(self.links.len());
        for row in &mut self.links {
            row.push(LinkDirection::new(self.default_link.clone()));
        }
        self.links.push(vec![LinkDirection::new(self.default_link.clone()); id.0 + 1]);
        id
    }

    /// The direction `from -> to`.
    ///
    /// # Panics
    /// If either node does not exist (like slice indexing).
    pub fn direction(&self, from: NodeId, to: NodeId) -> &LinkDirection {
        &self.links[from.0][to.0]
    }

    /// The direction `from -> to`, mutably.
    ///
    /// # Panics
    /// If either node does not exist.
    pub fn direction_mut(&mut self, from: NodeId, to: NodeId) -> &mut LinkDirection {
        &mut self.links[from.0][to.0]
    }

    /// Give both directions between `a` and `b` this configuration (state such as the
    /// transmitter queue and partitions is kept).
    pub fn set_link(&mut self, a: NodeId, b: NodeId, config: LinkConfig) {
        self.direction_mut(a, b).config = config.clone();
        self.direction_mut(b, a).config = config;
    }

    /// Configure only the direction `from -> to`.
    pub fn set_link_one_way(&mut self, from: NodeId, to: NodeId, config: LinkConfig) {
        self.direction_mut(from, to).config = config;
    }

    /// Configure every direction between existing nodes, and make it the default.
    pub fn set_all_links(&mut self, config: LinkConfig) {
        for row in &mut self.links {
            for dir in row {
                dir.config = config.clone();
            }
        }
        self.default_link = config;
    }

    /// Cut both directions between `a` and `b`.
    pub fn partition(&mut self, a: NodeId, b: NodeId) {
        self.direction_mut(a, b).blocked = true;
        self.direction_mut(b, a).blocked = true;
    }

    /// Cut only `from -> to` (`to` can still reach `from`).
    pub fn partition_one_way(&mut self, from: NodeId, to: NodeId) {
        self.direction_mut(from, to).blocked = true;
    }

    /// Cut `node` off from every other node, both ways.
    pub fn isolate(&mut self, node: NodeId) {
        for other in 0..self.len() {
            if other != node.0 {
                self.partition(node, NodeId(other));
            }
        }
    }

    /// Restore both directions between `a` and `b`.
    pub fn heal(&mut self, a: NodeId, b: NodeId) {
        self.direction_mut(a, b).blocked = false;
        self.direction_mut(b, a).blocked = false;
    }

    /// Restore only `from -> to`.
    pub fn heal_one_way(&mut self, from: NodeId, to: NodeId) {
        self.direction_mut(from, to).blocked = false;
    }

    /// Remove every partition.
    pub fn heal_all(&mut self) {
        for row in &mut self.links {
            for dir in row {
                dir.blocked = false;
            }
        }
    }

    /// Whether a partition cuts `from -> to`.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.direction(from, to).blocked
    }

    /// Number of blocked directions.
    pub fn blocked_directions(&self) -> usize {
        self.links.iter().flatten().filter(|d| d.blocked).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for i in [0usize, 1, 254, 255, 256, 1000, MAX_NODES - 1] {
            let node = NodeId(i);
            assert_eq!(node_at_underlay(underlay_addr(node)), Some(node));
            assert_eq!(node_at_mesh(mesh_addr(node)), Some(node));
        }
        assert_eq!(underlay_addr(NodeId(0)).to_string(), "10.0.0.1:51820");
        assert_eq!(mesh_addr(NodeId(256)).to_string(), "100.64.1.1");
        assert_eq!(node_at_mesh(Ipv4Addr::new(100, 64, 0, 0)), None);
        assert_eq!(node_at_underlay("10.0.0.1:1".parse().unwrap_or(underlay_addr(NodeId(9)))), None);
    }

    #[test]
    fn partitions_are_directional_and_heal() {
        let mut net = Network::new(LinkConfig::default());
        let [a, b, c] = [net.add_node(), net.add_node(), net.add_node()];
        net.partition_one_way(a, b);
        assert!(net.is_blocked(a, b) && !net.is_blocked(b, a));
        net.partition(b, c);
        assert!(net.is_blocked(b, c) && net.is_blocked(c, b));
        net.heal(c, b);
        assert!(!net.is_blocked(b, c) && !net.is_blocked(c, b));
        net.isolate(c);
        assert_eq!(net.blocked_directions(), 5);
        net.heal_all();
        assert_eq!(net.blocked_directions(), 0);
    }
}
