//! Interoperability with boringtun (Cloudflare's userspace WireGuard), in process.
//!
//! boringtun reads `mock_instant`'s clock (thread-local), which we advance together with
//! our virtual clock, so its timers and ours see the same time.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey as BtPublic, StaticSecret};
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::{
    packet_buffer, Config, Event, IpPrefix, PeerConfig, PeerId, PrivateKey, PublicKey, WireGuard,
};
use mesh_tests::{ipv4_udp, EPOCH};
use mock_instant::MockClock;

const OURS: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const THEIRS: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

struct World {
    now: Instant,
    ours: WireGuard,
    our_key: PrivateKey,
    our_addr: SocketAddr,
    peer: PeerId,
    bt: Tunn,
    bt_secret: [u8; 32],
    bt_addr: SocketAddr,
    /// Payloads each side received through the tunnel.
    ours_got: Vec<Vec<u8>>,
    bt_got: Vec<Vec<u8>>,
    events: Vec<Event>,
    buf: Vec<u8>,
}

fn new_bt(secret: [u8; 32], our_public: &PublicKey) -> Tunn {
    Tunn::new(StaticSecret::from(secret), BtPublic::from(our_public.0), None, None, 7, None)
}

fn new_ours(
    key: &PrivateKey,
    now: Instant,
    bt_public: [u8; 32],
    bt_addr: SocketAddr,
    seed: u64,
) -> (WireGuard, PeerId) {
    let unix = UnixTime(EPOCH + Duration::from_micros(now.as_micros()));
    let mut wg = WireGuard::new(Config::new(key.clone()), mesh_sim::seeded_rng(seed), now, unix)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut pc = PeerConfig::new(PublicKey(bt_public), vec![IpPrefix::host(IpAddr::V4(THEIRS))]);
    pc.endpoint = Some(bt_addr);
    let peer = wg.add_peer(now, pc).unwrap_or_else(|e| panic!("{e}"));
    (wg, peer)
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = mesh_sim::seeded_rng(seed);
        let our_key = PrivateKey::from_bytes(rng.gen_bytes());
        let bt_secret: [u8; 32] = rng.gen_bytes();
        let bt_public = BtPublic::from(&StaticSecret::from(bt_secret)).to_bytes();
        let now = Instant::from_micros(1_000_000);
        let bt_addr = SocketAddr::from(([192, 0, 2, 2], 51820));
        let (ours, peer) = new_ours(&our_key, now, bt_public, bt_addr, seed);
        let bt = new_bt(bt_secret, &our_key.public_key());
        World {
            now,
            ours,
            our_addr: SocketAddr::from(([192, 0, 2, 1], 51820)),
            our_key,
            peer,
            bt,
            bt_secret,
            bt_addr,
            ours_got: Vec::new(),
            bt_got: Vec::new(),
            events: Vec::new(),
            buf: vec![0u8; 65_536],
        }
    }

    /// Hand a datagram from boringtun to us.
    fn deliver_to_ours(&mut self, datagram: &[u8]) {
        let _ = self.ours.handle_datagram(self.now, self.bt_addr, bytes::BytesMut::from(datagram));
        self.pump();
    }

    /// Deliver everything we have to send to boringtun, and its answers back, to a fixed point.
    fn pump(&mut self) {
        while let Some(e) = self.ours.poll_event() {
            self.events.push(e);
        }
        while let Some(r) = self.ours.poll_received() {
            self.ours_got.push(r.packet[28..].to_vec());
        }
        while let Some(t) = self.ours.poll_transmit() {
            assert_eq!(t.dst, self.bt_addr);
            let mut replies = Vec::new();
            let mut buf = std::mem::take(&mut self.buf);
            let mut result = self.bt.decapsulate(Some(self.our_addr.ip()), &t.payload, &mut buf);
            loop {
                match result {
                    TunnResult::WriteToNetwork(d) => {
                        replies.push(d.to_vec());
                        // boringtun may hold queued packets: flush them.
                        result = self.bt.decapsulate(None, &[], &mut buf);
                        continue;
                    }
                    TunnResult::WriteToTunnelV4(p, _) => self.bt_got.push(p[28..].to_vec()),
                    TunnResult::WriteToTunnelV6(..) | TunnResult::Done => {}
                    TunnResult::Err(e) => panic!("boringtun rejected our datagram: {e:?}"),
                }
                break;
            }
            self.buf = buf;
            for r in replies {
                self.deliver_to_ours(&r);
            }
        }
    }

    fn ours_send(&mut self, payload: &[u8]) {
        let p = ipv4_udp(OURS, THEIRS, payload);
        let _ = self.ours.handle_packet(self.now, packet_buffer(&p));
        self.pump();
    }

    fn bt_send(&mut self, payload: &[u8]) {
        let p = ipv4_udp(THEIRS, OURS, payload);
        let mut buf = std::mem::take(&mut self.buf);
        let out = match self.bt.encapsulate(&p, &mut buf) {
            TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
            TunnResult::Err(e) => panic!("boringtun encapsulate: {e:?}"),
            _ => None,
        };
        self.buf = buf;
        if let Some(d) = out {
            self.deliver_to_ours(&d);
        }
    }

    /// Advance both clocks, running both sides' timers every 100 ms.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let step = Duration::from_millis(100);
            self.now += step;
            MockClock::advance(step);
            self.ours.handle_timeout(self.now);
            self.pump();
            let mut buf = std::mem::take(&mut self.buf);
            let out = match self.bt.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(d) => Some(d.to_vec()),
                _ => None,
            };
            self.buf = buf;
            if let Some(d) = out {
                self.deliver_to_ours(&d);
            }
        }
    }

    fn sessions(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Event::SessionEstablished { .. })).count()
    }
}

