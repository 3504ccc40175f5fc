//! Connection tracking: the flows a node has seen, so that replies to connections it opened
//! pass the default-deny filter, and packets of flows the rules already allowed skip the
//! rule scan.
//!
//! Bounded, and shared fairly. Every flow belongs to a bucket: its class (opened by this
//! node, or by the remote end) and the peer on the other side. A bucket holds at most
//! `per_peer` flows; a full bucket makes room by evicting its own oldest flow, so a peer
//! that varies its source port only ever displaces its own flows. When the whole table is
//! full, room is taken from the largest remotely opened bucket, and this node's own flows
//! are evicted only when no remote ones are left: a peer's traffic never evicts the flows
//! whose replies this node waits for. Every flow is forgotten after an idle timeout that
//! depends on its protocol.
//!
//! Each bucket keeps its flows in insertion order (a queue, never a hash-map walk, so it is
//! deterministic); a flow refreshed since it was queued gets a second chance at the back
//! instead of being evicted or expired. Inserts and the periodic sweep do a bounded amount
//! of work. The hash over flow keys (chosen by remote peers) is SipHash-1-3 under a key
//! drawn per node.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Duration;

use siphasher::sip::SipHasher13;

use super::packet::{PacketInfo, Proto};
use crate::time::Instant;
use crate::wireguard::PeerId;

/// A flow as seen from this node: protocol, local and remote address and port (ICMP echo:
/// the identifier as both ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: Proto,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
}

impl FlowKey {
    /// The flow of a packet arriving from the mesh.
    pub fn inbound(info: &PacketInfo) -> Self {
        Self {
            proto: info.proto,
            local: info.dst,
            local_port: info.dst_port,
            remote: info.src,
            remote_port: info.src_port,
        }
    }

    /// The flow of a packet this node sends into the mesh.
    pub fn outbound(info: &PacketInfo) -> Self {
        Self {
            proto: info.proto,
            local: info.src,
            local_port: info.src_port,
            remote: info.dst,
            remote_port: info.dst_port,
        }
    }
}

/// Who opened a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// This node: replies are allowed whatever the rules say.
    Local,
    /// The remote end, because the rules allowed it: re-checked when the rules change.
    Remote,
    /// A remotely opened flow that a new filter cut. Kept (until idle) so that this node's
    /// own packets on it (a RST, a late reply) cannot re-create it as `Local`; inbound
    /// packets on it are judged by the rules again.
    Revoked,
}

/// Which side opened a flow, for fairness: remote flows never displace local ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Local,
    Remote,
}

/// A flow's share of the table: its class and the peer on the other side (`None` when no
/// peer routes the remote address).
type Bucket = (Class, Option<PeerId>);

#[derive(Clone, Copy, Debug)]
struct Entry {
    origin: Origin,
    peer: Option<PeerId>,
    last_seen: Instant,
    /// `last_seen` when the flow was last queued: a later `last_seen` means it was used
    /// since, and earns a second chance.
    queued_seen: Instant,
}

impl Entry {
    fn bucket(&self) -> Bucket {
        let class = if self.origin == Origin::Local { Class::Local } else { Class::Remote };
        (class, self.peer)
    }
}

#[derive(Debug, Default)]
struct Queue {
    keys: VecDeque<FlowKey>,
    /// Flows in the table that belong here (the queue may also hold stale keys).
    count: usize,
}

/// The per-node key of the flow hash.
#[derive(Clone, Debug)]
struct FlowHasher {
    k0: u64,
    k1: u64,
}

