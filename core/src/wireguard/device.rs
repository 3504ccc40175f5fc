//! The WireGuard device: one sans-IO state machine owning every peer.
//!
//! Inputs: [`WireGuard::handle_datagram`] (bytes from the UDP socket),
//! [`WireGuard::handle_packet`] (an IP packet to send into the tunnel),
//! [`WireGuard::handle_timeout`] and the peer-table commands. Outputs, drained after every
//! input: [`WireGuard::poll_transmit`] (datagrams for the UDP socket),
//! [`WireGuard::poll_received`] (decrypted packets tagged with the [`PeerId`] whose key
//! authenticated them and whose allowed IPs contain their source),
//! [`WireGuard::poll_event`] and [`WireGuard::poll_timeout`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tracing::{debug, trace};

use super::allowed_ips::{AllowedIps, IpPrefix};
use super::constants::*;
use super::cookie::CookieChecker;
use super::error::{DropCounts, DropReason};
use super::keypair::{Keypair, OpenError};
use super::keys::{PrivateKey, PublicKey};
use super::messages::{
    classify, read_u32, read_u64, sender_index, write_type, MessageKind, DATA_HEADER_LEN, INITIATION_LEN,
    INITIATION_NOISE, MAX_DATAGRAM_LEN, MSG_INITIATION, MSG_RESPONSE, RESPONSE_LEN, RESPONSE_NOISE, TAG_LEN,
};
use super::noise::{self, NoiseFactory};
use super::peer::{Peer, PeerConfig, PeerId, PeerStats, PendingHandshake, Slot};
use super::tai64n::Tai64n;
use crate::ip::packet::IpHeader;
use crate::rng::Rng;
use crate::time::{Instant, UnixTime, WallClock};

/// Device configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub private_key: PrivateKey,
    /// Handshake messages per second above which a valid mac2 (cookie) is required.
    pub handshake_load_threshold: u32,
    /// Session message limits; the protocol's values unless a deployment wants shorter
    /// sessions.
    pub rekey_after_messages: u64,
    pub reject_after_messages: u64,
}

impl Config {
    /// The protocol's defaults for this private key.
    pub fn new(private_key: PrivateKey) -> Self {
        Self {
            private_key,
            handshake_load_threshold: DEFAULT_HANDSHAKE_LOAD_THRESHOLD,
            rekey_after_messages: REKEY_AFTER_MESSAGES,
            reject_after_messages: REJECT_AFTER_MESSAGES,
        }
    }
}

/// A peer-table command that cannot be carried out.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("a peer with this public key already exists")]
    DuplicatePeer,
    #[error("a peer cannot have our own public key")]
    OwnKey,
    #[error("no such peer")]
    NoSuchPeer,
    #[error("a peer's public key cannot change; remove and add it")]
    KeyChanged,
    #[error("peer ids exhausted")]
    TooManyPeers,
    #[error("invalid noise parameters: {0}")]
    Noise(String),
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: BytesMut,
}

/// A decrypted, authenticated IP packet.
#[derive(Debug)]
pub struct Received {
    /// The peer whose session key opened the packet and whose allowed IPs hold its source.
    pub peer: PeerId,
    pub packet: BytesMut,
}

/// Something the application may act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new session is confirmed (initiator: response received; responder: first packet
    /// received on it).
    SessionEstablished { peer: PeerId, initiator: bool },
    /// Handshake retries gave up after REKEY_ATTEMPT_TIME; staged packets were dropped.
    PeerUnreachable { peer: PeerId },
    /// All key material of the peer was erased (540 s without a new session).
    KeysZeroed { peer: PeerId },
}

/// Device-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub initiations_sent: u64,
    pub initiations_accepted: u64,
    pub responses_accepted: u64,
    pub cookie_replies_sent: u64,
    pub cookie_replies_accepted: u64,
    pub sessions_established: u64,
    pub data_sent: u64,
    pub data_received: u64,
    pub keepalives_sent: u64,
    pub keepalives_received: u64,
    pub staged_dropped: u64,
    pub drops: DropCounts,
}

