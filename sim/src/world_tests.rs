//! Scenario-level tests of the world: determinism, links, partitions, crashes.

use std::time::Duration;

use crate::SINK_PORT;
use mesh_core::ip::Filter;
use mesh_core::time::Instant;

use crate::apps::TransferError;
use crate::node::NodeConfig;

use crate::faults::{ChaosConfig, Fault};
use crate::ids::NodeId;
use crate::link::{DropCause, LinkConfig};
use crate::scenario::{Scenario, ScenarioConfig};
use crate::traffic::TrafficConfig;
use crate::world::World;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mesh(seed: u64, nodes: usize, link: LinkConfig) -> World {
    match Scenario::full_mesh(ScenarioConfig { seed, nodes, link, ..ScenarioConfig::default() }) {
        Ok(world) => world,
        Err(error) => panic!("cannot build the world: {error}"),
    }
}

fn run_hash(seed: u64) -> [u8; 32] {
    let mut world = mesh(seed, 3, LinkConfig::wan().with_loss(0.05));
    world.set_chaos(Some(ChaosConfig { mean_interval: secs(5), ..ChaosConfig::default() }));
    world.run_for(secs(30));
    world.check(world.stats().app_delivered > 100, "traffic flowed");
    world.trace_hash()
}

#[test]
fn same_seed_same_hash_different_seed_different_hash() {
    let a = run_hash(42);
    assert_eq!(a, run_hash(42), "same seed must replay bit for bit");
    assert_ne!(a, run_hash(43), "a different seed must change the trace");
}

#[test]
fn clean_mesh_delivers_between_every_pair() {
    let mut world = mesh(1, 4, LinkConfig::wan());
    world.run_for(secs(20));
    let stats = world.stats();
    world.check(stats.app_rejected == 0, "no packet attributed to the wrong peer");
    world.check(stats.timer_stalls == 0, "poll_timeout always moved forward");
    world.check(stats.datagrams_rejected <= stats.datagrams_duplicated, "only duplicates are refused");
    for (a, b, pair) in world.pairs().iter() {
        world.check(pair.sent > 0 && pair.delivered > 0, format!("{a} -> {b}: {pair:?}"));
        world.check(pair.delivered <= pair.sent, format!("{a} -> {b} delivered more than sent"));
        world.check(world.node(a).has_session_with(b), format!("{a} has a session with {b}"));
    }
    // Each handshake is reported by both ends; every ordered pair needs at least one side.
    world.check(world.handshakes() >= 12, format!("{} handshakes", world.handshakes()));
}

#[test]
fn link_loss_rate_is_roughly_as_configured() {
    let mut world = mesh(5, 4, LinkConfig::ideal(Duration::from_millis(10)).with_loss(0.3));
    world.run_for(secs(60));
    let stats = world.stats();
    let rate = stats.dropped(DropCause::Loss) as f64 / stats.datagrams_sent as f64;
    world.check((rate - 0.3).abs() < 0.03, format!("loss rate {rate}"));
    world.check(stats.app_delivered > stats.app_sent / 2, "the tunnel still carries traffic");
}

#[test]
fn partition_blocks_traffic_and_heal_restores_it() {
    let mut world = mesh(7, 3, LinkConfig::wan());
    let (a, b, c) = (NodeId(0), NodeId(1), NodeId(2));
    world.run_for(secs(10));
    world.check(world.delivered_after(a, b, Instant::ZERO), "a -> b before the partition");
    world.partition(a, b);
    let cut = world.now();
    world.run_for(secs(30));
    world.check(!world.delivered_after(a, b, cut), "a -> b blocked");
    world.check(!world.delivered_after(b, a, cut), "b -> a blocked");
    world.check(world.delivered_after(a, c, cut + secs(20)), "a -> c unaffected");
    world.check(world.stats().dropped(DropCause::Partition) > 0, "drops counted");

    world.partition_one_way(a, c);
    let one_way = world.now();
    world.run_for(secs(10));
    world.check(!world.delivered_after(a, c, one_way), "a -> c blocked one way");
    world.check(world.delivered_after(c, a, one_way + secs(5)), "c -> a still flows");

    world.heal_all();
    let healed = world.now();
    world.run_for(secs(30));
    for (x, y) in [(a, b), (b, a), (a, c), (c, a)] {
        world.check(world.delivered_after(x, y, healed + secs(20)), format!("{x} -> {y} after healing"));
    }
}