impl BuildHasher for FlowHasher {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// Idle time after which a flow is forgotten.
pub fn idle_timeout(proto: Proto) -> Duration {
    match proto {
        Proto::Tcp => Duration::from_secs(2 * 3600),
        Proto::Icmp => Duration::from_secs(30),
        Proto::Udp | Proto::Other(_) => Duration::from_secs(120),
    }
}

/// Flows looked at, at most, to find one to evict (second chances included).
const EVICT_BUDGET: usize = 8;

/// The flow table.
#[derive(Debug)]
pub struct FlowTable {
    map: HashMap<FlowKey, Entry, FlowHasher>,
    queues: BTreeMap<Bucket, Queue>,
    /// (count, bucket) of every non-empty remote bucket, to find the largest.
    remote_sizes: BTreeSet<(usize, Option<PeerId>)>,
    /// The same for local buckets.
    local_sizes: BTreeSet<(usize, Option<PeerId>)>,
    capacity: usize,
    per_peer: usize,
    /// Where the next sweep starts (round robin over the buckets).
    sweep_from: Option<Bucket>,
}

impl FlowTable {
    /// Default bound on tracked flows.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// A table of at most `capacity` flows, `capacity / 8` (at least 64) per peer and
    /// class; `hash_key` (random, per node) keys the hash over flow keys.
    pub fn new(capacity: usize, hash_key: [u8; 16]) -> Self {
        let capacity = capacity.max(1);
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&hash_key[..8]);
        k1.copy_from_slice(&hash_key[8..]);
        let hasher = FlowHasher { k0: u64::from_le_bytes(k0), k1: u64::from_le_bytes(k1) };
        Self {
            map: HashMap::with_hasher(hasher),
            queues: BTreeMap::new(),
            remote_sizes: BTreeSet::new(),
            local_sizes: BTreeSet::new(),
            capacity,
            per_peer: (capacity / 8).max(64).min(capacity),
            sweep_from: None,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The origin of a tracked flow, refreshing it.
    pub fn touch(&mut self, now: Instant, key: &FlowKey) -> Option<Origin> {
        let entry = self.map.get_mut(key)?;
        entry.last_seen = now;
        Some(entry.origin)
    }

    /// The origin of a tracked flow, without refreshing it.
    pub fn get(&self, key: &FlowKey) -> Option<Origin> {
        self.map.get(key).map(|e| e.origin)
    }

    /// The peer a tracked flow is charged to.
    pub fn peer(&self, key: &FlowKey) -> Option<PeerId> {
        self.map.get(key).and_then(|e| e.peer)
    }

    /// Track a flow with the peer on its other side, or refresh it: a flow keeps the
    /// origin it was created with, so the replies of a service to a remotely opened flow
    /// never make it "local" (it must stay subject to the rules). The one change allowed:
    /// rules that admit a packet of a revoked flow again make it `Remote` again.
    pub fn insert(&mut self, now: Instant, key: FlowKey, origin: Origin, peer: Option<PeerId>) {
        if let Some(entry) = self.map.get_mut(&key) {
            entry.last_seen = now;
            if entry.origin == Origin::Revoked && origin == Origin::Remote {
                entry.origin = Origin::Remote;
            }
            return;
        }
        let entry = Entry { origin, peer, last_seen: now, queued_seen: now };
        let bucket = entry.bucket();
        if self.queues.get(&bucket).map_or(0, |q| q.count) >= self.per_peer {
            self.evict_from(now, bucket);
        }
        if self.map.len() >= self.capacity {
            let victim = match (self.remote_sizes.last(), self.local_sizes.last(), bucket.0) {
                (Some(&(_, peer)), _, _) => Some((Class::Remote, peer)),
                // A remote flow never displaces a local one: it goes untracked (the
                // filter still judges each of its packets).
                (None, _, Class::Remote) => return,
                (None, Some(&(_, peer)), Class::Local) => Some((Class::Local, peer)),
                (None, None, Class::Local) => None,
            };
            if let Some(victim) = victim {
                self.evict_from(now, victim);
            }
        }
        if self.map.len() >= self.capacity {
            return;
        }
        self.map.insert(key, entry);
        let queue = self.queues.entry(bucket).or_default();
        queue.keys.push_back(key);
        self.resize(bucket, 1);
    }

    /// Account for a flow added to (`+1`) or gone from (`-1`) `bucket`.
    fn resize(&mut self, bucket: Bucket, delta: isize) {
        let Some(queue) = self.queues.get_mut(&bucket) else { return };
        let sizes = match bucket.0 {
            Class::Local => &mut self.local_sizes,
            Class::Remote => &mut self.remote_sizes,
        };
        sizes.remove(&(queue.count, bucket.1));
        queue.count = queue.count.saturating_add_signed(delta);
        if queue.count > 0 {
            sizes.insert((queue.count, bucket.1));
        } else {
            self.queues.remove(&bucket);
            if self.sweep_from == Some(bucket) {
                self.sweep_from = None;
            }
        }
    }

    /// Evict one flow of `bucket`: the oldest one not used since it was queued, looking at
    /// no more than [`EVICT_BUDGET`] flows (then the oldest, used or not).
    fn evict_from(&mut self, now: Instant, bucket: Bucket) {
        let mut chances = EVICT_BUDGET;
        loop {
            let Some(queue) = self.queues.get_mut(&bucket) else { return };
            let Some(key) = queue.keys.pop_front() else { return };
            let Some(entry) = self.map.get_mut(&key) else { continue };
            if entry.bucket() != bucket {
                continue;
            }
            let idle = now.saturating_duration_since(entry.last_seen) >= idle_timeout(key.proto);
            if chances > 0 && !idle && entry.last_seen > entry.queued_seen {
                chances -= 1;
                entry.queued_seen = entry.last_seen;
                queue.keys.push_back(key);
                continue;
            }
            self.map.remove(&key);
            self.resize(bucket, -1);
            return;
        }
    }

    pub fn remove(&mut self, key: &FlowKey) {
        if let Some(entry) = self.map.remove(key) {
            // Its queue slot is skipped when reached.
            self.resize(entry.bucket(), -1);
        }
    }

    /// Forget idle flows, looking at no more than `budget` queued flows, round robin over
    /// the buckets.
    pub fn expire(&mut self, now: Instant, budget: usize) {
        let mut budget = budget;
        let buckets: Vec<Bucket> = match self.sweep_from {
            Some(from) => self.queues.range(from..).chain(self.queues.range(..from)).map(|(&b, _)| b).collect(),
            None => self.queues.keys().copied().collect(),
        };
        for (i, bucket) in buckets.iter().enumerate() {
            if budget == 0 {
                self.sweep_from = Some(*bucket);
                return;
            }
            let Some(queue) = self.queues.get_mut(bucket) else { continue };
            let look = budget.min(queue.keys.len());
            budget -= look;
            let mut expired = 0;
            for _ in 0..look {
                let Some(key) = queue.keys.pop_front() else { break };
                let Some(entry) = self.map.get_mut(&key) else { continue };
                if entry.bucket() != *bucket {
                    continue;
                }
                if now.saturating_duration_since(entry.last_seen) >= idle_timeout(key.proto) {
                    self.map.remove(&key);
                    expired += 1;
                } else {
                    entry.queued_seen = entry.last_seen;
                    queue.keys.push_back(key);
                }
            }
            // Drop slots of removed entries so a queue stays bounded by its flows.
            if queue.keys.len() > 2 * queue.count + 64 {
                let map = &self.map;
                queue.keys.retain(|k| map.get(k).is_some_and(|e| e.bucket() == *bucket));
            }
            for _ in 0..expired {
                self.resize(*bucket, -1);
            }
            self.sweep_from = buckets.get(i + 1).copied();
        }
    }

    /// Revoke the remotely opened flows `keep` rejects (after a filter change), returning
    /// them in bucket and queue order.
    pub fn cut_remote(&mut self, mut keep: impl FnMut(&FlowKey) -> bool) -> Vec<FlowKey> {
        let mut cut = Vec::new();
        for ((class, _), queue) in &self.queues {
            if *class != Class::Remote {
                continue;
            }
            for key in &queue.keys {
                if let Some(entry) = self.map.get_mut(key) {
                    if entry.origin == Origin::Remote && !keep(key) {
                        entry.origin = Origin::Revoked;
                        cut.push(*key);
                    }
                }
            }
        }
        cut
    }

    /// Forget every flow of `peer` (removed from the netmap, or re-keyed), returning them.
    pub fn purge_peer(&mut self, peer: PeerId) -> Vec<FlowKey> {
        let mut purged = Vec::new();
        for class in [Class::Local, Class::Remote] {
            let Some(queue) = self.queues.remove(&(class, Some(peer))) else { continue };
            let sizes = if class == Class::Local { &mut self.local_sizes } else { &mut self.remote_sizes };
            sizes.remove(&(queue.count, Some(peer)));
            for key in queue.keys {
                if self.map.get(&key).is_some_and(|e| e.peer == Some(peer)) {
                    self.map.remove(&key);
                    purged.push(key);
                }
            }
            if self.sweep_from == Some((class, Some(peer))) {
                self.sweep_from = None;
            }
        }
        purged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            proto: Proto::Udp,
            local: IpAddr::from([100, 64, 0, 1]),
            local_port: port,
            remote: IpAddr::from([100, 64, 0, 2]),
            remote_port: 53,
        }
    }

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    fn table(capacity: usize) -> FlowTable {
        FlowTable::new(capacity, [7; 16])
    }

