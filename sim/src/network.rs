//! The simulated underlay: which link joins each ordered pair of nodes, and which paths a
//! partition has cut (who has which address is [`crate::addresses`]'s plan).
//!
//! Links are a dense matrix of [`LinkDirection`]s (`[from][to]`), created with the default
//! link configuration as nodes are added; partitions are a flag on a direction, so a
//! symmetric partition blocks both directions and a one-way partition blocks one.

use crate::ids::NodeId;
use crate::link::{LinkConfig, LinkDirection};

// The address plan, also published here (`mesh_sim::network::mesh_addr`), where it was first.
pub use crate::addresses::{mesh_addr, node_at_mesh, node_at_underlay, underlay_addr, MAX_NODES, UNDERLAY_PORT};

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
