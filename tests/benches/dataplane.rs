//! Node data-plane benchmarks (BENCHMARKS.md has figures and commands):
//! - `filter/established`: parse an inbound packet and find its flow (the per-packet cost
//!   once a flow is tracked). `filter/new_flow_1000_rules`: parse, scan 1000 rules (the
//!   match is the last one) and track the new flow.
//! - `pipeline/tcp`: bytes from an application on node A through A's smoltcp, A's
//!   WireGuard, B's WireGuard and B's smoltcp to an application on B, one thread, in
//!   memory. Baseline `pipeline/seal_open_bound`: sealing and opening the same number of
//!   full-size segments with the raw AEAD, the crypto-only ceiling of that pipeline.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mesh_core::ip::{Filter, FilterRule, FlowKey, FlowTable, Origin, PacketInfo, PortRange};
use mesh_core::node::{NetmapPeer, Node, NodeConfig, NodeEvent};
use mesh_core::tcp::TcpEvent;
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::{IpPrefix, PrivateKey};
use mesh_tests::ipv4_udp;

fn rules(n: usize) -> Vec<FilterRule> {
    (0..n)
        .map(|i| FilterRule {
            srcs: vec![IpPrefix::host(IpAddr::V4(Ipv4Addr::new(100, 65, (i / 256) as u8, (i % 256) as u8)))].into(),
            dsts: vec![(IpPrefix::host(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1))), PortRange::single(22))],
            protos: vec![],
        })
        .collect()
}