    const P1: Option<PeerId> = Some(PeerId(1));
    const P2: Option<PeerId> = Some(PeerId(2));

    #[test]
    fn bounded_and_evicts_oldest() {
        let mut t = table(3);
        for p in 0..5 {
            t.insert(at(0), key(p), Origin::Local, P1);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(&key(0)), None);
        assert_eq!(t.get(&key(4)), Some(Origin::Local));
    }

    #[test]
    fn idle_flows_expire_and_refreshed_ones_stay() {
        let mut t = table(100);
        t.insert(at(0), key(1), Origin::Local, P1);
        t.insert(at(0), key(2), Origin::Remote, P1);
        assert_eq!(t.touch(at(100), &key(2)), Some(Origin::Remote));
        t.expire(at(130), usize::MAX);
        assert_eq!(t.get(&key(1)), None, "idle for 130 s (UDP timeout 120 s)");
        assert_eq!(t.get(&key(2)), Some(Origin::Remote));
        t.expire(at(221), usize::MAX);
        assert!(t.is_empty());
    }

    #[test]
    fn origin_is_fixed_at_creation_and_cut_spares_local_flows() {
        let mut t = table(100);
        t.insert(at(0), key(1), Origin::Local, P1);
        t.insert(at(0), key(1), Origin::Remote, P1);
        t.insert(at(0), key(4), Origin::Remote, P1);
        t.insert(at(0), key(4), Origin::Local, P1);
        t.insert(at(0), key(2), Origin::Remote, P1);
        t.insert(at(0), key(3), Origin::Remote, P1);
        let cut = t.cut_remote(|k| k.local_port == 3);
        assert_eq!(cut, vec![key(4), key(2)]);
        assert_eq!(t.get(&key(1)), Some(Origin::Local));
        assert_eq!(t.get(&key(3)), Some(Origin::Remote));
        // A revoked flow stays revoked when this node sends on it...
        t.insert(at(1), key(2), Origin::Local, P1);
        assert_eq!(t.get(&key(2)), Some(Origin::Revoked));
        // ...and becomes remote again only when the rules admit it again.
        t.insert(at(1), key(2), Origin::Remote, P1);
        assert_eq!(t.get(&key(2)), Some(Origin::Remote));
        assert!(t.cut_remote(|_| true).is_empty());
    }