/// What the application can see of a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<IpPrefix>,
    pub stats: PeerStats,
    pub session: Option<SessionStatus>,
    pub handshake_in_flight: bool,
}

/// The current session of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    pub created: Instant,
    pub is_initiator: bool,
    pub send_counter: u64,
}

/// Handshake rate over one-second windows, and whether we are "under load".
#[derive(Debug)]
struct LoadMeter {
    threshold: u32,
    window_start: Instant,
    count: u32,
    under_load_until: Option<Instant>,
}

impl LoadMeter {
    /// Count one handshake message; returns whether mac2 is required for it.
    fn record(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.threshold {
            self.under_load_until = Some(now + UNDER_LOAD_HOLD_TIME);
        }
        self.under_load_until.is_some_and(|until| now < until)
    }
}

/// Receiver index -> peer. Indices are random (ours), so a fast fixed hash is safe here.
type IndexMap = HashMap<u32, PeerId, rustc_hash::FxBuildHasher>;

/// State every peer operation needs besides the peer itself (split from [`WireGuard`] so a
/// peer can be borrowed mutably alongside it).
struct Shared {
    rng: Rng,
    noise: NoiseFactory,
    wall: WallClock,
    limits: (u64, u64),
    by_index: IndexMap,
    transmits: VecDeque<Transmit>,
    received: VecDeque<Received>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Peers an input may have changed the timers of; rescheduled when the input is done.
    touched: Vec<PeerId>,
}

/// The WireGuard state machine for one interface.
pub struct WireGuard {
    peers: BTreeMap<PeerId, Peer>,
    by_key: BTreeMap<PublicKey, PeerId>,
    allowed_ips: AllowedIps<PeerId>,
    cookies: CookieChecker,
    load: LoadMeter,
    next_peer_id: u64,
    /// Every peer's earliest timer deadline, so `poll_timeout` and `handle_timeout` cost
    /// O(log peers) rather than a scan. Kept in step with each `Peer::scheduled`.
    deadlines: BTreeSet<(Instant, PeerId)>,
    sh: Shared,
}