#[test]
fn crashed_node_restarts_and_re_handshakes_with_everyone() {
    let mut world = mesh(9, 4, LinkConfig::wan());
    let victim = NodeId(1);
    world.run_for(secs(10));
    let before = world.node(victim).stats().sessions_established;
    world.crash(victim);
    world.check(!world.node(victim).is_up() && world.node(victim).wireguard().is_none(), "down");
    let crashed = world.now();
    world.run_for(secs(10));
    for other in world.node_ids().filter(|n| *n != victim) {
        world.check(!world.delivered_after(other, victim, crashed + secs(1)), "nothing reaches a crashed node");
    }
    world.check(world.stats().dropped(DropCause::NodeDown) > 0, "datagrams to it were lost");
    world.restart(victim).unwrap_or_else(|e| world.fail(e));
    let restarted = world.now();
    world.run_for(secs(40));
    let node = world.node(victim);
    world.check(node.stats().sessions_established > before, "new sessions after restart");
    for other in world.node_ids().filter(|n| *n != victim) {
        world.check(world.delivered_after(victim, other, restarted + secs(20)), format!("{victim} -> {other}"));
        world.check(world.delivered_after(other, victim, restarted + secs(20)), format!("{other} -> {victim}"));
    }
    world.check(world.stats().app_rejected == 0, "identity binding held");
}

#[test]
fn scheduled_faults_and_stale_timers_are_harmless() {
    let mut world = mesh(11, 3, LinkConfig::wan());
    let n = NodeId(2);
    world.schedule_fault(Instant::from_micros(5_000_000), Fault::Crash(n));
    world.schedule_fault(Instant::from_micros(5_500_000), Fault::Restart(n));
    world.schedule_fault(Instant::from_micros(6_000_000), Fault::Crash(n));
    world.schedule_fault(Instant::from_micros(9_000_000), Fault::Restart(n));
    world.run_for(secs(40));
    world.check(world.node(n).stats().restarts == 2, "two restarts");
    world.check(world.stats().stale_events > 0, "old generations' events were ignored");
    world.check(world.delivered_after(NodeId(0), n, Instant::from_micros(30_000_000)), "recovered");
    world.check(world.stats().timer_stalls == 0, "no busy loop");
}

/// Run in 100 ms steps until `from -> to` delivers after `t`; how long that took.
fn time_to_deliver(world: &mut World, from: NodeId, to: NodeId, t: Instant, limit: Duration) -> Option<Duration> {
    while world.now() < t + limit {
        world.run_for(Duration::from_millis(100));
        if world.delivered_after(from, to, t) {
            return Some(world.now().saturating_duration_since(t));
        }
    }
    None
}

#[test]
fn a_restarted_node_that_sends_nothing_is_reached_again() {
    let mut world = mesh(13, 3, LinkConfig::wan());
    let (a, quiet) = (NodeId(0), NodeId(1));
    world.run_for(secs(10));
    world.set_node_traffic(quiet, false);
    world.crash(quiet);
    world.run_for(secs(5));
    world.restart(quiet).unwrap_or_else(|e| world.fail(e));
    let restarted = world.now();
    // `a` still holds the old session; the restarted node refuses it, and `a` starts a
    // new handshake once 15 s (plus jitter) pass without an answer to its data.
    let took = time_to_deliver(&mut world, a, quiet, restarted, secs(30));
    world.check(took.is_some_and(|d| d <= secs(16)), format!("a -> quiet took {took:?}"));
    world.check(world.stats().rejected(mesh_core::wireguard::DropReason::UnknownIndex) > 0, "old session refused");
}

#[test]
fn sessions_recover_after_a_partition_longer_than_key_erasure() {
    let mut world = mesh(17, 3, LinkConfig::wan());
    let (a, b) = (NodeId(0), NodeId(1));
    world.run_for(secs(10));
    world.partition(a, b);
    world.run_for(secs(600));
    world.check(world.stats().keys_zeroed > 0, "keys were erased after 540 s without a session");
    world.heal(a, b);
    let healed = world.now();
    for (x, y) in [(a, b), (b, a)] {
        let took = time_to_deliver(&mut world, x, y, healed, secs(30));
        world.check(took.is_some_and(|d| d <= secs(10)), format!("{x} -> {y} took {took:?} after healing"));
    }
}

#[test]
fn toggling_traffic_does_not_double_it() {
    let mut world = mesh(19, 2, LinkConfig::default());
    let n = NodeId(0);
    world.set_node_traffic(n, false);
    world.set_node_traffic(n, true);
    world.start_traffic(TrafficConfig::default());
    world.run_for(secs(10));
    let sent = world.node(n).stats().app_sent;
    world.check((80..=120).contains(&sent), format!("{sent} packets in 10 s at one per 100 ms"));
}

#[test]
#[should_panic(expected = "seed: 3")]
fn failures_report_the_seed() {
    let world = mesh(3, 2, LinkConfig::default());
    crate::sim_assert!(world, world.handshakes() > 0, "no handshake at t=0");
}

/// Two nodes, the second serving SSH, no background traffic.
fn pair(seed: u64) -> World {
    let mut world = World::new(seed, LinkConfig::ideal(Duration::from_millis(10)));
    for ssh in [false, true] {
        world.add_node_with(NodeConfig::default().with_sink(ssh)).unwrap_or_else(|e| panic!("{e}"));
    }
    world.connect_full_mesh().unwrap_or_else(|e| panic!("{e}"));
    world
}

