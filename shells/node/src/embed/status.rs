//! What the loop tells the application about the node as a whole: its addresses once
//! the control server gave them (and the node was rebuilt on them), whether the server
//! refused it, the peers' identities, and whether the loop has ended. One lock and one
//! condition variable; [`super::Mesh::wait_running`] sleeps on it.

use std::net::IpAddr;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mesh_core::control::messages::Peer;
use mesh_core::wireguard::PublicKey;

/// Who a peer is, from the netmap (as tsnet's `WhoIs`): what the identity behind a
/// WireGuard key is, so an application can decide by user rather than by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The node's DNS label.
    pub name: String,
    /// The user owning the node (empty for tagged nodes).
    pub user: String,
    pub tags: Vec<String>,
    pub addresses: Vec<IpAddr>,
    pub node_key: PublicKey,
}

impl PeerIdentity {
    pub(super) fn from_peer(peer: &Peer) -> Self {
        Self {
            name: peer.name.clone(),
            user: peer.user.clone(),
            tags: peer.tags.clone(),
            addresses: peer.addresses.clone(),
            node_key: peer.node_key,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct StatusState {
    /// The node's mesh addresses; empty until it runs on them.
    pub addresses: Vec<IpAddr>,
    /// The name the server gave this node.
    pub name: String,
    /// The server refused this node (why).
    pub rejected: Option<String>,
    /// The control connection's last error, for messages.
    pub last_error: Option<String>,
    pub peers: Vec<PeerIdentity>,
    /// The netmap version `peers` was taken from.
    pub netmap_version: Option<u64>,
    /// The loop has ended: nothing will change any more.
    pub stopped: bool,
}

#[derive(Debug, Default)]
pub(super) struct Status {
    state: Mutex<StatusState>,
    changed: Condvar,
}

impl Status {
    /// The state, also after a thread panicked holding it (every update is complete
    /// before it is published, so a poisoned lock holds consistent data).
    pub fn lock(&self) -> MutexGuard<'_, StatusState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Wait until `done` says so (its answer) or `timeout` passes (`None`).
    pub fn wait_for<T>(&self, timeout: Duration, mut done: impl FnMut(&StatusState) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(answer) = done(&state) {
                return Some(answer);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self.changed.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}
