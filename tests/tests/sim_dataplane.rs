//! The composed data plane in the simulator (issue 3, item 6): nodes run the full
//! `mesh_core::node::Node` (WireGuard, packet filter with flow tracking, the userspace TCP
//! stack, MagicDNS) over simulated links. Seeds come from `MESHSIM_SEED` when set, so a
//! failure can be replayed exactly; a failing check prints the seed and the command to rerun.
//! Each test prints the virtual and wall time it took (`--nocapture` shows them).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mesh_core::ip::build::{udp_v4, TcpSegment};
use mesh_core::ip::{Filter, FilterRule, PacketInfo, PortRange, Proto};
use mesh_core::tcp::TcpConfig;
use mesh_core::wireguard::{DropReason, IpPrefix};
use mesh_sim::SINK_PORT;
use mesh_sim::{seed_from_env, sim_assert, LinkConfig, NodeConfig, NodeId, TransferError, World};
use smoltcp::wire::{Ipv4Packet, TcpControl, TcpPacket};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[allow(clippy::disallowed_methods)] // wall time for the report, outside the world
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// `nodes` nodes in a full mesh over `link`; the nodes in `ssh` serve SSH in the core. No
/// background traffic: only what the test sends.
fn build(seed: u64, link: LinkConfig, nodes: usize, ssh: &[usize]) -> World {
    build_with(seed, link, (0..nodes).map(|i| NodeConfig::default().with_sink(ssh.contains(&i))).collect())
}

/// A full mesh of nodes with these configurations.
fn build_with(seed: u64, link: LinkConfig, configs: Vec<NodeConfig>) -> World {
    let mut world = World::new(seed, link);
    for config in configs {
        world.add_node_with(config).unwrap_or_else(|e| panic!("add node: {e}"));
    }
    world.connect_full_mesh().unwrap_or_else(|e| panic!("mesh: {e}"));
    world.set_rerun_hint(format!("MESHSIM_SEED={seed} cargo test --release -p mesh-tests --test sim_dataplane"));
    world
}

fn host(node: NodeId) -> IpPrefix {
    IpPrefix::host(IpAddr::V4(mesh(node)))
}

fn mesh(node: NodeId) -> Ipv4Addr {
    mesh_sim::network::mesh_addr(node)
}

/// `src` may open connections to `dst` on `ports`.
fn allow(src: NodeId, dst: NodeId, ports: PortRange) -> FilterRule {
    FilterRule { srcs: vec![host(src)].into(), dsts: vec![(host(dst), ports)], protos: vec![] }
}

fn tcp_packet(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
) -> Vec<u8> {
    TcpSegment { src, src_port: sport, dst, dst_port: dport, control, seq, ack }.to_packet()
}

/// TCP packets captured at `node`'s TUN side: (info, sequence number).
fn tun_tcp(world: &World, node: NodeId) -> Vec<(PacketInfo, u32)> {
    world
        .node(node)
        .tun_captured()
        .filter_map(|(_, p)| {
            let info = PacketInfo::parse(p).ok().filter(|i| i.proto == Proto::Tcp)?;
            let ip = Ipv4Packet::new_checked(&p[..]).ok()?;
            let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
            Some((info, tcp.seq_number().0 as u32))
        })
        .collect()
}