#[test]
fn a_tcp_stream_to_the_ssh_port_arrives_verified_and_tagged() {
    let mut world = pair(21);
    let (a, b) = (NodeId(0), NodeId(1));
    let id = world.open_tcp(a, b, SINK_PORT, 300_000).unwrap_or_else(|e| world.fail(e));
    world.run_for(secs(2));
    let conn = world.accepted_for(id).cloned().unwrap_or_else(|| world.fail("not accepted"));
    world.check(conn.is_complete() && conn.payload_received() == 300_000, format!("{conn:?}"));
    world.check(conn.peer.is_some() && conn.peer == world.node(b).peer_id(a), "tagged with A's PeerId");
    world.check(conn.opener == Some(a) && conn.peer_node == Some(a), "opened by A");
    world.check(conn.closed_at.is_some() && world.transfer(id).is_clean(), format!("{:?}", world.transfer(id)));
    world.check(world.stats().tcp_transfers_completed == 1, "counted");
}

#[test]
fn without_ssh_port_22_is_not_served_in_the_core() {
    let mut world = pair(22);
    let (a, b) = (NodeId(0), NodeId(1));
    // B serves SSH, A does not: B's SYN to A:22 goes to A's TUN side.
    world.open_tcp(b, a, SINK_PORT, 10).unwrap_or_else(|e| world.fail(e));
    world.run_for(Duration::from_millis(100));
    world.check(world.accepted_on(a).count() == 0, "nothing accepted on A");
    world.check(world.node(a).tun_stats().tcp >= 1, "the SYN reached A's TUN");
    world.check(world.node(a).tun_captured().count() >= 1, "and was captured");
}

#[test]
fn a_restarted_node_keeps_its_peers_and_filter() {
    let mut world = mesh(23, 3, LinkConfig::default());
    let (a, b) = (NodeId(0), NodeId(1));
    world.run_for(secs(5));
    let ids: Vec<_> = world.node_ids().map(|n| world.node(b).peer_id(n)).collect();
    world.set_filter(b, Filter::deny_all()).unwrap_or_else(|e| world.fail(e));
    // B sends nothing itself: its own packets would open flows whose replies pass (the
    // traffic application uses the same ports both ways).
    world.set_node_traffic(b, false);
    world.crash(b);
    world.run_for(secs(1));
    world.restart(b).unwrap_or_else(|e| world.fail(e));
    let restarted = world.now();
    world.run_for(secs(30));
    let again: Vec<_> = world.node_ids().map(|n| world.node(b).peer_id(n)).collect();
    world.check(ids == again, "the same PeerIds after the restart");
    world.check(world.node(b).filter().rules().is_empty(), "still deny-all");
    for other in [a, NodeId(2)] {
        world.check(!world.delivered_after(other, b, restarted), format!("{other}'s packets are filtered by B"));
    }
    world.check(world.delivered_after(NodeId(2), a, restarted + secs(5)), "the others still talk");
    world.check(world.node(b).core().is_some_and(|n| n.stats().inbound_filtered > 0), "counted as filtered");
}

#[test]
fn a_crash_ends_the_tcp_applications_on_the_node() {
    let mut world = pair(24);
    let (a, b) = (NodeId(0), NodeId(1));
    let id = world.open_tcp(a, b, SINK_PORT, 1_000_000_000).unwrap_or_else(|e| world.fail(e));
    world.run_for(Duration::from_millis(200));
    world.crash(a);
    let t = world.transfer(id);
    world.check(t.error == Some(TransferError::NodeCrashed) && t.closed_at == Some(world.now()), format!("{t:?}"));
    world.crash(b);
    let conn = world.accepted_for(id).unwrap_or_else(|| world.fail("not accepted"));
    world.check(conn.closed_at == Some(world.now()) && !conn.is_complete(), format!("{conn:?}"));
}

#[test]
fn injected_packets_with_a_foreign_source_are_refused_by_the_receiver() {
    let mut world = mesh(25, 3, LinkConfig::default());
    world.stop_traffic();
    let (a, b, c) = (NodeId(0), NodeId(1), NodeId(2));
    world.run_for(secs(1));
    let before = world.node(b).tun_stats().packets;
    let spoofed = crate::traffic::AppPacket {
        src: crate::network::mesh_addr(c),
        dst: crate::network::mesh_addr(b),
        seq: 0,
        sent_at: world.now(),
    }
    .encode();
    world.inject_tun_packet(a, &spoofed).unwrap_or_else(|e| world.fail(e));
    world.run_for(Duration::from_millis(100));
    world.check(world.node(b).tun_stats().packets == before, "nothing reached B's TUN");
    world.check(
        world.stats().rejected(mesh_core::wireguard::DropReason::InnerSourceNotAllowed) == 1,
        "B's WireGuard refused it",
    );
    // The same packet from A's own address passes.
    let genuine = crate::traffic::AppPacket {
        src: crate::network::mesh_addr(a),
        dst: crate::network::mesh_addr(b),
        seq: 0,
        sent_at: world.now(),
    }
    .encode();
    world.inject_tun_packet(a, &genuine).unwrap_or_else(|e| world.fail(e));
    world.run_for(Duration::from_millis(100));
    world.check(world.node(b).tun_stats().app_packets >= 1, "the genuine one arrived");
}