fn filter(c: &mut Criterion) {
    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(1));
    let mut rs = rules(999);
    rs.push(FilterRule {
        srcs: vec!["100.64.0.2/32".parse().unwrap_or_else(|e| panic!("{e}"))].into(),
        dsts: vec![("100.64.0.1/32".parse().unwrap_or_else(|e| panic!("{e}")), PortRange::single(4000))],
        protos: vec![],
    });
    let filter = Filter::new(rs);
    let packet = ipv4_udp(Ipv4Addr::new(100, 64, 0, 2), Ipv4Addr::new(100, 64, 0, 1), &[0u8; 100]);
    let now = Instant::ZERO;

    let mut flows = FlowTable::new(FlowTable::DEFAULT_CAPACITY, [5; 16]);
    let info = PacketInfo::parse(&packet).unwrap_or_else(|e| panic!("{e}"));
    flows.insert(now, FlowKey::inbound(&info), Origin::Remote, None);
    group.bench_function("established", |b| {
        b.iter(|| {
            let info = PacketInfo::parse(std::hint::black_box(&packet)).ok();
            let key = info.map(|i| FlowKey::inbound(&i));
            assert!(key.is_some_and(|k| flows.touch(now, &k).is_some()));
        })
    });

    group.bench_function("new_flow_1000_rules", |b| {
        b.iter_batched(
            || FlowTable::new(16, [5; 16]),
            |mut flows| {
                let info = PacketInfo::parse(std::hint::black_box(&packet)).ok();
                let allowed = info.filter(|i| filter.allows(i));
                assert!(allowed.is_some());
                if let Some(i) = allowed {
                    flows.insert(now, FlowKey::inbound(&i), Origin::Remote, None);
                }
                flows
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Two nodes back to back, B serving a TCP port in the core and allowing A; returns them and the
/// connection ids (A's client side, B's accepted side).
/// The port B serves.
const SERVICE: u16 = 5001;

fn connected_pair() -> (Vec<Node>, mesh_core::tcp::ConnId, mesh_core::tcp::ConnId, Instant) {
    let now = Instant::from_micros(1_000_000);
    let addr = |i: usize| Ipv4Addr::new(100, 64, 0, i as u8 + 1);
    let underlay = |i: usize| SocketAddr::from(([192, 0, 2, i as u8 + 1], 41641));
    let key = |i: usize| PrivateKey::from_bytes([i as u8 + 1; 32]);
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| {
            let mut c = NodeConfig::new(key(i), addr(i), "tail.mesh");
            if i == 1 {
                c.tcp_services = vec![SERVICE];
            }
            Node::new(c, mesh_sim::seed_material(i as u64), now, UnixTime(Duration::from_secs(1_700_000_000)))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        let o = 1 - i;
        node.set_netmap(
            now,
            vec![NetmapPeer {
                name: format!("n{o}"),
                public_key: key(o).public_key(),
                endpoint: Some(underlay(o)),
                mesh_v4: addr(o),
                mesh_v6: None,
                routes: vec![],
            }],
        );
    }
    nodes[1].set_filter(
        now,
        Filter::new(vec![FilterRule {
            srcs: vec![IpPrefix::host(IpAddr::V4(addr(0)))].into(),
            dsts: vec![(IpPrefix::host(IpAddr::V4(addr(1))), PortRange::ALL)],
            protos: vec![],
        }]),
    );
    let client =
        nodes[0].tcp_connect(now, SocketAddr::new(IpAddr::V4(addr(1)), SERVICE)).unwrap_or_else(|e| panic!("{e}"));
    let mut server = None;
    pump(&mut nodes, now, &mut |e| {
        if let NodeEvent::Tcp(TcpEvent::Accepted { conn, .. }) = e {
            server = Some(conn);
        }
    });
    (nodes, client, server.unwrap_or_else(|| panic!("not accepted")), now)
}

fn pump(nodes: &mut [Node], now: Instant, on_event: &mut impl FnMut(NodeEvent)) {
    let underlay = |i: usize| SocketAddr::from(([192, 0, 2, i as u8 + 1], 41641));
    loop {
        let mut moved = false;
        for i in 0..2 {
            while let Some(t) = nodes[i].poll_transmit() {
                moved = true;
                nodes[1 - i].handle_datagram(now, underlay(i), t.payload);
            }
            while let Some(e) = nodes[i].poll_event() {
                on_event(e);
            }
        }
        if !moved {
            break;
        }
    }
}

fn pipeline(c: &mut Criterion) {
    const CHUNK: usize = 1 << 20;
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    group.measurement_time(Duration::from_secs(6));

    let (mut nodes, client, server, mut now) = connected_pair();
    let data = vec![0x5au8; 64 << 10];
    let mut sink = vec![0u8; 256 << 10];
    group.bench_function("tcp", |b| {
        b.iter(|| {
            let mut sent = 0;
            let mut received = 0;
            while received < CHUNK {
                if sent < CHUNK {
                    let want = (CHUNK - sent).min(data.len());
                    sent += nodes[0].tcp_send(now, client, &data[..want]).unwrap_or(0);
                }
                pump(&mut nodes, now, &mut |_| {});
                loop {
                    let n = nodes[1].tcp_recv(now, server, &mut sink).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    received += n;
                }
                pump(&mut nodes, now, &mut |_| {});
                // Let delayed work (if any) run without waiting in real time.
                now += Duration::from_micros(10);
                for n in nodes.iter_mut() {
                    n.handle_timeout(now);
                }
            }
        })
    });

    // The same bytes as full-size segments (MTU 1280: 1240 bytes of payload + 40 of
    // headers), sealed and opened once each with the raw AEAD.
    let aead = ChaCha20Poly1305::new(&[7u8; 32].into());
    let segments = CHUNK.div_ceil(1240);
    let mut counter = 0u64;
    group.bench_function("seal_open_bound", |b| {
        b.iter_batched(
            || vec![0u8; 1280],
            |mut buf| {
                for _ in 0..segments {
                    counter += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&counter.to_le_bytes());
                    let tag = aead.encrypt_in_place_detached(&nonce.into(), &[], &mut buf).unwrap_or_default();
                    let ok = aead.decrypt_in_place_detached(&nonce.into(), &[], &mut buf, &tag).is_ok();
                    assert!(ok);
                }
                buf
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, filter, pipeline);
criterion_main!(benches);
