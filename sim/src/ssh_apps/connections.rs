//! The SSH connections of one node incarnation, kept beside the node by the world (see
//! `crate::node_apps`): they die with the incarnation.

use std::collections::BTreeMap;

use mesh_core::node::SessionId;
use mesh_core::tcp::ConnId;

use super::client::ClientConn;
use super::server::ServerConn;

/// The SSH connections of one node incarnation (they die with it).
#[derive(Debug, Default)]
pub(crate) struct SshNodeApps {
    pub(crate) servers: BTreeMap<SessionId, ServerConn>,
    pub(crate) clients: BTreeMap<ConnId, ClientConn>,
}

impl SshNodeApps {
    pub(crate) fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.clients.is_empty()
    }
}
