//! What can go wrong when building or changing a world.

use mesh_core::tcp::TcpError;
use mesh_core::wireguard::ConfigError;
use thiserror::Error;

use crate::addresses::MAX_NODES;
use crate::ids::NodeId;

/// A world-building or world-changing request that cannot be carried out.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SimError {
    #[error("a world holds at most {MAX_NODES} nodes")]
    TooManyNodes,
    #[error("no node {0}")]
    NoSuchNode(NodeId),
    #[error("node {0} is down")]
    NodeDown(NodeId),
    #[error("node {0} cannot be its own peer")]
    SelfPeer(NodeId),
    #[error("{from} has no peer {to}")]
    NotAPeer { from: NodeId, to: NodeId },
    #[error("WireGuard configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("TCP: {0}")]
    Tcp(TcpError),
    #[error("{0}")]
    TcpConfig(mesh_core::tcp::TcpConfigError),
    #[error("{0}")]
    SshConfig(mesh_core::ssh::validate::SshConfigError),
    #[error("node {0} does not serve TCP port 22 (NodeConfig::with_ssh)")]
    NoSshPort(NodeId),
    #[error("node {0} runs no SSH server app (World::serve_ssh) and no host key was given")]
    NoSshServer(NodeId),
}