impl std::fmt::Debug for WireGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireGuard")
            .field("public_key", self.sh.noise.public())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl WireGuard {
    /// A device with no peers. `rng` should be forked from the node's seeded RNG; `unix` is
    /// the wall-clock time at `now` (for handshake timestamps).
    pub fn new(config: Config, rng: Rng, now: Instant, unix: UnixTime) -> Result<Self, ConfigError> {
        let noise = NoiseFactory::new(config.private_key).map_err(|e| ConfigError::Noise(e.to_string()))?;
        Ok(Self {
            peers: BTreeMap::new(),
            by_key: BTreeMap::new(),
            allowed_ips: AllowedIps::default(),
            cookies: CookieChecker::new(noise.public()),
            load: LoadMeter {
                threshold: config.handshake_load_threshold,
                window_start: now,
                count: 0,
                under_load_until: None,
            },
            next_peer_id: 0,
            deadlines: BTreeSet::new(),
            sh: Shared {
                rng,
                noise,
                wall: WallClock::new(now, unix),
                limits: (config.rekey_after_messages, config.reject_after_messages),
                by_index: IndexMap::default(),
                transmits: VecDeque::new(),
                received: VecDeque::new(),
                events: VecDeque::new(),
                stats: Stats::default(),
                touched: Vec::new(),
            },
        })
    }

    /// Our static public key.
    pub fn public_key(&self) -> PublicKey {
        *self.sh.noise.public()
    }

    /// Diffie-Hellman operations performed so far (the cost an attacker can impose).
    pub fn dh_operations(&self) -> u64 {
        self.sh.noise.dh_ops()
    }

    pub fn stats(&self) -> &Stats {
        &self.sh.stats
    }

    /// Re-anchor the wall clock (the driver noticed the system clock jump).
    pub fn handle_wall_clock(&mut self, now: Instant, unix: UnixTime) {
        self.sh.wall = WallClock::new(now, unix);
    }

    // ----- peer table -------------------------------------------------------------------

    /// Add a peer. Its allowed IPs are taken from any peer that held them.
    pub fn add_peer(&mut self, now: Instant, mut config: PeerConfig) -> Result<PeerId, ConfigError> {
        // A keepalive interval of 0 means off (as in wg(8)), not "every instant".
        config.persistent_keepalive = config.persistent_keepalive.filter(|d| !d.is_zero());
        if config.public_key == self.public_key() {
            return Err(ConfigError::OwnKey);
        }
        if self.by_key.contains_key(&config.public_key) {
            return Err(ConfigError::DuplicatePeer);
        }
        let id = PeerId(self.next_peer_id);
        self.next_peer_id = self.next_peer_id.checked_add(1).ok_or(ConfigError::TooManyPeers)?;
        self.by_key.insert(config.public_key, id);
        self.sh.noise.remember_peer(&config.public_key);
        let mut peer = Peer::new(id, config);
        peer.timers.on_authenticated_traversal(now, peer.config.persistent_keepalive);
        let prefixes = peer.config.allowed_ips.clone();
        self.peers.insert(id, peer);
        self.assign_allowed_ips(id, &prefixes);
        self.reschedule(id);
        Ok(id)
    }

    /// Change a peer's PSK, endpoint, allowed IPs and keepalive. Sessions are kept.
    pub fn update_peer(&mut self, now: Instant, id: PeerId, mut config: PeerConfig) -> Result<(), ConfigError> {
        config.persistent_keepalive = config.persistent_keepalive.filter(|d| !d.is_zero());
        let peer = self.peers.get_mut(&id).ok_or(ConfigError::NoSuchPeer)?;
        if peer.config.public_key != config.public_key {
            return Err(ConfigError::KeyChanged);
        }
        let endpoint = config.endpoint.or(peer.config.endpoint);
        let prefixes = config.allowed_ips.clone();
        peer.config = PeerConfig { endpoint, ..config };
        peer.timers.persistent_keepalive = None;
        peer.timers.on_authenticated_traversal(now, peer.config.persistent_keepalive);
        self.allowed_ips.remove_value(id);
        self.assign_allowed_ips(id, &prefixes);
        self.reschedule(id);
        Ok(())
    }

    /// Remove a peer, erasing its keys and releasing its allowed IPs.
    pub fn remove_peer(&mut self, id: PeerId) -> Result<(), ConfigError> {
        let mut peer = self.peers.remove(&id).ok_or(ConfigError::NoSuchPeer)?;
        if let Some(at) = peer.scheduled.take() {
            self.deadlines.remove(&(at, id));
        }
        self.by_key.remove(&peer.config.public_key);
        self.sh.noise.forget_peer(&peer.config.public_key);
        self.allowed_ips.remove_value(id);
        for index in peer.zero_keys() {
            self.sh.by_index.remove(&index);
        }
        Ok(())
    }

    fn assign_allowed_ips(&mut self, id: PeerId, prefixes: &[IpPrefix]) {
        for &prefix in prefixes {
            if let Some(previous) = self.allowed_ips.insert(prefix, id) {
                if previous != id {
                    if let Some(p) = self.peers.get_mut(&previous) {
                        p.config.allowed_ips.retain(|q| *q != prefix);
                    }
                }
            }
        }
    }

    /// The peer with this public key.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// All peers in id order.
    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// A peer's endpoint, addresses, counters and session.
    pub fn peer_status(&self, id: PeerId) -> Option<PeerStatus> {
        let p = self.peers.get(&id)?;
        Some(PeerStatus {
            public_key: p.config.public_key,
            endpoint: p.config.endpoint,
            allowed_ips: p.config.allowed_ips.clone(),
            stats: p.stats,
            session: p.current.as_ref().map(|k| SessionStatus {
                created: k.created,
                is_initiator: k.is_initiator,
                send_counter: k.send_counter,
            }),
            handshake_in_flight: p.pending.is_some() && p.timers.retransmit_handshake.is_some(),
        })
    }

    /// The peer whose allowed IPs contain `addr` (the route an outbound packet takes).
    pub fn route(&self, addr: std::net::IpAddr) -> Option<PeerId> {
        self.allowed_ips.lookup(addr)
    }

    /// Start a handshake with a peer now (subject to the 5 s rate limit).
    pub fn connect(&mut self, now: Instant, id: PeerId) -> Result<(), ConfigError> {
        let peer = self.peers.get_mut(&id).ok_or(ConfigError::NoSuchPeer)?;
        self.sh.send_initiation(now, peer, false);
        self.reschedule(id);
        Ok(())
    }

    // ----- inputs -----------------------------------------------------------------------

    /// A datagram arrived from `from`. Decrypted packets go to [`Self::poll_received`];
    /// replies to [`Self::poll_transmit`]. An `Err` says why it was dropped (also counted).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: BytesMut) -> Result<(), DropReason> {
        let result = self.dispatch_datagram(now, from, datagram);
        self.reschedule_touched();
        if let Err(reason) = result {
            self.sh.stats.drops.record(reason);
            debug!(%from, %reason, "dropped datagram");
        }
        result
    }

    fn dispatch_datagram(&mut self, now: Instant, from: SocketAddr, datagram: BytesMut) -> Result<(), DropReason> {
        match classify(&datagram)? {
            MessageKind::Initiation => self.handle_initiation(now, from, &datagram),
            MessageKind::Response => self.handle_response(now, from, &datagram),
            MessageKind::CookieReply => self.handle_cookie_reply(now, &datagram),
            MessageKind::Data => self.handle_data(now, from, datagram),
        }
    }

    /// An IP packet to send through the tunnel. `buf` holds [`DATA_HEADER_LEN`] bytes of
    /// headroom followed by the packet; reserve [`super::messages::DATA_OVERHEAD`] bytes of
    /// capacity so it is encrypted without reallocating.
    pub fn handle_packet(&mut self, now: Instant, buf: BytesMut) -> Result<(), DropReason> {
        let result = self.route_packet(now, buf);
        self.reschedule_touched();
        if let Err(reason) = result {
            self.sh.stats.drops.record(reason);
            trace!(%reason, "dropped outbound packet");
        }
        result
    }

    fn route_packet(&mut self, now: Instant, buf: BytesMut) -> Result<(), DropReason> {
        // Headroom + packet + up to 15 bytes of padding + tag must fit one UDP datagram.
        if buf.len() + 15 + TAG_LEN > MAX_DATAGRAM_LEN {
            return Err(DropReason::TooLarge);
        }
        let addrs =
            buf.get(DATA_HEADER_LEN..).and_then(|p| IpHeader::parse(p).ok()).ok_or(DropReason::BadInnerPacket)?;
        let id = self.allowed_ips.lookup(addrs.dst).ok_or(DropReason::NoRoute)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::NoRoute)?;
        self.sh.touched.push(id);
        if self.sh.can_send(now, peer) {
            return self.sh.send_data(now, peer, buf);
        }
        if peer.staged.len() >= MAX_STAGED_PACKETS {
            peer.staged.pop_front();
            self.sh.stats.staged_dropped += 1;
        }
        peer.staged.push_back(buf);
        self.sh.send_initiation(now, peer, false);
        if peer.config.endpoint.is_none() {
            peer.staged.clear();
            return Err(DropReason::NoEndpoint);
        }
        Ok(())
    }

    /// Fire every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(peer) = self.peers.get_mut(&id) else { continue };
            peer.scheduled = None;
            self.sh.touched.push(id);
            let expired = peer.timers.expire(now);
            if expired.zero_key_material {
                for index in peer.zero_keys() {
                    self.sh.by_index.remove(&index);
                }
                peer.timers.clear();
                self.sh.events.push_back(Event::KeysZeroed { peer: peer.id });
                debug!(peer = %peer.id, "keys zeroed");
            }
            if expired.retransmit_handshake {
                let started = peer.attempts_started.unwrap_or(now);
                if now.saturating_duration_since(started) >= REKEY_ATTEMPT_TIME {
                    debug!(peer = %peer.id, "handshake gave up");
                    self.sh.stats.staged_dropped += peer.staged.len() as u64;
                    peer.staged.clear();
                    peer.attempts_started = None;
                    peer.timers.on_gave_up(now);
                    self.sh.events.push_back(Event::PeerUnreachable { peer: peer.id });
                } else {
                    self.sh.send_initiation(now, peer, true);
                }
            }
            if expired.send_keepalive || expired.persistent_keepalive {
                self.sh.send_keepalive(now, peer);
            }
            if expired.new_handshake {
                debug!(peer = %peer.id, "no reply to data for 15 s, new handshake");
                self.sh.send_initiation(now, peer, false);
            }
        }
        self.reschedule_touched();
    }

    /// Bring `deadlines` in line with the timers of the peers the last input touched.
    fn reschedule_touched(&mut self) {
        while let Some(id) = self.sh.touched.pop() {
            self.reschedule(id);
        }
    }

    fn reschedule(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let next = peer.timers.next_deadline();
        crate::time::reschedule(&mut self.deadlines, id, &mut peer.scheduled, next);
    }

    // ----- outputs ----------------------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.sh.transmits.pop_front()
    }

    pub fn poll_received(&mut self) -> Option<Received> {
        self.sh.received.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.sh.events.pop_front()
    }

    /// The next deadline of any peer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    // ----- message handlers -------------------------------------------------------------

    /// mac1 always; under load also mac2, answering with a cookie reply when it is missing.
    fn check_macs(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) -> Result<(), DropReason> {
        if !self.cookies.check_mac1(msg) {
            return Err(DropReason::BadMac1);
        }
        if self.load.record(now) && !self.cookies.check_mac2(now, &mut self.sh.rng, msg, from) {
            let reply = self.cookies.make_reply(now, &mut self.sh.rng, msg, sender_index(msg), from);
            self.sh.transmits.push_back(Transmit { dst: from, payload: BytesMut::from(&reply[..]) });
            self.sh.stats.cookie_replies_sent += 1;
            return Err(DropReason::CookieRequired);
        }
        Ok(())
    }

    fn handle_initiation(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) -> Result<(), DropReason> {
        self.check_macs(now, from, msg)?;
        let mut hs = self.sh.noise.responder(&mut self.sh.rng).map_err(|_| DropReason::HandshakeFailed)?;
        let mut timestamp = [0u8; 64];
        let n = hs.read_message(&msg[INITIATION_NOISE], &mut timestamp).map_err(|_| DropReason::HandshakeFailed)?;
        if n != 12 {
            return Err(DropReason::HandshakeFailed);
        }
        let remote: [u8; 32] =
            hs.get_remote_static().and_then(|k| k.try_into().ok()).ok_or(DropReason::HandshakeFailed)?;
        let id = *self.by_key.get(&PublicKey(remote)).ok_or(DropReason::UnknownPeer)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
        self.sh.touched.push(id);
        let mut ts = Tai64n::default();
        ts.0.copy_from_slice(&timestamp[..12]);
        if peer.last_timestamp.is_some_and(|last| ts <= last) {
            return Err(DropReason::StaleTimestamp);
        }
        if peer.last_initiation_consumed.is_some_and(|at| now.saturating_duration_since(at) < INITIATIONS_MIN_INTERVAL)
        {
            return Err(DropReason::InitiationFlood);
        }
        hs.set_psk(2, peer.psk()).map_err(|_| DropReason::HandshakeFailed)?;
        let mut response = [0u8; RESPONSE_LEN];
        write_type(&mut response, MSG_RESPONSE);
        let local_index = self.sh.alloc_index(id);
        response[4..8].copy_from_slice(&local_index.to_le_bytes());
        response[8..12].copy_from_slice(&sender_index(msg).to_le_bytes());
        if hs.write_message(&[], &mut response[RESPONSE_NOISE]).is_err() {
            self.sh.by_index.remove(&local_index);
            return Err(DropReason::HandshakeFailed);
        }
        let (initiator_to_responder, responder_to_initiator) = noise::split(&mut hs);
        peer.cookie.stamp(now, &mut response);
        peer.last_timestamp = Some(ts);
        peer.last_initiation_consumed = Some(now);
        peer.config.endpoint = Some(from);
        let keypair =
            Keypair::new(&responder_to_initiator, &initiator_to_responder, local_index, sender_index(msg), now, false);
        for index in peer.install_responded(keypair) {
            self.sh.by_index.remove(&index);
        }
        self.sh.stats.initiations_accepted += 1;
        peer.timers.on_authenticated_received();
        peer.timers.on_session_derived(now);
        peer.timers.on_authenticated_sent();
        peer.timers.on_authenticated_traversal(now, peer.config.persistent_keepalive);
        self.sh.transmits.push_back(Transmit { dst: from, payload: BytesMut::from(&response[..]) });
        debug!(peer = %id, %from, "answered initiation");
        Ok(())
    }

    fn handle_response(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) -> Result<(), DropReason> {
        self.check_macs(now, from, msg)?;
        let receiver = read_u32(msg, 8);
        let id = *self.sh.by_index.get(&receiver).ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownIndex)?;
        self.sh.touched.push(id);
        let Some(mut pending) = peer.pending.take_if(|p| p.local_index == receiver) else {
            return Err(DropReason::UnexpectedResponse);
        };
        if pending.state.read_message(&msg[RESPONSE_NOISE], &mut []).is_err() {
            // snow rolls its state back on failure: the genuine response can still arrive.
            peer.pending = Some(pending);
            return Err(DropReason::HandshakeFailed);
        }
        let (initiator_to_responder, responder_to_initiator) = noise::split(&mut pending.state);
        let keypair = Keypair::new(
            &initiator_to_responder,
            &responder_to_initiator,
            pending.local_index,
            sender_index(msg),
            now,
            true,
        );
        for index in peer.install_initiated(keypair) {
            self.sh.by_index.remove(&index);
        }
        peer.config.endpoint = Some(from);
        peer.attempts_started = None;
        peer.timers.on_handshake_complete();
        peer.timers.on_session_derived(now);
        peer.timers.on_authenticated_received();
        peer.timers.on_authenticated_traversal(now, peer.config.persistent_keepalive);
        self.sh.stats.responses_accepted += 1;
        self.sh.session_established(now, peer, true);
        // The responder confirms the session on our first packet: send one even if idle.
        if peer.staged.is_empty() {
            self.sh.send_keepalive(now, peer);
        } else {
            self.sh.flush_staged(now, peer);
        }
        Ok(())
    }

    fn handle_cookie_reply(&mut self, now: Instant, msg: &[u8]) -> Result<(), DropReason> {
        let id = *self.sh.by_index.get(&read_u32(msg, 4)).ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownIndex)?;
        if !peer.cookie.consume_reply(now, msg) {
            return Err(DropReason::BadCookieReply);
        }
        self.sh.stats.cookie_replies_accepted += 1;
        debug!(peer = %id, "cookie stored");
        Ok(())
    }

    fn handle_data(&mut self, now: Instant, from: SocketAddr, mut buf: BytesMut) -> Result<(), DropReason> {
        let receiver = read_u32(&buf, 4);
        let counter = read_u64(&buf, 8);
        let id = *self.sh.by_index.get(&receiver).ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownIndex)?;
        self.sh.touched.push(id);
        let slot = peer.slot_of(receiver).ok_or(DropReason::UnknownIndex)?;
        let reject_after = self.sh.limits.1;
        let keypair = peer.keypair_mut(slot).ok_or(DropReason::UnknownIndex)?;
        if now.saturating_duration_since(keypair.created) >= REJECT_AFTER_TIME || counter >= reject_after {
            return Err(DropReason::SessionExpired);
        }
        keypair.open(counter, &mut buf).map_err(|e| match e {
            OpenError::Replay => DropReason::Replay,
            OpenError::Tag => DropReason::BadTag,
        })?;
        // Authenticated from here on.
        if slot == Slot::Next {
            if let Some(index) = peer.confirm_next() {
                self.sh.by_index.remove(&index);
            }
            self.sh.session_established(now, peer, false);
        }
        peer.config.endpoint = Some(from);
        peer.timers.on_authenticated_received();
        peer.timers.on_authenticated_traversal(now, peer.config.persistent_keepalive);
        self.sh.keep_key_fresh_on_receive(now, peer);
        if !peer.staged.is_empty() {
            self.sh.flush_staged(now, peer);
        }
        let plain_len = buf.len() - DATA_HEADER_LEN - TAG_LEN;
        if plain_len == 0 {
            self.sh.stats.keepalives_received += 1;
            return Ok(());
        }
        peer.timers.on_data_received(now);
        let addrs = IpHeader::parse(&buf[DATA_HEADER_LEN..DATA_HEADER_LEN + plain_len])
            .map_err(|_| DropReason::BadInnerPacket)?;
        if self.allowed_ips.lookup(addrs.src) != Some(id) {
            return Err(DropReason::InnerSourceNotAllowed);
        }
        buf.advance(DATA_HEADER_LEN);
        buf.truncate(addrs.total_len);
        peer.stats.rx_bytes += addrs.total_len as u64;
        self.sh.stats.data_received += 1;
        self.sh.received.push_back(Received { peer: id, packet: buf });
        Ok(())
    }
}