/// Stream `bytes` from node 0 to node 1's port 22 over `link` (30 ms RTT) and check that
/// they arrive byte-exact within `limit` of virtual time; print the figures.
fn bulk_transfer(seed: u64, link: LinkConfig, bytes: u64, limit: Duration, what: &str) {
    let mut world = build(seed, link, 2, &[1]);
    let (a, b) = (NodeId(0), NodeId(1));
    let started = wall_clock();
    let id = world.open_tcp(a, b, SINK_PORT, bytes).unwrap_or_else(|e| world.fail(e));
    let end = world.now() + limit;
    while world.now() < end {
        world.run_for(Duration::from_secs(1));
        let done = world.accepted_for(id).is_some_and(|c| c.closed_at.is_some() || !c.matched);
        if done && world.transfer(id).closed_at.is_some() {
            break;
        }
    }
    let wall = started.elapsed();
    let t = world.transfer(id).clone();
    let Some(c) = world.accepted_for(id).cloned() else { world.fail("the transfer was never accepted") };
    let stats = world.stats();
    let figures = format!(
        "{what}: {} of {bytes} bytes after {:.1} s virtual, {:.2} s wall; {} datagrams, {} lost, {} reordered",
        c.payload_received(),
        world.elapsed().as_secs_f64(),
        wall.as_secs_f64(),
        stats.datagrams_sent,
        stats.datagrams_lost(),
        world.network().direction(a, b).stats.reordered + world.network().direction(b, a).stats.reordered,
    );
    println!("{figures}");
    sim_assert!(world, c.matched, "content mismatch after {} bytes", c.payload_received());
    sim_assert!(world, c.is_complete(), "incomplete: {figures}; client {t:?}");
    sim_assert!(world, c.payload_received() == bytes, "{} bytes", c.payload_received());
    sim_assert!(world, c.opener == Some(a) && c.peer_node == Some(a), "{c:?}");
    sim_assert!(world, t.is_clean(), "client side: {t:?}");
    let took = c.completed_at.map(|d| d.saturating_duration_since(t.opened_at)).unwrap_or_default();
    println!(
        "{what}: byte-exact in {:.2} s virtual ({:.1} MB/s), {:.2} s wall",
        took.as_secs_f64(),
        bytes as f64 / took.as_secs_f64().max(1e-9) / 1e6,
        wall.as_secs_f64()
    );
}

#[test]
fn fifty_megabytes_over_a_clean_30_ms_link_arrive_byte_exact() {
    bulk_transfer(
        seed_from_env(200),
        LinkConfig::ideal(ms(15)),
        50_000_000,
        Duration::from_secs(600),
        "50 MB, 30 ms RTT, clean",
    );
}

#[test]
fn fifty_megabytes_over_a_lossy_reordering_link_arrive_byte_exact() {
    // 15 ms one way (30 ms RTT), 5 % loss, 5 % of datagrams held back by up to 20 ms.
    let link = LinkConfig { loss: 0.05, reorder: 0.05, reorder_delay: ms(20), ..LinkConfig::ideal(ms(15)) };
    bulk_transfer(
        seed_from_env(201),
        link,
        50_000_000,
        Duration::from_secs(3600),
        "50 MB, 30 ms RTT, 5% loss, 5% reordered",
    );
}

