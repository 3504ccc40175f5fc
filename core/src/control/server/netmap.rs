//! The map stream: the policy compiled for the tailnet, and each streaming node sent what
//! changed since its last message.
//!
//! What keeps a large tailnet cheap:
//! - The compiled tailnet ([`Tailnet`]) changes one node at a time: a join, a leave, a tag
//!   change touches only the rules that node is in and the peers that gain or lose it,
//!   and says which nodes' output changed. Only a policy edit rebuilds it.
//! - A change visits only the streaming nodes it can matter to: those whose compiled
//!   output changed, and the viewers of a node whose map entry changed. Nobody else's
//!   view is looked at.
//! - Each node's [`Peer`] entry is built once per change of that node and shared (`Arc`)
//!   by every map and delta that carries it.
//! - Visibility is a bitset over node ids, shared by every node of a class; a delta
//!   compares a view's last set with the new one word by word (pointer-equal sets are
//!   skipped outright), and filters and SSH rules by pointer first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{ConnId, ControlServer, NodeRecord, Output, Stream, View};
use crate::control::messages::{MapDelta, Netmap, Peer, ServerMessage};
use crate::policy::{NodeId, NodeInfo, NodeSet, Tailnet};
use crate::time::Instant;

/// Node ids index bitsets (the server hands them out in order); an id beyond this is
/// never compiled (it sees nothing and nobody sees it) rather than sizing sets by it.
const MAX_SLOTS: u64 = 1 << 24;

impl ControlServer {
    pub(super) fn start_map(&mut self, now: Instant, conn: ConnId, endpoints: Vec<SocketAddr>) {
        let Some(node) = self.conn_node(conn) else { return self.reject(now, conn, "register first") };
        if self.expired(node) {
            return self.reject(now, conn, "the node key has expired; log in again");
        }
        self.set_endpoints(node, endpoints);
        self.online.insert(node);
        self.last_seen.insert(node, self.unix);
        self.ephemeral_offline.remove(&node);
        // A second request on a streaming connection gets no second full map (each would
        // cost a whole netmap); a request on another connection replaces the stream (the
        // node reconnected; the old connection is closed).
        let Some(s) = slot(node) else { return self.reject(now, conn, "the tailnet is full") };
        if s >= self.streams.len() {
            self.streams.resize_with(s + 1, || None);
        }
        match &self.streams[s] {
            Some(stream) if stream.conn == conn => {}
            old => {
                if let Some(old) = old {
                    let reason = "replaced by a newer connection of this node".to_string();
                    self.out.push_back(Output::Close { conn: old.conn, reason });
                }
                self.streams[s] = Some(Stream { conn, view: View::default(), next_keepalive: now });
            }
        }
        self.nodes_changed(now, &[node]);
    }

