//! Two runtimes in this process without TUN devices (no root needed), over loopback UDP:
//! the event loop's timers (persistent keepalive) start a WireGuard handshake, which
//! completes in both directions through real sockets.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mesh_core::ip::Filter;
use mesh_core::node::{NetmapPeer, NodeConfig, PeerOptions};
use mesh_core::wireguard::{PrivateKey, PublicKey};
use meshd::runtime::{Runtime, RuntimeConfig};

fn config(
    key: &PrivateKey,
    addr: Ipv4Addr,
    peer: PublicKey,
    peer_addr: Ipv4Addr,
    endpoint: Option<SocketAddr>,
) -> RuntimeConfig {
    RuntimeConfig {
        node: NodeConfig::new(key.clone(), addr, "test"),
        peers: vec![NetmapPeer {
            name: "peer".into(),
            public_key: peer,
            endpoint,
            mesh_v4: peer_addr,
            mesh_v6: None,
            routes: vec![],
        }],
        peer_options: vec![(
            peer,
            PeerOptions { preshared_key: None, persistent_keepalive: Some(Duration::from_secs(1)) },
        )],
        filter: Filter::deny_all(),
        listen_port: 0,
        tun: None,
    }
}

#[test]
fn two_userspace_runtimes_complete_a_handshake_over_loopback() {
    let (key_a, key_b) = (PrivateKey::from_bytes([11; 32]), PrivateKey::from_bytes([22; 32]));
    let (addr_a, addr_b) = (Ipv4Addr::new(100, 64, 9, 1), Ipv4Addr::new(100, 64, 9, 2));
    let a = Runtime::new(config(&key_a, addr_a, key_b.public_key(), addr_b, None)).expect("runtime a");
    let port_a = a.udp_port().expect("a's port");
    let endpoint = SocketAddr::from((Ipv4Addr::LOCALHOST, port_a));
    let b = Runtime::new(config(&key_b, addr_b, key_a.public_key(), addr_a, Some(endpoint))).expect("runtime b");
    let (stop_a, stop_b) = (a.stopper(), b.stopper());
    let run = |mut rt: Runtime| {
        std::thread::spawn(move || {
            rt.run().expect("run");
            rt
        })
    };
    let (ta, tb) = (run(a), run(b));
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    stop_a.stop();
    stop_b.stop();
    let (a, b) = (ta.join().expect("a"), tb.join().expect("b"));
    assert!(started.elapsed() < Duration::from_secs(2), "a stopper ends run promptly");
    for (rt, peer, name) in [(&a, key_b.public_key(), "a"), (&b, key_a.public_key(), "b")] {
        let id = rt.node().peer_id(&peer).expect("peer id");
        let status = rt.node().wireguard().peer_status(id).expect("status");
        assert!(status.stats.handshakes_completed >= 1, "{name}: {status:?}");
        let m = rt.metrics();
        assert!(m.udp_rx.packets >= 2 && m.udp_tx.packets >= 2, "{name}: {m:?}");
        assert!(m.timers >= 1, "{name}: keepalive timers ran");
    }
    // B learned nothing it was not told; A learned B's endpoint from the authenticated
    // handshake (roaming).
    let id = a.node().peer_id(&key_b.public_key()).expect("id");
    let learned = a.node().wireguard().peer_status(id).and_then(|s| s.endpoint).expect("endpoint");
    assert_eq!(learned.ip(), std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
}
