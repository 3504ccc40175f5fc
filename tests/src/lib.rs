//! Support for the cross-crate tests in `tests/tests/`: a two-device harness with a wire the
//! test controls message by message, and IP packet builders.
//!
//! The simulator (`mesh-sim`) is the tool for networks with faults; this harness is for
//! tests that need to hold, drop, replay or forge individual messages between two devices.

pub mod ssh_client;
pub mod ssh_harness;
pub mod tailnet_fixture;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::{
    messages, packet_buffer, Config, Event, IpPrefix, PeerConfig, PeerId, PrivateKey, Received, WireGuard,
};

/// Virtual wall-clock epoch of the harness (2023-11-14).
pub const EPOCH: Duration = Duration::from_secs(1_700_000_000);

/// An IPv4/UDP packet from `src` to `dst` (ports 4000) carrying `payload`.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    mesh_core::ip::build::udp_v4(src, 4000, dst, 4000, payload)
}

/// A cheap deterministic byte stream (xorshift64) for bulk-transfer tests: a writer and a
/// checker seeded alike produce the same bytes as long as both fill in multiples of 8.
#[derive(Clone, Debug)]
pub struct Pattern(pub u64);

impl Pattern {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// One side of a [`Pair`].
#[derive(Debug)]
pub struct Side {
    pub wg: WireGuard,
    pub key: PrivateKey,
    pub underlay: SocketAddr,
    pub mesh: Ipv4Addr,
    /// The other side, as a peer of this one.
    pub peer: PeerId,
    pub received: Vec<Received>,
    pub events: Vec<(Instant, Event)>,
}

/// A datagram on the harness wire.
#[derive(Debug, Clone)]
pub struct Wire {
    pub at: Instant,
    /// 0 = sent by `a`, 1 = sent by `b`.
    pub from: usize,
    pub dst: SocketAddr,
    pub payload: BytesMut,
}

impl Wire {
    /// The message type byte (1 initiation, 2 response, 3 cookie, 4 data).
    pub fn kind(&self) -> u8 {
        self.payload.first().copied().unwrap_or(0)
    }

    pub fn is_keepalive(&self) -> bool {
        self.kind() == messages::MSG_DATA && self.payload.len() == messages::DATA_MIN_LEN
    }
}

/// Two devices that are each other's peer, joined by a zero-latency wire the test controls.
#[derive(Debug)]
pub struct Pair {
    pub now: Instant,
    pub sides: [Side; 2],
    /// `up[i]`: whether datagrams sent by side `i` are delivered.
    pub up: [bool; 2],
    /// Every datagram either side sent, delivered or not, in order.
    pub log: Vec<Wire>,
}

fn key(seed: u8) -> PrivateKey {
    let mut r = mesh_sim::seeded_rng(u64::from(seed) + 1000);
    PrivateKey::from_bytes(r.gen_bytes())
}

impl Pair {
    /// Two devices with default configuration; both know the other's endpoint.
    pub fn new(seed: u64) -> Self {
        Self::with_configs(seed, |c| c, |c| c)
    }

    /// Two devices whose configurations the caller may adjust.
    pub fn with_configs(seed: u64, fa: impl FnOnce(Config) -> Config, fb: impl FnOnce(Config) -> Config) -> Self {
        let now = Instant::from_micros(1_000_000);
        let mut rng = mesh_sim::seeded_rng(seed);
        let keys = [key(1), key(2)];
        let underlay: [SocketAddr; 2] =
            [SocketAddr::from(([192, 0, 2, 1], 51820)), SocketAddr::from(([192, 0, 2, 2], 51820))];
        let mesh = [Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2)];
        let configs = [fa(Config::new(keys[0].clone())), fb(Config::new(keys[1].clone()))];
        let sides = [0usize, 1].map(|i| {
            let other = 1 - i;
            let mut wg = WireGuard::new(configs[i].clone(), rng.fork(), now, UnixTime(EPOCH))
                .unwrap_or_else(|e| panic!("device: {e}"));
            let mut pc = PeerConfig::new(keys[other].public_key(), vec![IpPrefix::host(mesh[other].into())]);
            pc.endpoint = Some(underlay[other]);
            let peer = wg.add_peer(now, pc).unwrap_or_else(|e| panic!("peer: {e}"));
            Side {
                wg,
                key: keys[i].clone(),
                underlay: underlay[i],
                mesh: mesh[i],
                peer,
                received: Vec::new(),
                events: Vec::new(),
            }
        });
        Pair { now, sides, up: [true, true], log: Vec::new() }
    }

    /// Side `i` sends an IP packet to the other side's mesh address.
    pub fn send(&mut self, i: usize, payload: &[u8]) {
        let packet = ipv4_udp(self.sides[i].mesh, self.sides[1 - i].mesh, payload);
        let _ = self.sides[i].wg.handle_packet(self.now, packet_buffer(&packet));
        self.pump();
    }

    /// Drain both sides' outputs and deliver datagrams (to a fixed point).
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..2 {
                while let Some(t) = self.sides[i].wg.poll_transmit() {
                    moved = true;
                    self.log.push(Wire { at: self.now, from: i, dst: t.dst, payload: t.payload.clone() });
                    if self.up[i] && t.dst == self.sides[1 - i].underlay {
                        let from = self.sides[i].underlay;
                        let _ = self.sides[1 - i].wg.handle_datagram(self.now, from, t.payload);
                    }
                }
                while let Some(r) = self.sides[i].wg.poll_received() {
                    self.sides[i].received.push(r);
                }
                while let Some(e) = self.sides[i].wg.poll_event() {
                    self.sides[i].events.push((self.now, e));
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Advance virtual time to `until`, firing timers at their deadlines on the way.
    pub fn advance_to(&mut self, until: Instant) {
        loop {
            let next = self.sides.iter().filter_map(|s| s.wg.poll_timeout()).min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    for s in &mut self.sides {
                        s.wg.handle_timeout(self.now);
                    }
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = until;
        for s in &mut self.sides {
            s.wg.handle_timeout(self.now);
        }
        self.pump();
    }

    /// Advance virtual time by `d`.
    pub fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// Deliver a datagram to side `to` as if sent by the other side.
    pub fn inject(&mut self, to: usize, payload: BytesMut) -> Result<(), mesh_core::wireguard::DropReason> {
        let from = self.sides[1 - to].underlay;
        let r = self.sides[to].wg.handle_datagram(self.now, from, payload);
        self.pump();
        r
    }

    /// Datagrams of `kind` sent by side `from`, with their times.
    pub fn sent(&self, from: usize, kind: u8) -> Vec<Instant> {
        self.log.iter().filter(|w| w.from == from && w.kind() == kind).map(|w| w.at).collect()
    }

    /// Seconds since the harness start (t = 0 is `Instant` 1 s).
    pub fn secs(&self, at: Instant) -> f64 {
        (at.as_micros() as f64 - 1e6) / 1e6
    }
}