#[test]
fn we_initiate_and_data_flows_both_ways() {
    let mut w = World::new(1);
    w.ours_send(b"hello boringtun");
    assert_eq!(w.bt_got, vec![b"hello boringtun".to_vec()]);
    w.bt_send(b"hello meshd");
    assert_eq!(w.ours_got, vec![b"hello meshd".to_vec()]);
    assert!(w.events.contains(&Event::SessionEstablished { peer: w.peer, initiator: true }));
}

#[test]
fn boringtun_initiates_and_data_flows_both_ways() {
    let mut w = World::new(2);
    w.bt_send(b"first from boringtun");
    // boringtun queued the packet behind its handshake and flushed it after our response.
    assert_eq!(w.ours_got, vec![b"first from boringtun".to_vec()]);
    assert!(w.events.contains(&Event::SessionEstablished { peer: w.peer, initiator: false }));
    w.ours_send(b"reply");
    assert_eq!(w.bt_got, vec![b"reply".to_vec()]);
}

#[test]
fn rekeys_after_120s_with_traffic_flowing() {
    for (seed, we_initiate) in [(3, true), (4, false)] {
        let mut w = World::new(seed);
        if we_initiate {
            w.ours_send(b"open");
        } else {
            w.bt_send(b"open");
        }
        for i in 0..400u32 {
            w.ours_send(&i.to_be_bytes());
            w.bt_send(&i.to_be_bytes());
            w.advance(Duration::from_secs(1));
        }
        // 400 s of traffic: at least three rekeys, and nothing lost on the way.
        assert!(w.sessions() >= 4, "sessions: {} (we initiate: {we_initiate})", w.sessions());
        assert_eq!(w.bt_got.len(), 400 + usize::from(we_initiate), "we initiate: {we_initiate}");
        assert_eq!(w.ours_got.len(), 400 + usize::from(!we_initiate), "we initiate: {we_initiate}");
    }
}

#[test]
fn either_side_restarts_and_the_tunnel_recovers() {
    let mut w = World::new(5);
    w.ours_send(b"before");
    w.bt_send(b"before");

    // We restart: same key, fresh state, a later wall clock. boringtun accepts our new
    // initiation and the tunnel works in both directions.
    w.advance(Duration::from_secs(3));
    let bt_public = BtPublic::from(&StaticSecret::from(w.bt_secret)).to_bytes();
    let (ours, peer) = new_ours(&w.our_key, w.now, bt_public, w.bt_addr, 55);
    w.ours = ours;
    w.peer = peer;
    w.ours_send(b"after our restart");
    assert_eq!(w.bt_got.last(), Some(&b"after our restart".to_vec()));
    w.bt_send(b"answer");
    assert_eq!(w.ours_got.last(), Some(&b"answer".to_vec()));

    // boringtun restarts. Its timestamps come from the real clock, so let real time pass.
    std::thread::sleep(Duration::from_millis(100));
    w.bt = new_bt(w.bt_secret, &w.our_key.public_key());
    w.bt_send(b"after boringtun restart");
    assert_eq!(w.ours_got.last(), Some(&b"after boringtun restart".to_vec()));
    w.ours_send(b"welcome back");
    assert_eq!(w.bt_got.last(), Some(&b"welcome back".to_vec()));
}
