//! The node's whole input surface as one sequence: raw datagrams from the network, IP
//! packets that a real peer encrypts (so they reach the filter, the TCP stack and the TUN
//! path), packets from the TUN device and time advances, in any order. Must never panic,
//! and `poll_timeout` must move past `now` after `handle_timeout`.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mesh_core::ip::{Filter, FilterRule, PortRange};
use mesh_core::node::{NetmapPeer, Node, NodeConfig, SshServerConfig};
use mesh_core::rng::Rng;
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::{packet_buffer, Config, PeerConfig, PrivateKey, WireGuard};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::from_micros(1_000_000);
    let mut config = NodeConfig::new(PrivateKey::from_bytes([1; 32]), [100, 64, 0, 1].into(), "tail.mesh");
    // SSH composed in: the fuzzer's segments to port 22 reach the core's SSH sessions.
    config.ssh = Some(SshServerConfig::new(ed25519_dalek::SigningKey::from_bytes(&[42; 32])));
    config.tcp.buffer_size = 16 << 10;
    let Ok(mut node) = Node::new(config, [7; 32], now, UnixTime(Duration::from_secs(1_700_000_000))) else { return };
    let peer_addr = SocketAddr::from(([192, 0, 2, 2], 41641));
    node.set_netmap(
        now,
        vec![NetmapPeer {
            name: "beta".into(),
            public_key: PrivateKey::from_bytes([2; 32]).public_key(),
            endpoint: Some(peer_addr),
            mesh_v4: [100, 64, 0, 2].into(),
            mesh_v6: None,
            routes: vec![],
        }],
    );
    node.set_filter(
        now,
        Filter::new(vec![FilterRule {
            srcs: vec!["100.64.0.0/10".parse().unwrap_or_else(|e| panic!("{e}"))],
            dsts: vec![("100.64.0.0/10".parse().unwrap_or_else(|e| panic!("{e}")), PortRange::ALL)],
            protos: vec![],
        }]),
    );
    // The peer, a real WireGuard device with a session to the node; it routes everything
    // to the node, so any IP packet the fuzzer writes is encrypted and sent.
    let node_addr = SocketAddr::from(([192, 0, 2, 1], 41641));
    let unix = UnixTime(Duration::from_secs(1_700_000_000));
    let Ok(mut peer) = WireGuard::new(Config::new(PrivateKey::from_bytes([2; 32])), Rng::new([8; 32]), now, unix)
    else {
        return;
    };
    let mut to_node = PeerConfig::new(
        node.public_key(),
        vec!["0.0.0.0/0".parse().unwrap_or_else(|e| panic!("{e}")), "::/0".parse().unwrap_or_else(|e| panic!("{e}"))],
    );
    to_node.endpoint = Some(node_addr);
    let Ok(node_id) = peer.add_peer(now, to_node) else { return };
    let _ = peer.connect(now, node_id);
    let exchange = |node: &mut Node, peer: &mut WireGuard, now: Instant| {
        for _ in 0..4 {
            while let Some(t) = peer.poll_transmit() {
                node.handle_datagram(now, peer_addr, t.payload);
            }
            while let Some(t) = node.poll_transmit() {
                let _ = peer.handle_datagram(now, node_addr, t.payload);
            }
        }
        while peer.poll_received().is_some() {}
        while peer.poll_event().is_some() {}
    };
    exchange(&mut node, &mut peer, now);
    // Input: [op, len_hi, len_lo, bytes...]*
    let mut rest = data;
    while rest.len() >= 3 {
        let (op, len) = (rest[0], usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3));
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        match op % 4 {
            0 => node.handle_datagram(now, peer_addr, BytesMut::from(bytes)),
            1 => node.handle_tun_packet(now, packet_buffer(bytes)),
            2 => {
                let _ = peer.handle_packet(now, packet_buffer(bytes));
                exchange(&mut node, &mut peer, now);
            }
            _ => {
                now += Duration::from_millis(u64::from(bytes.first().copied().unwrap_or(1)) * 50);
                node.handle_timeout(now);
                peer.handle_timeout(now);
                assert!(node.poll_timeout().is_none_or(|at| at > now), "deadline did not move forward");
                exchange(&mut node, &mut peer, now);
            }
        }
        while node.poll_transmit().is_some() {}
        while node.poll_tun_packet().is_some() {}
        while node.poll_event().is_some() {}
    }
});
