//! The address plan: where node `i` lives on the underlay and in the mesh, and the ports
//! the simulator uses.
//!
//! Addresses are a function of the node's index, so looking a node up by address is
//! arithmetic, not a map lookup, on the per-datagram path: node `i` has underlay address
//! `10.0.x.y:51820` and mesh address `100.64.x.y`, where `x.y` is `i + 1` in base 256.
//! Kept apart from the [`crate::network`] (links and partitions) because nodes, errors and
//! applications need the plan without needing the links.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mesh_core::wireguard::IpPrefix;

use crate::ids::NodeId;

/// UDP port every node's WireGuard listens on.
pub const UNDERLAY_PORT: u16 = 51820;

/// The TCP port the sink application serves on nodes with
/// [`crate::NodeConfig::serve_sink`].
pub const SINK_PORT: u16 = 5001;

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

/// The mesh's IPv4 range, 100.64.0.0/10.
pub fn mesh_range() -> IpPrefix {
    match IpPrefix::new(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)), 10) {
        Ok(prefix) => prefix,
        // A constant, valid prefix.
        Err(_) => IpPrefix::host(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0))),
    }
}

/// The node whose underlay address is `addr`, if the address has the simulator's shape
/// (whether such a node exists is checked by [`crate::Network::contains`]).
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

/// The mesh node a socket address belongs to, if it has the simulator's shape.
pub(crate) fn node_at_mesh_socket(addr: SocketAddr) -> Option<NodeId> {
    match addr.ip() {
        IpAddr::V4(v4) => node_at_mesh(v4),
        IpAddr::V6(_) => None,
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
}