impl Shared {
    /// A fresh random local index, registered for `peer`.
    fn alloc_index(&mut self, peer: PeerId) -> u32 {
        loop {
            let index = self.rng.next_u32();
            if index != 0 && !self.by_index.contains_key(&index) {
                self.by_index.insert(index, peer);
                return index;
            }
        }
    }

    fn jitter(&mut self) -> Duration {
        Duration::from_millis(self.rng.below(REKEY_TIMEOUT_JITTER_MAX_MS))
    }

    fn session_established(&mut self, now: Instant, peer: &mut Peer, initiator: bool) {
        peer.stats.handshakes_completed += 1;
        peer.stats.last_handshake = Some(self.wall.at(now));
        self.stats.sessions_established += 1;
        self.events.push_back(Event::SessionEstablished { peer: peer.id, initiator });
        debug!(peer = %peer.id, initiator, "session established");
    }

    /// Send an initiation. A fresh attempt (`is_retry == false`) restarts the 90 s retry
    /// budget but is suppressed within 5 s of the previous initiation.
    fn send_initiation(&mut self, now: Instant, peer: &mut Peer, is_retry: bool) {
        if !is_retry {
            peer.attempts_started = Some(now);
            if peer.last_initiation_sent.is_some_and(|at| now.saturating_duration_since(at) < REKEY_TIMEOUT) {
                return;
            }
        }
        let Some(endpoint) = peer.config.endpoint else {
            trace!(peer = %peer.id, "no endpoint: cannot initiate");
            return;
        };
        if let Some(old) = peer.pending.take() {
            self.by_index.remove(&old.local_index);
        }
        let mut state = match self.noise.initiator(&mut self.rng, &peer.config.public_key, peer.psk()) {
            Ok(state) => state,
            Err(error) => {
                debug!(peer = %peer.id, %error, "cannot build initiation");
                return;
            }
        };
        let local_index = self.alloc_index(peer.id);
        let mut msg = [0u8; INITIATION_LEN];
        write_type(&mut msg, MSG_INITIATION);
        msg[4..8].copy_from_slice(&local_index.to_le_bytes());
        let timestamp = Tai64n::from_unix(self.wall.at(now));
        if state.write_message(&timestamp.0, &mut msg[INITIATION_NOISE]).is_err() {
            self.by_index.remove(&local_index);
            return;
        }
        peer.cookie.stamp(now, &mut msg);
        peer.pending = Some(PendingHandshake { state, local_index });
        peer.last_initiation_sent = Some(now);
        if peer.attempts_started.is_none() {
            peer.attempts_started = Some(now);
        }
        let jitter = self.jitter();
        peer.timers.on_initiation_sent(now, jitter);
        peer.timers.on_authenticated_sent();
        peer.timers.on_authenticated_traversal(now, peer.config.persistent_keepalive);
        self.stats.initiations_sent += 1;
        self.transmits.push_back(Transmit { dst: endpoint, payload: BytesMut::from(&msg[..]) });
        debug!(peer = %peer.id, retry = is_retry, "sent initiation");
    }

