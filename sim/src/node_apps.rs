//! What runs on one node incarnation: its TCP clients and sinks ([`crate::apps`]) and its
//! SSH connections ([`crate::ssh_apps`]).
//!
//! The applications are not part of the simulated [`crate::Node`] (which is the core node,
//! its netmap, filter and counters): the world keeps one [`NodeApps`] beside each node and
//! lends both to the driver together. A crash takes the node's `NodeApps` away whole, ending
//! every connection on it; a restart starts with an empty one.

use crate::apps::TcpNodeApps;
use crate::ssh_apps::SshNodeApps;

/// The applications of one node incarnation (they die with it).
#[derive(Debug, Default)]
pub(crate) struct NodeApps {
    pub(crate) tcp: TcpNodeApps,
    pub(crate) ssh: SshNodeApps,
}