    fn remote_key(port: u16) -> FlowKey {
        FlowKey { remote_port: port, local_port: 22, ..key(0) }
    }

    #[test]
    fn a_peer_varying_its_source_port_displaces_only_its_own_flows() {
        let mut t = table(1024);
        // This node's own flows to peer 2, and peer 2's flows in.
        for p in 0..50 {
            t.insert(at(0), key(p), Origin::Local, P2);
            t.insert(at(0), remote_key(60_000 + p), Origin::Remote, P2);
        }
        // Peer 1 floods from every source port.
        for p in 0..60_000u16 {
            t.insert(at(1), remote_key(p), Origin::Remote, P1);
        }
        assert!(t.len() <= 1024);
        for p in 0..50 {
            assert_eq!(t.get(&key(p)), Some(Origin::Local), "own flow {p} kept");
            assert_eq!(t.peer(&remote_key(60_000 + p)), P2, "peer 2's flow {p} kept");
        }
        let flooder = (0..60_000u16).filter(|&p| t.peer(&remote_key(p)) == P1).count();
        assert_eq!(flooder, 1024 / 8, "the flooder holds its share, no more");
    }

    #[test]
    fn a_full_table_takes_room_from_remote_flows_never_from_local_ones() {
        // 16 peers each at their share fill the table with remote flows.
        let mut t = FlowTable::new(640, [1; 16]);
        for peer in 0..16u64 {
            for p in 0..80u16 {
                let k = FlowKey { remote: IpAddr::from([100, 64, 1, peer as u8]), ..remote_key(p) };
                t.insert(at(0), k, Origin::Remote, Some(PeerId(peer)));
            }
        }
        assert_eq!(t.len(), 640);
        // This node's own flows still get in, and a new remote flow does not push them out.
        for p in 0..300 {
            t.insert(at(1), key(p), Origin::Local, Some(PeerId(u64::from(p) % 16)));
        }
        for p in 0..2000 {
            t.insert(at(2), remote_key(10_000 + p), Origin::Remote, Some(PeerId(99)));
        }
        assert!((0..300).all(|p| t.get(&key(p)) == Some(Origin::Local)));
        assert!(t.len() <= 640);
    }

    #[test]
    fn purging_a_peer_forgets_its_flows_only() {
        let mut t = table(100);
        t.insert(at(0), key(1), Origin::Local, P1);
        t.insert(at(0), remote_key(2), Origin::Remote, P1);
        t.insert(at(0), key(3), Origin::Local, P2);
        let mut purged = t.purge_peer(PeerId(1));
        purged.sort();
        let mut expected = vec![key(1), remote_key(2)];
        expected.sort();
        assert_eq!(purged, expected);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&key(3)), Some(Origin::Local));
        // The purged peer's buckets are gone: new flows start a fresh share.
        t.insert(at(1), key(1), Origin::Local, P1);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_hash_is_keyed_per_table() {
        let a = FlowHasher { k0: 1, k1: 2 };
        let b = FlowHasher { k0: 3, k1: 4 };
        assert_ne!(a.hash_one(key(1)), b.hash_one(key(1)));
    }
}