    /// Seal `buf` (headroom + packet) on the current session and queue it.
    fn send_data(&mut self, now: Instant, peer: &mut Peer, mut buf: BytesMut) -> Result<(), DropReason> {
        let endpoint = peer.config.endpoint.ok_or(DropReason::NoEndpoint)?;
        let keypair = peer.current.as_mut().ok_or(DropReason::NoEndpoint)?;
        let is_keepalive = buf.len() == DATA_HEADER_LEN;
        let plain_len = buf.len() - DATA_HEADER_LEN;
        keypair.seal(&mut buf);
        let needs_rekey = keypair.send_counter >= self.limits.0
            || (keypair.is_initiator && now.saturating_duration_since(keypair.created) >= REKEY_AFTER_TIME);
        self.transmits.push_back(Transmit { dst: endpoint, payload: buf });
        peer.stats.tx_bytes += plain_len as u64;
        if is_keepalive {
            self.stats.keepalives_sent += 1;
        } else {
            self.stats.data_sent += 1;
            peer.timers.on_data_sent(now, || self.jitter());
        }
        peer.timers.on_authenticated_sent();
        peer.timers.on_authenticated_traversal(now, peer.config.persistent_keepalive);
        if needs_rekey {
            self.send_initiation(now, peer, false);
        }
        Ok(())
    }