    pub(super) fn expired(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.key_expiry.is_some_and(|e| e <= self.unix))
    }

    fn peer(&self, n: &NodeRecord) -> Peer {
        Peer {
            id: n.id,
            name: n.name.clone(),
            user: self.user_name(n.user),
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

    /// Rebuilds node `id`'s shared entry; whether it changed.
    fn refresh_peer(&mut self, id: NodeId) -> bool {
        let Some(s) = slot(id) else { return false };
        let peer = self.nodes.get(&id).map(|n| self.peer(n));
        if s >= self.peer_cache.len() {
            if peer.is_none() {
                return false;
            }
            self.peer_cache.resize(s + 1, None);
        }
        let entry = &mut self.peer_cache[s];
        match peer {
            Some(peer) if entry.as_deref() == Some(&peer) => false,
            Some(peer) => {
                *entry = Some(Arc::new(peer));
                true
            }
            None => entry.take().is_some(),
        }
    }

    /// How many times the policy has been compiled for the whole tailnet since start
    /// (once at start, then after every policy edit; node changes are incremental).
    pub fn compile_count(&self) -> u64 {
        self.compiles
    }

    /// What the compiler knows of node `id`: nothing once it is gone or its key expired.
    fn node_info(&self, id: NodeId) -> Option<NodeInfo> {
        let n = self.nodes.get(&id).filter(|n| !self.expired(n.id))?;
        Some(NodeInfo {
            id: n.id,
            name: String::new(),
            user: self.user_name(n.user),
            tags: n.tags.clone(),
            addresses: n.addresses.clone(),
            routes: Vec::new(),
            idp_groups: self.idp_groups(n.user),
        })
    }

    /// Compiles the policy for the whole tailnet.
    pub(super) fn recompile(&mut self) {
        self.compiles += 1;
        let mut slots: Vec<Option<NodeInfo>> = Vec::new();
        for &id in self.nodes.keys() {
            let Some(s) = slot(id) else { continue };
            if s >= slots.len() {
                slots.resize(s + 1, None);
            }
            slots[s] = self.node_info(id);
        }
        self.tailnet = Tailnet::new(self.policy.clone(), slots);
        let cached = (0..self.peer_cache.len()).filter(|&s| self.peer_cache[s].is_some()).map(|s| NodeId(s as u64));
        let ids: Vec<NodeId> = self.nodes.keys().copied().chain(cached).collect();
        for id in ids {
            self.refresh_peer(id);
        }
    }

    /// After a policy edit: recompile, and update every streaming node.
    pub(super) fn policy_changed(&mut self, now: Instant) {
        self.recompile();
        let all: Vec<usize> = (0..self.streams.len()).filter(|&s| self.streams[s].is_some()).collect();
        self.dispatch(now, &all, &[]);
    }

    /// After a change to nodes `ids` (joined, left, retagged, expired, or only their map
    /// entry changed: endpoints, online, key, name): update the compiled tailnet for them
    /// and every streaming node it matters to.
    pub(super) fn nodes_changed(&mut self, now: Instant, ids: &[NodeId]) {
        let mut visit = Vec::new();
        let mut touched = Vec::new();
        for &id in ids {
            if let Some(s) = slot(id) {
                // Its own connections always (a new stream waits for its full map).
                visit.push(s);
                let info = self.node_info(id);
                visit.extend(self.tailnet.set(s, info));
            }
            if self.refresh_peer(id) {
                touched.push(id);
            }
        }
        for &id in &touched {
            if let Some(s) = slot(id) {
                visit.push(s);
                visit.extend(self.tailnet.viewers(s));
            }
        }
        visit.sort_unstable();
        visit.dedup();
        self.dispatch(now, &visit, &touched);
    }

    /// Sends each streaming node in `visit` (slots) its full map (first time) or what
    /// changed since; `touched` are the nodes whose map entries changed.
    fn dispatch(&mut self, now: Instant, visit: &[usize], touched: &[NodeId]) {
        let source = MapSource {
            tailnet: &self.tailnet,
            peers: &self.peer_cache,
            empty: &self.empty,
            dns_domain: &self.config.dns_domain,
        };
        let mut diffs = Diffs::default();
        for &s in visit {
            let Some(stream) = self.streams.get_mut(s).and_then(Option::as_mut) else { continue };
            let Some(message) = source.next_message(NodeId(s as u64), &mut stream.view, touched, &mut diffs) else {
                continue;
            };
            stream.next_keepalive = super::keepalive_deadline(&self.config, &mut self.rng, now);
            self.maps_sent += 1;
            self.out.push_back(Output::Send { conn: stream.conn, message });
        }
    }
}

/// What maps and deltas are made of (borrowed apart from the connections they go to).
struct MapSource<'a> {
    tailnet: &'a Tailnet,
    peers: &'a [Option<Arc<Peer>>],
    empty: &'a super::EmptyView,
    dns_domain: &'a str,
}

