//! One peer's state: configuration, the handshake in flight, its three sessions, packets
//! waiting for a session, and timers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use snow::HandshakeState;

use super::allowed_ips::IpPrefix;
use super::cookie::CookieStamper;
use super::keypair::Keypair;
use super::keys::{PresharedKey, PublicKey};
use super::tai64n::Tai64n;
use super::timers::PeerTimers;
use crate::time::{Instant, UnixTime};

/// A peer's handle, stable for the peer's lifetime and never reused (64 bits, counted up
/// once per added peer: it cannot wrap). Only the WireGuard layer makes one, so holding a
/// `PeerId` means a peer authenticated by its key is behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub(crate) u64);

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer{}", self.0)
    }
}

/// How to reach and trust a peer. (`Debug` prints the preshared key as `..`.)
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    /// Mixed into the handshake (post-quantum hedge); zeros when absent.
    pub preshared_key: Option<PresharedKey>,
    /// Where to send; learned from authenticated packets when absent (and updated on roam).
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpPrefix>,
    pub persistent_keepalive: Option<Duration>,
}

impl PeerConfig {
    /// A peer with only a key and allowed IPs.
    pub fn new(public_key: PublicKey, allowed_ips: Vec<IpPrefix>) -> Self {
        Self { public_key, preshared_key: None, endpoint: None, allowed_ips, persistent_keepalive: None }
    }
}

/// An initiation we sent and await the response to.
pub struct PendingHandshake {
    pub state: HandshakeState,
    pub local_index: u32,
}

/// Traffic figures of one peer, for status output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub handshakes_completed: u64,
    pub last_handshake: Option<UnixTime>,
}

/// Everything we know about one peer.
pub struct Peer {
    pub id: PeerId,
    pub config: PeerConfig,
    pub cookie: CookieStamper,
    pub pending: Option<PendingHandshake>,
    /// When we last sent an initiation (retries included).
    pub last_initiation_sent: Option<Instant>,
    /// When the current series of attempts started (for REKEY_ATTEMPT_TIME).
    pub attempts_started: Option<Instant>,
    /// The newest initiation timestamp accepted from this peer.
    pub last_timestamp: Option<Tai64n>,
    /// When we last accepted an initiation from this peer (flood gate).
    pub last_initiation_consumed: Option<Instant>,
    pub current: Option<Keypair>,
    pub previous: Option<Keypair>,
    /// A responder's session awaiting its first packet (key confirmation).
    pub next: Option<Keypair>,
    pub staged: VecDeque<BytesMut>,
    pub timers: PeerTimers,
    /// The deadline this peer is filed under in the device's timer queue.
    pub scheduled: Option<Instant>,
    pub stats: PeerStats,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("public_key", &self.config.public_key)
            .field("endpoint", &self.config.endpoint)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

/// Which of a peer's sessions an index names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Current,
    Previous,
    Next,
}

impl Peer {
    pub fn new(id: PeerId, config: PeerConfig) -> Self {
        Self {
            id,
            cookie: CookieStamper::new(&config.public_key),
            config,
            pending: None,
            last_initiation_sent: None,
            attempts_started: None,
            last_timestamp: None,
            last_initiation_consumed: None,
            current: None,
            previous: None,
            next: None,
            staged: VecDeque::new(),
            timers: PeerTimers::default(),
            scheduled: None,
            stats: PeerStats::default(),
        }
    }

    /// The preshared key for the handshake, borrowed (no copy to wipe).
    pub fn psk(&self) -> &[u8; 32] {
        self.config.preshared_key.as_ref().map_or(&PresharedKey::NONE, PresharedKey::as_bytes)
    }

    pub fn keypair_mut(&mut self, slot: Slot) -> Option<&mut Keypair> {
        match slot {
            Slot::Current => self.current.as_mut(),
            Slot::Previous => self.previous.as_mut(),
            Slot::Next => self.next.as_mut(),
        }
    }

    /// The session holding local index `index`.
    pub fn slot_of(&self, index: u32) -> Option<Slot> {
        [(Slot::Current, &self.current), (Slot::Previous, &self.previous), (Slot::Next, &self.next)]
            .into_iter()
            .find(|(_, k)| k.as_ref().is_some_and(|k| k.local_index == index))
            .map(|(slot, _)| slot)
    }

    /// Install a session we initiated: it is confirmed (we saw the response) and becomes
    /// current. Returns the local indices of sessions dropped.
    pub fn install_initiated(&mut self, keypair: Keypair) -> Vec<u32> {
        let mut dropped = Vec::new();
        if let Some(next) = self.next.take() {
            // An unconfirmed responder session is still better than the old current.
            dropped.extend(self.current.take().map(|k| k.local_index));
            dropped.extend(self.previous.replace(next).map(|k| k.local_index));
        } else {
            let old = self.current.take();
            dropped.extend(std::mem::replace(&mut self.previous, old).map(|k| k.local_index));
        }
        self.current = Some(keypair);
        dropped
    }

    /// Install a session we answered: it waits as `next` until the initiator uses it.
    pub fn install_responded(&mut self, keypair: Keypair) -> Vec<u32> {
        let mut dropped = Vec::new();
        dropped.extend(self.next.replace(keypair).map(|k| k.local_index));
        dropped.extend(self.previous.take().map(|k| k.local_index));
        dropped
    }

    /// The initiator used `next`: it becomes current. Returns the index dropped.
    pub fn confirm_next(&mut self) -> Option<u32> {
        let next = self.next.take()?;
        let old = self.current.replace(next);
        std::mem::replace(&mut self.previous, old).map(|k| k.local_index)
    }

    /// Erase every session and the handshake in flight; returns all indices released.
    pub fn zero_keys(&mut self) -> Vec<u32> {
        let mut released: Vec<u32> = [self.current.take(), self.previous.take(), self.next.take()]
            .into_iter()
            .flatten()
            .map(|k| k.local_index)
            .collect();
        released.extend(self.pending.take().map(|p| p.local_index));
        self.staged.clear();
        self.attempts_started = None;
        released
    }
}