    fn can_send(&self, now: Instant, peer: &Peer) -> bool {
        peer.current.as_ref().is_some_and(|k| k.is_usable(now) && k.send_counter < self.limits.1)
    }

    /// Send an empty data message; without a usable session, start a handshake instead
    /// (a persistent keepalive must keep NAT mappings open even when keys expired).
    fn send_keepalive(&mut self, now: Instant, peer: &mut Peer) {
        if !self.can_send(now, peer) {
            self.send_initiation(now, peer, false);
            return;
        }
        let mut buf = BytesMut::with_capacity(DATA_HEADER_LEN + TAG_LEN);
        buf.resize(DATA_HEADER_LEN, 0);
        // A keepalive to a peer without an endpoint is simply not sent.
        let _ = self.send_data(now, peer, buf);
    }

    fn flush_staged(&mut self, now: Instant, peer: &mut Peer) {
        while self.can_send(now, peer) {
            let Some(buf) = peer.staged.pop_front() else { break };
            if self.send_data(now, peer, buf).is_err() {
                break;
            }
        }
    }

    /// The initiator of an old session starts a new handshake when it receives on it at
    /// 165 s, so a quiet sender does not hit REJECT_AFTER_TIME first.
    fn keep_key_fresh_on_receive(&mut self, now: Instant, peer: &mut Peer) {
        let stale = peer
            .current
            .as_ref()
            .is_some_and(|k| k.is_initiator && now.saturating_duration_since(k.created) >= REKEY_ON_RECEIVE_AFTER_TIME);
        if stale {
            self.send_initiation(now, peer, false);
        }
    }
}
