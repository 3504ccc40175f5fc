//! The map stream: compiling the policy for the tailnet, and sending each streaming node
//! what changed since its last message.
//!
//! What keeps a large tailnet cheap:
//! - Each node's [`Peer`] entry is built once per change of that node and shared (`Arc`)
//!   by every map and delta that carries it.
//! - Visibility is kept as bitsets over node ids, shared by every node of a class; a
//!   node's delta compares its last set with the new one word by word (pointer-equal
//!   sets are skipped outright).
//! - A change that cannot alter the policy's result (endpoints, online, a node key, a
//!   rename) does not recompile: it bumps that node's revision, and each viewer's delta
//!   picks up the revisions since its last message from a short change log.
//! - Filters and SSH rules are compared by pointer first, by value only when recompiled.
//!
//! A change that can alter the policy's result (a node joining or leaving, tags, users,
//! the policy itself, expiry) recompiles the whole tailnet: O(nodes x rules), measured in
//! BENCHMARKS.md; making that incremental is the next step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{Compiled, ConnId, ControlServer, NodeRecord, View};
use crate::control::messages::{MapDelta, Netmap, Peer, ServerMessage};
use crate::policy::{compile, NodeId, NodeInfo, NodeSet};
use crate::time::Instant;

impl ControlServer {
    pub(super) fn start_map(&mut self, now: Instant, conn: ConnId, endpoints: Vec<SocketAddr>) {
        let Some(node) = self.conn_node(conn) else { return self.reject(now, conn, "register first") };
        if self.expired(node) {
            return self.reject(now, conn, "the node key has expired; log in again");
        }
        self.set_endpoints(node, endpoints);
        self.online.insert(node);
        self.ephemeral_offline.remove(&node);
        // A second request on a streaming connection gets no second full map (each would
        // cost a whole netmap).
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.view.is_none() {
                c.view = Some(View::default());
            }
        }
        self.touched(now, node);
    }

    pub(super) fn expired(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.key_expiry.is_some_and(|e| e <= self.unix))
    }

    fn peer(&self, n: &NodeRecord) -> Peer {
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

    /// Rebuilds node `id`'s shared entry and logs the change.
    /// Nothing happens when the entry is unchanged.
    pub(super) fn refresh_peer(&mut self, id: NodeId) {
        match self.nodes.get(&id) {
            Some(n) => {
                let peer = self.peer(n);
                if self.peer_cache.get(&id).is_some_and(|(old, _)| **old == peer) {
                    return;
                }
                self.revision += 1;
                self.peer_cache.insert(id, (Arc::new(peer), self.revision));
            }
            None => {
                if self.peer_cache.remove(&id).is_none() {
                    return;
                }
                self.revision += 1;
            }
        }
        self.change_log.insert(self.revision, id);
    }

    /// How many times the policy has been compiled for the tailnet since start (once at
    /// start, then after every change the policy reads).
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
        // Index-space sets to id space, once per shared set.
        let mut converted: BTreeMap<usize, Arc<NodeSet>> = BTreeMap::new();
        let mut to_ids = |set: &Arc<NodeSet>| -> Arc<NodeSet> {
            converted
                .entry(Arc::as_ptr(set) as usize)
                .or_insert_with(|| {
                    let ids: NodeSet = set.iter().filter_map(|i| inventory.get(i)).map(|n| id_index(n.id)).collect();
                    Arc::new(ids)
                })
                .clone()
        };
        let mut out = BTreeMap::new();
        for (info, policy) in inventory.iter().zip(compiled.nodes) {
            let (class, own) = policy.visibility();
            let mut visible = to_ids(class);
            if let Some(own) = own {
                let mut union = (*visible).clone();
                union.union_with(&to_ids(own));
                visible = Arc::new(union);
            }
            out.insert(info.id, Compiled { visible, filter: Arc::new(policy.filter), ssh: Arc::new(policy.ssh) });
        }
        // Keep the previous Arcs where nothing changed, so views skip the comparison.
        for (id, fresh) in out.iter_mut() {
            if let Some(old) = self.compiled.get(id) {
                if *old.visible == *fresh.visible {
                    fresh.visible = old.visible.clone();
                }
                if *old.filter == *fresh.filter {
                    fresh.filter = old.filter.clone();
                }
                if *old.ssh == *fresh.ssh {
                    fresh.ssh = old.ssh.clone();
                }
            }
        }
        self.compiled = out;
        let new: Vec<NodeId> = self.nodes.keys().filter(|id| !self.peer_cache.contains_key(id)).copied().collect();
        for id in new {
            self.refresh_peer(id);
        }
        let gone: Vec<NodeId> = self.peer_cache.keys().filter(|id| !self.nodes.contains_key(id)).copied().collect();
        for id in gone {
            self.refresh_peer(id);
        }
    }

    /// After a change that can alter the policy's result: recompile and update every
    /// streaming node.
    pub(super) fn changed(&mut self, now: Instant) {
        self.recompile();
        self.update_views(now);
    }

    /// After a change to node `id` that the policy does not read (endpoints, online, its
    /// node key, its name): only its entry changes.
    pub(super) fn touched(&mut self, now: Instant, id: NodeId) {
        self.refresh_peer(id);
        self.update_views(now);
    }

    /// Sends every streaming node its full map (first time) or what changed since.
    fn update_views(&mut self, now: Instant) {
        let conns: Vec<(ConnId, NodeId)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.view.is_some())
            .filter_map(|(id, c)| c.node.map(|n| (*id, n)))
            .collect();
        for (conn, node) in conns {
            let Some(view) = self.conns.get_mut(&conn).and_then(|c| c.view.take()) else { continue };
            let (view, message) = self.next_message(node, view);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.view = Some(view);
            }
            if let Some(m) = message {
                self.maps_sent += 1;
                self.send(now, conn, m);
            }
        }
        // The log only needs what some view has not seen yet.
        let oldest =
            self.conns.values().filter_map(|c| c.view.as_ref()).map(|v| v.sent_rev).min().unwrap_or(self.revision);
        self.change_log = self.change_log.split_off(&(oldest + 1));
    }

    fn next_message(&self, node: NodeId, mut old: View) -> (View, Option<ServerMessage>) {
        let empty = Compiled::default();
        let fresh = self.compiled.get(&node).unwrap_or(&empty);
        // The common case on a large tailnet: nothing this node sees changed. Decide it
        // without allocating.
        let unchanged = old.started
            && Arc::ptr_eq(&old.seen, &fresh.visible)
            && Arc::ptr_eq(&old.filter, &fresh.filter)
            && Arc::ptr_eq(&old.ssh, &fresh.ssh)
            && self
                .change_log
                .range(old.sent_rev + 1..)
                .all(|(_, &id)| id != node && !fresh.visible.contains(id_index(id)));
        if unchanged {
            old.sent_rev = self.revision;
            return (old, None);
        }
        let me = self.peer_cache.get(&node).map(|(p, _)| (**p).clone());
        let mut view = View {
            version: old.version,
            sent_rev: self.revision,
            started: true,
            seen: fresh.visible.clone(),
            filter: fresh.filter.clone(),
            ssh: fresh.ssh.clone(),
        };
        let Some(me) = me else { return (old, None) };
        if !old.started {
            view.version += 1;
            let peers = fresh
                .visible
                .iter()
                .filter(|&i| i != id_index(node))
                .filter_map(|i| self.peer_cache.get(&NodeId(i as u64)))
                .map(|(p, _)| p.clone())
                .collect();
            let map = Netmap {
                version: view.version,
                node: me,
                peers,
                filter: (*fresh.filter).clone(),
                ssh: (*fresh.ssh).clone(),
                dns_domain: self.config.dns_domain.clone(),
            };
            return (view, Some(ServerMessage::Map(map)));
        }
        let me_index = id_index(node);
        let mut delta = MapDelta::default();
        let mut upserted = NodeSet::default();
        if !Arc::ptr_eq(&old.seen, &fresh.visible) {
            for i in fresh.visible.difference(&old.seen).filter(|&i| i != me_index) {
                if let Some((p, _)) = self.peer_cache.get(&NodeId(i as u64)) {
                    delta.upsert.push(p.clone());
                    upserted.insert(i);
                }
            }
            delta.remove =
                old.seen.difference(&fresh.visible).filter(|&i| i != me_index).map(|i| NodeId(i as u64)).collect();
        }
        for (_, &id) in self.change_log.range(old.sent_rev + 1..) {
            let i = id_index(id);
            if id == node {
                delta.node = Some(me.clone());
            } else if fresh.visible.contains(i) && !upserted.contains(i) {
                if let Some((p, _)) = self.peer_cache.get(&id) {
                    delta.upsert.push(p.clone());
                    upserted.insert(i);
                }
            }
        }
        delta.upsert.sort_by_key(|p| p.id);
        if !Arc::ptr_eq(&old.filter, &fresh.filter) && *old.filter != *fresh.filter {
            delta.filter = Some((*fresh.filter).clone());
        }
        if !Arc::ptr_eq(&old.ssh, &fresh.ssh) && *old.ssh != *fresh.ssh {
            delta.ssh = Some((*fresh.ssh).clone());
        }
        if delta.is_empty() {
            return (View { version: old.version, ..view }, None);
        }
        view.version += 1;
        delta.version = view.version;
        (view, Some(ServerMessage::Delta(delta)))
    }
}

/// Node ids are small and dense (the server hands them out in order): they index bitsets.
fn id_index(id: NodeId) -> usize {
    usize::try_from(id.0).unwrap_or(usize::MAX)
}
