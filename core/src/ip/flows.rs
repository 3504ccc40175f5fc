//! Connection tracking: the flows a node has seen, so that replies to connections it opened
//! pass the default-deny filter, and packets of flows the rules already allowed skip the
//! rule scan.
//!
//! Bounded: at most `capacity` flows, each forgotten after an idle timeout that depends on
//! its protocol. Expiry walks a queue in insertion order (never a hash map), so it is
//! deterministic; an entry refreshed since it was queued is queued again instead of
//! expired. When the table is full, the oldest entry makes room.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use rustc_hash::FxBuildHasher;

use super::packet::{PacketInfo, Proto};
use crate::time::Instant;

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

#[derive(Clone, Copy, Debug)]
struct Entry {
    origin: Origin,
    last_seen: Instant,
}

/// Idle time after which a flow is forgotten.
pub fn idle_timeout(proto: Proto) -> Duration {
    match proto {
        Proto::Tcp => Duration::from_secs(2 * 3600),
        Proto::Icmp => Duration::from_secs(30),
        Proto::Udp | Proto::Other(_) => Duration::from_secs(120),
    }
}

/// The flow table.
#[derive(Debug)]
pub struct FlowTable {
    map: HashMap<FlowKey, Entry, FxBuildHasher>,
    queue: VecDeque<FlowKey>,
    capacity: usize,
}

impl FlowTable {
    /// Default bound on tracked flows.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    pub fn new(capacity: usize) -> Self {
        Self { map: HashMap::with_hasher(FxBuildHasher), queue: VecDeque::new(), capacity: capacity.max(1) }
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

    /// Track a flow, or refresh it: a flow keeps the origin it was created with, so the
    /// replies of a service to a remotely opened flow never make it "local" (it must stay
    /// subject to the rules). The one change allowed: rules that admit a packet of a
    /// revoked flow again make it `Remote` again.
    pub fn insert(&mut self, now: Instant, key: FlowKey, origin: Origin) {
        if let Some(entry) = self.map.get_mut(&key) {
            entry.last_seen = now;
            if entry.origin == Origin::Revoked && origin == Origin::Remote {
                entry.origin = Origin::Remote;
            }
            return;
        }
        if self.map.len() >= self.capacity {
            self.expire(now, self.queue.len());
        }
        while self.map.len() >= self.capacity {
            let Some(oldest) = self.queue.pop_front() else { break };
            self.map.remove(&oldest);
        }
        self.map.insert(key, Entry { origin, last_seen: now });
        self.queue.push_back(key);
    }

    pub fn remove(&mut self, key: &FlowKey) {
        self.map.remove(key);
        // Its queue slot is skipped when reached.
    }

    /// Forget idle flows, looking at no more than `budget` queue entries.
    pub fn expire(&mut self, now: Instant, budget: usize) {
        for _ in 0..budget.min(self.queue.len()) {
            let Some(key) = self.queue.pop_front() else { break };
            let Some(entry) = self.map.get(&key) else { continue };
            if now.saturating_duration_since(entry.last_seen) >= idle_timeout(key.proto) {
                self.map.remove(&key);
            } else {
                self.queue.push_back(key);
            }
        }
        // Drop slots of removed entries so the queue stays bounded by the table.
        if self.queue.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.queue.retain(|k| map.contains_key(k));
        }
    }

    /// Revoke the remotely opened flows `keep` rejects (after a filter change), returning
    /// them in queue order.
    pub fn cut_remote(&mut self, mut keep: impl FnMut(&FlowKey) -> bool) -> Vec<FlowKey> {
        let mut cut = Vec::new();
        for key in &self.queue {
            if let Some(entry) = self.map.get_mut(key) {
                if entry.origin == Origin::Remote && !keep(key) {
                    entry.origin = Origin::Revoked;
                    cut.push(*key);
                }
            }
        }
        cut
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

    #[test]
    fn bounded_and_evicts_oldest() {
        let mut t = FlowTable::new(3);
        for p in 0..5 {
            t.insert(at(0), key(p), Origin::Local);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(&key(0)), None);
        assert_eq!(t.get(&key(4)), Some(Origin::Local));
    }

    #[test]
    fn idle_flows_expire_and_refreshed_ones_stay() {
        let mut t = FlowTable::new(100);
        t.insert(at(0), key(1), Origin::Local);
        t.insert(at(0), key(2), Origin::Remote);
        assert_eq!(t.touch(at(100), &key(2)), Some(Origin::Remote));
        t.expire(at(130), usize::MAX);
        assert_eq!(t.get(&key(1)), None, "idle for 130 s (UDP timeout 120 s)");
        assert_eq!(t.get(&key(2)), Some(Origin::Remote));
        t.expire(at(221), usize::MAX);
        assert!(t.is_empty());
    }

    #[test]
    fn origin_is_fixed_at_creation_and_cut_spares_local_flows() {
        let mut t = FlowTable::new(100);
        t.insert(at(0), key(1), Origin::Local);
        t.insert(at(0), key(1), Origin::Remote);
        t.insert(at(0), key(4), Origin::Remote);
        t.insert(at(0), key(4), Origin::Local);
        t.insert(at(0), key(2), Origin::Remote);
        t.insert(at(0), key(3), Origin::Remote);
        let cut = t.cut_remote(|k| k.local_port == 3);
        assert_eq!(cut, vec![key(4), key(2)]);
        assert_eq!(t.get(&key(1)), Some(Origin::Local));
        assert_eq!(t.get(&key(3)), Some(Origin::Remote));
        // A revoked flow stays revoked when this node sends on it...
        t.insert(at(1), key(2), Origin::Local);
        assert_eq!(t.get(&key(2)), Some(Origin::Revoked));
        // ...and becomes remote again only when the rules admit it again.
        t.insert(at(1), key(2), Origin::Remote);
        assert_eq!(t.get(&key(2)), Some(Origin::Remote));
        assert!(t.cut_remote(|_| true).is_empty());
    }
}