impl MapSource<'_> {
    fn peer(&self, slot: usize) -> Option<&Arc<Peer>> {
        self.peers.get(slot).and_then(Option::as_ref)
    }

    /// What `node`'s stream needs next after `view`, which is brought up to date.
    fn next_message(
        &self,
        node: NodeId,
        view: &mut View,
        touched: &[NodeId],
        diffs: &mut Diffs,
    ) -> Option<ServerMessage> {
        let me_slot = slot(node).unwrap_or(usize::MAX);
        let (visible, filter, ssh) = match self.tailnet.node(me_slot) {
            Some(p) => (p.visible(), &p.filter, &p.ssh),
            None => (&self.empty.0, &self.empty.1, &self.empty.2),
        };
        // The common case: nothing this node sees changed. Decide it without allocating.
        let unchanged = view.started
            && Arc::ptr_eq(&view.seen, visible)
            && Arc::ptr_eq(&view.filter, filter)
            && Arc::ptr_eq(&view.ssh, ssh)
            && touched.iter().all(|&id| id != node && !slot(id).is_some_and(|s| visible.contains(s)));
        if unchanged {
            return None;
        }
        let me = self.peer(me_slot)?;
        if !view.started {
            *view = View {
                version: view.version + 1,
                started: true,
                seen: visible.clone(),
                filter: filter.clone(),
                ssh: ssh.clone(),
            };
            let peers = visible.iter().filter(|&i| i != me_slot).filter_map(|i| self.peer(i)).cloned().collect();
            return Some(ServerMessage::Map(Netmap {
                version: view.version,
                node: me.clone(),
                peers,
                filter: filter.clone(),
                ssh: ssh.clone(),
                dns_domain: self.dns_domain.to_string(),
            }));
        }
        let mut delta = MapDelta::default();
        if !Arc::ptr_eq(&view.seen, visible) {
            let (added, removed) = diffs.between(&view.seen, visible, self);
            delta.upsert.extend(added.iter().filter(|p| p.id != node).cloned());
            delta.remove.extend(removed.iter().copied().filter(|&id| id != node));
            view.seen = visible.clone();
        }
        for &id in touched {
            let Some(i) = slot(id) else { continue };
            if id == node {
                delta.node = Some(me.clone());
            } else if visible.contains(i) && !delta.upsert.iter().any(|p| p.id == id) {
                if let Some(p) = self.peer(i) {
                    delta.upsert.push(p.clone());
                }
            }
        }
        delta.upsert.sort_by_key(|p| p.id);
        if !Arc::ptr_eq(&view.filter, filter) {
            if *view.filter != **filter {
                delta.filter = Some(filter.clone());
            }
            view.filter = filter.clone();
        }
        if !Arc::ptr_eq(&view.ssh, ssh) {
            if *view.ssh != **ssh {
                delta.ssh = Some(ssh.clone());
            }
            view.ssh = ssh.clone();
        }
        if delta.is_empty() {
            return None;
        }
        view.version += 1;
        delta.version = view.version;
        Some(ServerMessage::Delta(delta))
    }
}

/// Visibility changes computed once per pair of sets: the members of a class share
/// their old and their new set, so a change that reaches a thousand of them diffs a
/// handful of pairs.
#[derive(Default)]
struct Diffs {
    pairs: Vec<Diff>,
}

/// From one set to another: the entries of the peers it adds, the nodes it drops.
struct Diff {
    old: Arc<NodeSet>,
    new: Arc<NodeSet>,
    added: Vec<Arc<Peer>>,
    removed: Vec<NodeId>,
}

impl Diffs {
    /// The peers `new` adds to `old` (entries) and the nodes it drops.
    fn between(&mut self, old: &Arc<NodeSet>, new: &Arc<NodeSet>, source: &MapSource) -> (&[Arc<Peer>], &[NodeId]) {
        let at = match self.pairs.iter().position(|d| Arc::ptr_eq(&d.old, old) && Arc::ptr_eq(&d.new, new)) {
            Some(at) => at,
            None => {
                let (mut added, mut removed) = (Vec::new(), Vec::new());
                new.diff(old, |i| added.extend(source.peer(i).cloned()), |i| removed.push(NodeId(i as u64)));
                self.pairs.push(Diff { old: old.clone(), new: new.clone(), added, removed });
                self.pairs.len() - 1
            }
        };
        let diff = &self.pairs[at];
        (&diff.added, &diff.removed)
    }
}

/// A node's slot in the compiled tailnet: its id (see [`MAX_SLOTS`]).
pub(super) fn slot(id: NodeId) -> Option<usize> {
    (id.0 < MAX_SLOTS).then(|| usize::try_from(id.0).ok()).flatten()
}

/// Streaming connections per node (kept by the connection code).
pub(super) type NodeConns = BTreeMap<NodeId, std::collections::BTreeSet<ConnId>>;
