//! The node's whole input surface as one sequence: raw datagrams from the network, IP
//! packets that a real peer encrypts (so they reach the filter, the TCP stack with SSH on
//! port 22, and the TUN path), packets from the TUN device and time advances, in any order.
//! Must never panic, and `poll_timeout` must move past `now` after `handle_timeout`.
//!
//! The node and its peer are built once per process and live on across inputs: setting
//! them up takes a dozen X25519 operations (keys, the static-static secrets, a handshake),
//! which under the fuzzer's instrumentation held the target to ~100 inputs/s. A long-lived
//! node is also what production runs. The price: an input may depend on the state earlier
//! inputs left (flows, connections, sessions, the clock); a crash artifact is then
//! reproduced by replaying the corpus in order, and the fixture is rebuilt every
//! `REBUILD_EVERY` inputs to keep that history short.
#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mesh_core::ip::{Filter, FilterRule, PortRange};
use mesh_core::node::{NetmapPeer, Node, NodeConfig, SshServerConfig};
use mesh_core::rng::Rng;
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::{packet_buffer, Config, PeerConfig, PrivateKey, WireGuard};

const REBUILD_EVERY: u32 = 2000;

/// The node under test and a real WireGuard peer with a session to it.
struct Fixture {
    node: Node,
    peer: WireGuard,
    now: Instant,
    runs: u32,
}

fn node_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 41641))
}

fn peer_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 2], 41641))
}

impl Fixture {
    fn new() -> Option<Self> {
        let now = Instant::from_micros(1_000_000);
        let unix = UnixTime(Duration::from_secs(1_700_000_000));
        let mut config = NodeConfig::new(PrivateKey::from_bytes([1; 32]), [100, 64, 0, 1].into(), "tail.mesh");
        // SSH composed in: the fuzzer's segments to port 22 reach the core's SSH sessions.
        config.ssh = Some(SshServerConfig::new(ed25519_dalek::SigningKey::from_bytes(&[42; 32])));
        config.tcp.buffer_size = 16 << 10;
        let mut node = Node::new(config, [7; 32], now, unix).ok()?;
        node.set_netmap(
            now,
            vec![NetmapPeer {
                name: "beta".into(),
                public_key: PrivateKey::from_bytes([2; 32]).public_key(),
                endpoint: Some(peer_addr()),
                mesh_v4: [100, 64, 0, 2].into(),
                mesh_v6: None,
                routes: vec![],
            }],
        );
        node.set_filter(
            now,
            Filter::new(vec![FilterRule {
                srcs: vec!["100.64.0.0/10".parse().ok()?].into(),
                dsts: vec![("100.64.0.0/10".parse().ok()?, PortRange::ALL)],
                protos: vec![],
            }]),
        );
        // The peer routes everything to the node, so any IP packet the fuzzer writes is
        // encrypted and sent.
        let mut peer =
            WireGuard::new(Config::new(PrivateKey::from_bytes([2; 32])), Rng::new([8; 32]), now, unix).ok()?;
        let mut to_node = PeerConfig::new(node.public_key(), vec!["0.0.0.0/0".parse().ok()?, "::/0".parse().ok()?]);
        to_node.endpoint = Some(node_addr());
        let node_id = peer.add_peer(now, to_node).ok()?;
        let _ = peer.connect(now, node_id);
        let mut fixture = Self { node, peer, now, runs: 0 };
        fixture.exchange();
        Some(fixture)
    }

    /// Let the two sides talk until quiet (handshakes, replies).
    fn exchange(&mut self) {
        let now = self.now;
        for _ in 0..4 {
            while let Some(t) = self.peer.poll_transmit() {
                self.node.handle_datagram(now, peer_addr(), t.payload);
            }
            while let Some(t) = self.node.poll_transmit() {
                let _ = self.peer.handle_datagram(now, node_addr(), t.payload);
            }
        }
        while self.peer.poll_received().is_some() {}
        while self.peer.poll_event().is_some() {}
    }

    /// Input: [op, len_hi, len_lo, bytes...]*
    fn run(&mut self, data: &[u8]) {
        let mut rest = data;
        while rest.len() >= 3 {
            let (op, len) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3));
            let bytes = &rest[3..3 + len];
            rest = &rest[3 + len..];
            let now = self.now;
            match op % 4 {
                0 => self.node.handle_datagram(now, peer_addr(), BytesMut::from(bytes)),
                1 => self.node.handle_tun_packet(now, packet_buffer(bytes)),
                2 => {
                    let _ = self.peer.handle_packet(now, packet_buffer(bytes));
                    self.exchange();
                }
                _ => {
                    self.now += Duration::from_millis(u64::from(bytes.first().copied().unwrap_or(1)) * 50);
                    let now = self.now;
                    self.node.handle_timeout(now);
                    self.peer.handle_timeout(now);
                    assert!(self.node.poll_timeout().is_none_or(|at| at > now), "deadline did not move forward");
                    self.exchange();
                }
            }
            while self.node.poll_transmit().is_some() {}
            while self.node.poll_tun_packet().is_some() {}
            while self.node.poll_event().is_some() {}
        }
    }
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|f| f.runs >= REBUILD_EVERY) {
            *slot = Fixture::new();
        }
        let Some(fixture) = slot.as_mut() else { return };
        fixture.runs += 1;
        fixture.run(data);
    });
});
