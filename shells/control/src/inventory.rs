//! The node list `policy compile --nodes` reads: the inventory a policy is compiled for,
//! as JSON, so a user can try a policy against the tailnet they have (or plan).
//!
//! ```json
//! [{"name": "laptop", "user": "alice@example.com", "addresses": ["100.64.0.1"]},
//!  {"name": "web", "user": "alice@example.com", "tags": ["tag:web"],
//!   "addresses": ["100.64.0.2", "fd7a:115c:a1e0::2"], "routes": ["192.168.1.0/24"]}]
//! ```
//!
//! `"groups": ["eng"]` on a node says what the identity provider's group claim carried for
//! its user at the last single sign-on (as `users list` shows it): the node's user is then
//! also in `group:eng` when the policy declares it. Values that are not group names are
//! ignored and at most 64 are kept, as the server does.

use std::net::IpAddr;

use mesh_core::policy::{NodeId, NodeInfo};
use mesh_core::wireguard::IpPrefix;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("node {index}: {message}")]
    Node { index: usize, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: String,
    user: String,
    #[serde(default)]
    tags: Vec<String>,
    addresses: Vec<IpAddr>,
    #[serde(default)]
    routes: Vec<String>,
    /// The IdP groups of the node's user (`eng`, not `group:eng`).
    #[serde(default)]
    groups: Vec<String>,
    /// Optional; nodes are numbered by position otherwise.
    id: Option<u64>,
}

/// Parses a node list. Names must be unique and every node needs an address.
pub fn parse(text: &str) -> Result<Vec<NodeInfo>, InventoryError> {
    let entries: Vec<NodeEntry> = serde_json::from_str(text)?;
    let mut nodes: Vec<NodeInfo> = Vec::with_capacity(entries.len());
    for (index, e) in entries.into_iter().enumerate() {
        let bad = |message: String| InventoryError::Node { index, message };
        if e.addresses.is_empty() {
            return Err(bad(format!("{} has no addresses", e.name)));
        }
        if nodes.iter().any(|n| n.name == e.name) {
            return Err(bad(format!("the name {} is used twice", e.name)));
        }
        if let Some(t) = e.tags.iter().find(|t| !t.starts_with("tag:")) {
            return Err(bad(format!("{t:?} is not a tag (tag:name)")));
        }
        let routes = e
            .routes
            .iter()
            .map(|r| r.parse::<IpPrefix>().map_err(|err| bad(format!("route {r:?}: {err}"))))
            .collect::<Result<_, _>>()?;
        nodes.push(NodeInfo {
            id: NodeId(e.id.unwrap_or(index as u64 + 1)),
            name: e.name,
            user: e.user,
            tags: e.tags,
            addresses: e.addresses,
            routes,
            idp_groups: mesh_core::policy::idp_groups(&e.groups)
                .kept
                .iter()
                .filter_map(|g| mesh_core::policy::idp_policy_group(g))
                .collect(),
        });
    }
    Ok(nodes)
}