/// 100 connections to node 0's port 22, 20 from each of nodes 1..=5, opened at the same
/// virtual instant; all must be accepted, tagged with the opener's `PeerId`, and carry their
/// stream byte-exact.
fn hundred_concurrent_connections(seed: u64, server_tcp: TcpConfig) {
    let server_config = NodeConfig { tcp: server_tcp, ..NodeConfig::default().with_sink(true) };
    let configs = std::iter::once(server_config).chain((0..5).map(|_| NodeConfig::default())).collect();
    let mut world = build_with(seed, LinkConfig::wan(), configs);
    let server = NodeId(0);
    let openers: Vec<NodeId> = (1..6).map(NodeId).collect();
    let started = wall_clock();
    let t0 = world.now();
    let mut ids = Vec::new();
    for i in 0..100 {
        let from = openers[i % openers.len()];
        ids.push(world.open_tcp(from, server, SINK_PORT, 10_000).unwrap_or_else(|e| world.fail(e)));
    }
    world.run_for(Duration::from_secs(10));
    let accepted: Vec<_> = world.accepted_on(server).cloned().collect();
    sim_assert!(world, accepted.len() == 100, "{} of 100 connections accepted", accepted.len());
    for c in &accepted {
        let Some(opener) = c.opener else { world.fail(format!("no stream header on {c:?}")) };
        let expected = world.node(server).peer_id(opener);
        // The same thing, asked the way a service would: the core's own netmap by key.
        let by_key = world.node(server).core().and_then(|n| n.peer_id(&world.node(opener).public_key()));
        sim_assert!(
            world,
            expected.is_some() && c.peer == expected && c.peer == by_key,
            "{c:?}: expected {expected:?}"
        );
        sim_assert!(world, c.peer_node == Some(opener), "{c:?}");
        sim_assert!(world, mesh_sim_node_of(c.remote) == Some(opener), "{c:?}");
        sim_assert!(world, c.is_complete(), "{c:?}");
    }
    for id in &ids {
        sim_assert!(world, world.transfer(*id).is_clean(), "{:?}", world.transfer(*id));
    }
    let streams: std::collections::BTreeSet<_> = accepted.iter().filter_map(|c| c.transfer).collect();
    sim_assert!(world, streams.len() == 100, "each connection carried its own stream ({})", streams.len());
    let last = accepted.iter().map(|c| c.accepted_at).max().unwrap_or(t0);
    println!(
        "100 concurrent connections from 5 nodes: all accepted within {:.1} ms virtual, {:.3} s wall",
        last.saturating_duration_since(t0).as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_hundred_concurrent_connections_are_all_accepted_with_the_right_peer() {
    // The 100 SYNs arrive within a few milliseconds; the default bound of 64 half-open
    // connections per port would refuse some (see the ignored test below), so this server
    // allows 128.
    hundred_concurrent_connections(seed_from_env(202), TcpConfig { max_pending: 128, ..TcpConfig::default() });
}

#[test]
fn a_hundred_concurrent_connections_with_the_default_tcp_config() {
    hundred_concurrent_connections(seed_from_env(202), TcpConfig::default());
}

fn mesh_sim_node_of(addr: std::net::SocketAddr) -> Option<NodeId> {
    match addr.ip() {
        IpAddr::V4(v4) => mesh_sim::network::node_at_mesh(v4),
        IpAddr::V6(_) => None,
    }
}

#[test]
fn a_node_spoofing_another_peers_address_gets_nothing_through() {
    let mut world = build(seed_from_env(203), LinkConfig::ideal(ms(15)), 3, &[1]);
    let (a, b, c) = (NodeId(0), NodeId(1), NodeId(2));
    let started = wall_clock();
    // A session between A and B first, with a packet A may send.
    world.inject_tun_packet(a, &udp_v4(mesh(a), 5000, mesh(b), 9, b"hello")).unwrap_or_else(|e| world.fail(e));
    world.run_for(ms(200));
    sim_assert!(world, world.node(b).tun_stats().udp == 1, "the genuine packet arrived");
    let t0 = world.now();
    let tun_before = *world.node(b).tun_stats();
    let core_before = world.node(b).core().map(|n| n.stats().clone()).unwrap_or_default();
    let drops =
        |w: &World| w.node(b).wireguard().map_or(0, |wg| wg.stats().drops.get(DropReason::InnerSourceNotAllowed));
    let drops_before = drops(&world);
    // A (compromised) sends with C's address as source: to B's TUN (UDP) and to B's core
    // TCP stack (a SYN to port 22).
    let spoofed = [
        udp_v4(mesh(c), 5000, mesh(b), 9, b"it's me, C"),
        tcp_packet(mesh(c), 40000, mesh(b), SINK_PORT, TcpControl::Syn, 1000, None),
    ];
    for p in &spoofed {
        world.inject_tun_packet(a, p).unwrap_or_else(|e| world.fail(e));
    }
    world.run_for(ms(200));
    let core_after = world.node(b).core().map(|n| n.stats().clone()).unwrap_or_default();
    sim_assert!(world, *world.node(b).tun_stats() == tun_before, "B's TUN got {:?}", world.node(b).tun_stats());
    sim_assert!(world, core_after.inbound_to_tun == core_before.inbound_to_tun, "to B's TUN");
    sim_assert!(world, core_after.inbound_to_stack == core_before.inbound_to_stack, "to B's TCP stack");
    sim_assert!(world, world.accepted_on(b).count() == 0, "B accepted a connection");
    sim_assert!(
        world,
        drops(&world) == drops_before + 2,
        "InnerSourceNotAllowed: {} -> {}",
        drops_before,
        drops(&world)
    );
    sim_assert!(world, world.stats().rejected(DropReason::InnerSourceNotAllowed) == 2, "counted by the world too");
    // The same SYN with A's own address is accepted into B's stack (the path works).
    world
        .inject_tun_packet(a, &tcp_packet(mesh(a), 40000, mesh(b), SINK_PORT, TcpControl::Syn, 1000, None))
        .unwrap_or_else(|e| world.fail(e));
    world.run_for(ms(200));
    let core_genuine = world.node(b).core().map(|n| n.stats().clone()).unwrap_or_default();
    sim_assert!(
        world,
        core_genuine.inbound_to_stack == core_after.inbound_to_stack + 1,
        "genuine SYN reached the stack"
    );
    println!(
        "spoofed source: both packets dropped by B's WireGuard (InnerSourceNotAllowed) in {:.0} ms virtual, {:.3} s wall",
        world.now().saturating_duration_since(t0).as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_filter_update_cuts_an_established_connection_within_one_rtt() {
    let rtt = ms(30);
    let mut world = build(seed_from_env(204), LinkConfig::ideal(rtt / 2), 2, &[1]);
    let (a, b) = (NodeId(0), NodeId(1));
    let started = wall_clock();
    world.set_filter(b, Filter::new(vec![allow(a, b, PortRange::single(SINK_PORT))])).unwrap_or_else(|e| world.fail(e));
    // Far more than can be sent in the time the test runs: data is still flowing at the cut.
    let id = world.open_tcp(a, b, SINK_PORT, 10_000_000_000).unwrap_or_else(|e| world.fail(e));
    world.run_for(ms(500));
    let Some(before) = world.accepted_for(id).cloned() else { world.fail("not accepted") };
    sim_assert!(world, before.received > 1_000_000 && before.matched, "data flows: {before:?}");
    sim_assert!(world, world.transfer(id).closed_at.is_none(), "still open");
    let cut = world.now();
    world.set_filter(b, Filter::deny_all()).unwrap_or_else(|e| world.fail(e));
    world.run_for(rtt);
    let server = world.accepted_for(id).cloned().unwrap_or(before);
    let client = world.transfer(id).clone();
    sim_assert!(world, world.node(b).stats().flows_cut >= 1, "B cut the flow");
    sim_assert!(world, server.closed_at == Some(cut), "B's side closed at once: {server:?}");
    sim_assert!(world, client.closed_at.is_some_and(|t| t <= cut + rtt), "A's side closed within one RTT: {client:?}");
    sim_assert!(world, client.error == Some(TransferError::ClosedEarly), "{client:?}");
    let a_closed = client.closed_at.map_or(Duration::MAX, |t| t.saturating_duration_since(cut));
    // Nothing more gets through afterwards.
    let received = server.received;
    world.run_for(Duration::from_secs(5));
    sim_assert!(world, world.accepted_for(id).is_some_and(|c| c.received == received), "no data after the cut");
    println!(
        "filter cut: B's side closed at once, A's after {:.1} ms virtual (RTT 30 ms); {:.3} s wall",
        a_closed.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_cut_flow_cannot_be_reopened_on_the_same_ports() {
    let mut world = build(seed_from_env(206), LinkConfig::ideal(ms(15)), 2, &[1]);
    let (a, b) = (NodeId(0), NodeId(1));
    world.set_filter(b, Filter::new(vec![allow(a, b, PortRange::single(SINK_PORT))])).unwrap_or_else(|e| world.fail(e));
    let id = world.open_tcp(a, b, SINK_PORT, 10_000_000_000).unwrap_or_else(|e| world.fail(e));
    world.run_for(Duration::from_secs(1));
    let Some(first) = world.accepted_for(id).cloned() else { world.fail("not accepted") };
    world.set_filter(b, Filter::deny_all()).unwrap_or_else(|e| world.fail(e));
    world.run_for(Duration::from_secs(1));
    // A (its own TCP connection is gone) sends a SYN from the same port again.
    let stats = |w: &World| w.node(b).core().map(|n| n.stats().clone()).unwrap_or_default();
    let before = stats(&world);
    let port = first.remote.port();
    world
        .inject_tun_packet(a, &tcp_packet(mesh(a), port, mesh(b), SINK_PORT, TcpControl::Syn, 1000, None))
        .unwrap_or_else(|e| world.fail(e));
    world.run_for(ms(100));
    // Complete the handshake if B answered.
    let synack = tun_tcp(&world, a).into_iter().find(|(i, _)| i.tcp.syn && i.tcp.ack && i.dst_port == port);
    if let Some((_, seq)) = synack {
        let ack = tcp_packet(mesh(a), port, mesh(b), SINK_PORT, TcpControl::None, 1001, Some(seq.wrapping_add(1)));
        world.inject_tun_packet(a, &ack).unwrap_or_else(|e| world.fail(e));
        world.run_for(ms(100));
    }
    let after = stats(&world);
    sim_assert!(
        world,
        world.accepted_on(b).count() == 1,
        "B accepted again after deny-all: {:?}",
        world.accepted_conns()
    );
    sim_assert!(world, after.inbound_to_stack == before.inbound_to_stack, "the SYN reached B's stack");
    sim_assert!(world, after.inbound_filtered > before.inbound_filtered, "the SYN was not filtered");
}

#[test]
fn a_connection_the_filter_refuses_is_reported_closed_to_the_client() {
    let mut world = build(seed_from_env(207), LinkConfig::ideal(ms(15)), 2, &[1]);
    let (a, b) = (NodeId(0), NodeId(1));
    world.set_filter(b, Filter::deny_all()).unwrap_or_else(|e| world.fail(e));
    let id = world.open_tcp(a, b, SINK_PORT, 1000).unwrap_or_else(|e| world.fail(e));
    world.run_for(Duration::from_secs(300));
    sim_assert!(world, world.node(b).core().is_some_and(|n| n.stats().inbound_filtered > 0), "SYNs were filtered");
    let t = world.transfer(id);
    sim_assert!(world, t.closed_at.is_some() && t.error == Some(TransferError::ClosedEarly), "{t:?}");
}

#[test]
fn tcp_runs_replay_with_the_same_seed() {
    let run = |seed: u64| {
        let link = LinkConfig { loss: 0.02, ..LinkConfig::wan() };
        let mut world = build(seed, link, 4, &[0, 1]);
        for i in 0..12u64 {
            let from = NodeId(2 + (i % 2) as usize);
            let to = NodeId((i % 2) as usize);
            world.open_tcp(from, to, SINK_PORT, 20_000 + i * 1000).unwrap_or_else(|e| world.fail(e));
        }
        world.run_for(Duration::from_secs(30));
        (world.trace_hash(), world.stats().tcp_accepted, world.events_processed())
    };
    let seed = seed_from_env(208);
    let (hash, accepted, events) = run(seed);
    assert!(accepted == 12 && events > 300, "seed {seed}: {accepted} accepted, {events} events");
    assert_eq!(run(seed).0, hash, "seed {seed}: same seed, different trace");
    assert_ne!(run(seed + 1).0, hash, "seeds {seed} and {}: same trace", seed + 1);
}

#[test]
fn a_filter_allowing_a_to_b_80_passes_replies_but_not_new_connections_from_b() {
    let mut world = build(seed_from_env(205), LinkConfig::ideal(ms(15)), 2, &[]);
    let (a, b) = (NodeId(0), NodeId(1));
    let started = wall_clock();
    // The policy "A may reach B:80", compiled for both nodes: on A it allows nothing inbound.
    let filter = Filter::new(vec![allow(a, b, PortRange::single(80))]);
    world.set_filter(a, filter.clone()).unwrap_or_else(|e| world.fail(e));
    world.set_filter(b, filter).unwrap_or_else(|e| world.fail(e));

    world
        .inject_tun_packet(a, &tcp_packet(mesh(a), 40000, mesh(b), 80, TcpControl::Syn, 1000, None))
        .unwrap_or_else(|e| world.fail(e));
    world.run_for(ms(200));
    let at_b = tun_tcp(&world, b);
    sim_assert!(world, at_b.len() == 1, "B's TUN got {at_b:?}");
    let (syn, _) = at_b[0];
    sim_assert!(world, syn.tcp.syn && !syn.tcp.ack && syn.src == IpAddr::V4(mesh(a)) && syn.dst_port == 80, "{syn:?}");

    world
        .inject_tun_packet(b, &tcp_packet(mesh(b), 80, mesh(a), 40000, TcpControl::Syn, 5000, Some(1001)))
        .unwrap_or_else(|e| world.fail(e));
    world.run_for(ms(200));
    let at_a = tun_tcp(&world, a);
    sim_assert!(world, at_a.len() == 1, "A's TUN got {at_a:?}");
    let (synack, seq) = at_a[0];
    sim_assert!(world, synack.tcp.syn && synack.tcp.ack && synack.src_port == 80 && seq == 5000, "{synack:?}");

    let filtered = world.node(a).core().map_or(0, |n| n.stats().inbound_filtered);
    world
        .inject_tun_packet(b, &tcp_packet(mesh(b), 40001, mesh(a), 80, TcpControl::Syn, 7000, None))
        .unwrap_or_else(|e| world.fail(e));
    world.run_for(ms(200));
    sim_assert!(world, tun_tcp(&world, a).len() == 1, "B's SYN reached A: {:?}", tun_tcp(&world, a));
    let filtered_after = world.node(a).core().map_or(0, |n| n.stats().inbound_filtered);
    sim_assert!(world, filtered_after == filtered + 1, "A's filter dropped it ({filtered} -> {filtered_after})");
    println!(
        "A -> B:80 filter: SYN and SYN-ACK passed, B's SYN to A:80 dropped; {:.0} ms virtual, {:.3} s wall",
        world.elapsed().as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
}
