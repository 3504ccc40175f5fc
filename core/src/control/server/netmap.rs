//! The map stream: compiling the policy for the tailnet, each node's view, and the deltas
//! between what a node was sent and what it should have now.

use std::net::SocketAddr;

use super::{Compiled, ConnId, ControlServer, NodeRecord, View};
use crate::control::messages::{MapDelta, Netmap, Peer, ServerMessage};
use crate::policy::{compile, NodeId, NodeInfo};
use crate::time::Instant;

impl ControlServer {
    // ---- the map stream ----------------------------------------------------------------

    pub(super) fn start_map(&mut self, now: Instant, conn: ConnId, endpoints: Vec<SocketAddr>) {
        let Some(node) = self.conn_node(conn) else { return self.reject(now, conn, "register first") };
        if self.expired(node) {
            return self.reject(now, conn, "the node key has expired; log in again");
        }
        self.set_endpoints(node, endpoints);
        self.online.insert(node);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.view = Some(View::default());
        }
        self.changed(now);
    }

    pub(super) fn expired(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.key_expiry.is_some_and(|e| e <= self.unix))
    }

    pub(super) fn peer(&self, n: &NodeRecord) -> Peer {
        Peer {
            id: n.id,
            name: n.name.clone(),
            user: self.users.get(&n.user).map(|u| u.name.clone()).unwrap_or_default(),
            tags: n.tags.clone(),
            node_key: n.node_key,
            addresses: n.addresses.clone(),
            routes: Vec::new(),
            endpoints: n.endpoints.clone(),
            ssh_host_keys: if n.ssh { n.ssh_host_keys.clone() } else { Vec::new() },
            key_expiry: n.key_expiry,
            online: self.online.contains(&n.id),
        }
    }

    /// How many times the policy has been compiled for the tailnet since start (once at
    /// start, then after every change).
    pub fn compile_count(&self) -> u64 {
        self.compiles
    }

    /// Compiles the policy for every node whose key is valid.
    pub(super) fn recompile(&mut self) {
        self.compiles += 1;
        let live: Vec<&NodeRecord> = self.nodes.values().filter(|n| !self.expired(n.id)).collect();
        let inventory: Vec<NodeInfo> = live
            .iter()
            .map(|n| NodeInfo {
                id: n.id,
                name: n.name.clone(),
                user: self.users.get(&n.user).map(|u| u.name.clone()).unwrap_or_default(),
                tags: n.tags.clone(),
                addresses: n.addresses.clone(),
                routes: Vec::new(),
            })
            .collect();
        let compiled = compile(&self.policy, &inventory);
        self.compiled = inventory
            .iter()
            .zip(compiled.nodes)
            .map(|(info, p)| {
                let peers = p.peers().into_iter().map(|i| inventory[i].id).collect();
                (info.id, Compiled { peers, filter: p.filter, ssh: p.ssh })
            })
            .collect();
    }

    /// After any change: recompile and send each streaming node what it does not have.
    pub(super) fn changed(&mut self, now: Instant) {
        self.recompile();
        let conns: Vec<ConnId> = self.conns.iter().filter(|(_, c)| c.view.is_some()).map(|(id, _)| *id).collect();
        for conn in conns {
            let Some(node) = self.conn_node(conn) else { continue };
            let fresh = self.view_of(node);
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            let Some(old) = c.view.take() else { continue };
            let version = old.version + 1;
            let message = if old.node.is_none() {
                fresh.node.clone().map(|me| {
                    ServerMessage::Map(Netmap {
                        version,
                        node: me,
                        peers: fresh.peers.values().cloned().collect(),
                        filter: fresh.filter.clone(),
                        ssh: fresh.ssh.clone(),
                        dns_domain: self.config.dns_domain.clone(),
                    })
                })
            } else {
                let delta = delta(&old, &fresh, version);
                (!delta.is_empty()).then_some(ServerMessage::Delta(delta))
            };
            let sent = message.is_some();
            if let Some(c) = self.conns.get_mut(&conn) {
                c.view = Some(View { version: if sent { version } else { old.version }, ..fresh });
            }
            if let Some(m) = message {
                self.send(now, conn, m);
            }
        }
    }

    pub(super) fn view_of(&self, node: NodeId) -> View {
        let Some(record) = self.nodes.get(&node) else { return View::default() };
        let Some(c) = self.compiled.get(&node) else {
            // Expired: itself only, no peers, deny everything.
            return View { node: Some(self.peer(record)), ..View::default() };
        };
        View {
            version: 0,
            node: Some(self.peer(record)),
            peers: c.peers.iter().filter_map(|id| self.nodes.get(id)).map(|n| (n.id, self.peer(n))).collect(),
            filter: c.filter.clone(),
            ssh: c.ssh.clone(),
        }
    }
}

/// What `fresh` has that `old` does not.
fn delta(old: &View, fresh: &View, version: u64) -> MapDelta {
    let upsert = fresh.peers.iter().filter(|(id, p)| old.peers.get(id) != Some(p)).map(|(_, p)| p.clone()).collect();
    let remove = old.peers.keys().filter(|id| !fresh.peers.contains_key(id)).copied().collect();
    MapDelta {
        version,
        upsert,
        remove,
        filter: (old.filter != fresh.filter).then(|| fresh.filter.clone()),
        ssh: (old.ssh != fresh.ssh).then(|| fresh.ssh.clone()),
        node: (old.node != fresh.node).then(|| fresh.node.clone()).flatten(),
    }
}
