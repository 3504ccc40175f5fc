//! Our SSH client against our SSH server inside the deterministic simulator (issue 4):
//! exec with exit codes, login decided by the WireGuard identity, a 100 MB transfer with
//! several rekeys in the middle, and the same trace for the same seed. The nodes run the
//! full `mesh_core::node::Node`, so every SSH byte crosses the userspace TCP stack, the
//! packet filter and WireGuard over simulated links. Seeds come from `MESHSIM_SEED` when
//! set; a failing check prints the seed and the command to rerun. Each test prints its
//! virtual and wall time (`--nocapture` shows them).

use std::time::Duration;

use mesh_core::ssh::server::ServerConfig;
use mesh_core::ssh::transport::TransportConfig;
use mesh_sim::{
    seed_from_env, sim_assert, LinkConfig, NodeConfig, NodeId, SshClientConfig, SshClientId, SshCommand, World,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[allow(clippy::disallowed_methods)] // wall time for the report, outside the world
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// Node 0 serves SSH to `allowed`; `clients` more nodes join the full mesh.
fn build(seed: u64, link: LinkConfig, clients: usize, allowed: &[usize], server: ServerConfig) -> World {
    let mut world = World::new(seed, link);
    world.add_node_with(NodeConfig::default().with_ssh(true)).unwrap_or_else(|e| panic!("add server: {e}"));
    for _ in 0..clients {
        world.add_node().unwrap_or_else(|e| panic!("add client: {e}"));
    }
    world.connect_full_mesh().unwrap_or_else(|e| panic!("mesh: {e}"));
    world.set_rerun_hint(format!("MESHSIM_SEED={seed} cargo test --release -p mesh-tests --test sim_ssh"));
    world.serve_ssh(NodeId(0), allowed.iter().map(|&i| NodeId(i)), server).unwrap_or_else(|e| panic!("serve ssh: {e}"));
    world
}

/// Open a client `from -> node 0` and run it to the end (at most `limit` virtual time).
fn run_client(world: &mut World, from: usize, config: SshClientConfig, limit: Duration) -> SshClientId {
    let id = world.open_ssh(NodeId(from), NodeId(0), config).unwrap_or_else(|e| world.fail(e));
    let closed = world.run_until_ssh_closed(id, limit);
    sim_assert!(world, closed, "ssh client {id} still open after {limit:?}: {:?}", world.ssh_client(id));
    id
}

/// Both sides' transport settings with a volume rekey every `bytes`.
fn rekey_every(bytes: u64) -> TransportConfig {
    TransportConfig { rekey_bytes: bytes, ..Default::default() }
}

#[test]
fn exec_reports_exit_codes_and_an_unlisted_peer_is_denied() {
    let seed = seed_from_env(400);
    let mut world = build(seed, LinkConfig::ideal(ms(10)), 2, &[1], ServerConfig::default());
    let script = vec![
        SshCommand::exec("exit 7"),
        SshCommand::exec("exit 0"),
        SshCommand::exec("no-such-command --flag"),
        SshCommand::source(300_000, 11),
        SshCommand::sink(300_000, 12),
        SshCommand::cat(300_000, 13),
    ];
    let allowed = run_client(&mut world, 1, SshClientConfig::new("alice", script), Duration::from_secs(60));
    let denied = run_client(
        &mut world,
        2,
        SshClientConfig::new("mallory", vec![SshCommand::exec("exit 0")]),
        Duration::from_secs(60),
    );

    let c = world.ssh_client(allowed).clone();
    sim_assert!(world, c.authenticated_at.is_some() && !c.auth_failed, "{c:?}");
    sim_assert!(world, c.commands.len() == 6 && c.commands.iter().all(|r| r.finished_at.is_some()), "{c:?}");
    let status: Vec<Option<u32>> = c.commands.iter().map(|r| r.exit_status).collect();
    sim_assert!(world, status == [Some(7), Some(0), Some(127), Some(0), Some(0), Some(0)], "exit statuses {status:?}");
    let missing = &c.commands[2];
    sim_assert!(world, missing.accepted == Some(true), "{missing:?}");
    sim_assert!(world, String::from_utf8_lossy(&missing.stderr).contains("command not found"), "{missing:?}");
    for r in &c.commands[3..] {
        sim_assert!(world, r.is_ok(), "{} did not verify: {r:?}", r.command);
    }
    sim_assert!(world, c.commands[3].stdout_len == 300_000 && c.commands[5].stdout_len == 300_000, "{c:?}");
    sim_assert!(world, c.commands[4].stdout_text().starts_with("300000 "), "{:?}", c.commands[4]);
    sim_assert!(world, c.finished_at.is_some() && c.session_end.as_deref().is_some_and(|e| e.contains("script done")));

    // Let the server side finish closing too.
    world.run_for(Duration::from_secs(1));
    let d = world.ssh_client(denied).clone();
    sim_assert!(world, d.auth_failed && d.authenticated_at.is_none() && d.commands.is_empty(), "{d:?}");
    sim_assert!(world, d.banners.iter().any(|b| b.contains("may not log in")), "{d:?}");

    // The server's view: identity from the WireGuard peer that carried each connection.
    let server = world.ssh_accepted().to_vec();
    sim_assert!(world, server.len() == 2, "{server:?}");
    let (s1, s2) = (&server[0], &server[1]);
    sim_assert!(world, s1.peer_node == Some(NodeId(1)) && s1.authenticated == Some(true), "{s1:?}");
    sim_assert!(world, s1.user.as_deref() == Some("alice") && s1.exit_statuses == [7, 0, 127, 0, 0, 0], "{s1:?}");
    sim_assert!(world, s2.peer_node == Some(NodeId(2)) && s2.authenticated == Some(false), "{s2:?}");
    sim_assert!(world, s2.commands.is_empty() && s2.closed_at.is_some(), "{s2:?}");
    println!("exec and denial: {:.2} s virtual", world.elapsed().as_secs_f64());
}

#[test]
fn a_wrong_pinned_host_key_is_refused() {
    let seed = seed_from_env(401);
    let mut world = build(seed, LinkConfig::ideal(ms(10)), 1, &[1], ServerConfig::default());
    let config =
        SshClientConfig { host_key: Some([9; 32]), ..SshClientConfig::new("alice", vec![SshCommand::exec("exit 0")]) };
    let id = run_client(&mut world, 1, config, Duration::from_secs(30));
    let c = world.ssh_client(id).clone();
    sim_assert!(world, c.keyed_at.is_none() && c.authenticated_at.is_none() && c.commands.is_empty(), "{c:?}");
    sim_assert!(world, c.session_end.as_deref().is_some_and(|e| e.contains("host key")), "{c:?}");
    let s = &world.ssh_accepted()[0];
    sim_assert!(world, s.authenticated.is_none(), "{s:?}");
}

#[test]
fn a_quiet_session_rekeys_by_time_on_the_node_timers() {
    let seed = seed_from_env(405);
    let every = TransportConfig { rekey_interval: Duration::from_secs(30), ..Default::default() };
    let server = ServerConfig { transport: every.clone(), ..Default::default() };
    let mut world = build(seed, LinkConfig::ideal(ms(10)), 1, &[1], server);
    // Nothing moves for 100 s: only the sessions' own deadlines, run from the nodes' timer
    // events, can start the key exchanges (and end the sleep).
    let script = vec![SshCommand::exec("sleep 100"), SshCommand::cat(100_000, 1)];
    let id = run_client(
        &mut world,
        1,
        SshClientConfig::new("alice", script).with_transport(every),
        Duration::from_secs(300),
    );
    let c = world.ssh_client(id).clone();
    let s = world.ssh_accepted()[0].clone();
    sim_assert!(world, c.is_clean(), "{c:?}");
    let slept = c.commands[0].duration().unwrap_or_default();
    sim_assert!(world, slept >= Duration::from_secs(100) && slept < Duration::from_secs(101), "slept {slept:?}");
    sim_assert!(world, c.rekeys >= 3 && c.rekeys == s.rekeys, "rekeys client {} server {}", c.rekeys, s.rekeys);
    sim_assert!(world, world.stats().timer_stalls == 0, "{} timer stalls", world.stats().timer_stalls);
    println!("sleep 100 with a rekey every 30 s: {} rekeys, {:.1} s virtual", c.rekeys, world.elapsed().as_secs_f64());
}

/// `cat` of `bytes` both ways (so every byte crosses the network twice and comes back
/// byte-exact), with both transports rekeying every `rekey` bytes; returns the client
/// and server rekey counts.
fn cat_through_rekeys(seed: u64, link: LinkConfig, bytes: u64, rekey: u64, limit: Duration, what: &str) -> (u64, u64) {
    let server = ServerConfig { transport: rekey_every(rekey), ..Default::default() };
    let mut world = build(seed, link, 1, &[1], server);
    let started = wall_clock();
    let config = SshClientConfig::new("alice", vec![SshCommand::cat(bytes, seed)]).with_transport(rekey_every(rekey));
    let id = run_client(&mut world, 1, config, limit);
    let wall = started.elapsed();
    let c = world.ssh_client(id).clone();
    let s = world.ssh_accepted()[0].clone();
    let cat = c.commands.first().cloned().unwrap_or_else(|| world.fail(format!("no command ran: {c:?}")));
    let took = cat.duration().unwrap_or_default();
    println!(
        "{what}: {} of {bytes} bytes echoed in {:.2} s virtual ({:.1} MB/s each way), {:.2} s wall; \
         rekeys client {} server {}; {} datagrams, {} lost",
        cat.stdout_len,
        took.as_secs_f64(),
        bytes as f64 / took.as_secs_f64().max(1e-9) / 1e6,
        wall.as_secs_f64(),
        c.rekeys,
        s.rekeys,
        world.stats().datagrams_sent,
        world.stats().datagrams_lost(),
    );
    sim_assert!(world, cat.matched, "content mismatch: {cat:?}");
    sim_assert!(world, cat.stdin_sent == bytes && cat.stdout_len == bytes, "{cat:?}");
    sim_assert!(world, c.is_clean(), "client: {c:?}");
    sim_assert!(world, s.data_in == bytes && s.data_out == bytes && s.exit_statuses == [0], "server: {s:?}");
    sim_assert!(world, c.rekeys == s.rekeys, "rekeys client {} server {}", c.rekeys, s.rekeys);
    sim_assert!(world, world.stats().timer_stalls == 0, "{} timer stalls", world.stats().timer_stalls);
    (c.rekeys, s.rekeys)
}

#[test]
fn a_hundred_megabytes_through_cat_survive_a_dozen_rekeys() {
    const MB100: u64 = 100_000_000;
    let rekey = 8 << 20;
    let (client, server) = cat_through_rekeys(
        seed_from_env(402),
        LinkConfig::ideal(ms(10)),
        MB100,
        rekey,
        Duration::from_secs(600),
        "100 MB cat, 20 ms RTT, clean, rekey every 8 MiB",
    );
    // Each direction carries 100 MB: at least one volume rekey per 8 MiB of it.
    let expected = MB100 / rekey;
    assert!(client >= expected && server >= expected, "rekeys: client {client}, server {server}");
}

#[test]
fn eight_megabytes_through_cat_over_a_lossy_reordering_link_with_rekeys() {
    let link = LinkConfig { loss: 0.02, reorder: 0.05, reorder_delay: ms(20), ..LinkConfig::ideal(ms(15)) };
    let (client, _) = cat_through_rekeys(
        seed_from_env(403),
        link,
        8_000_000,
        1 << 20,
        Duration::from_secs(600),
        "8 MB cat, 30 ms RTT, 2% loss, 5% reordered, rekey every 1 MiB",
    );
    assert!(client >= 7, "{client} rekeys");
}

#[test]
fn the_same_seed_gives_the_same_ssh_trace_and_another_seed_does_not() {
    let run = |seed: u64| {
        let link = LinkConfig { loss: 0.01, reorder: 0.02, reorder_delay: ms(10), ..LinkConfig::wan() };
        let server = ServerConfig { transport: rekey_every(128 << 10), ..Default::default() };
        let mut world = build(seed, link, 2, &[1], server);
        let script = vec![SshCommand::exec("exit 7"), SshCommand::cat(1_000_000, 5), SshCommand::source(200_000, 6)];
        let config = SshClientConfig::new("alice", script).with_transport(rekey_every(128 << 10));
        let a = world.open_ssh(NodeId(1), NodeId(0), config).unwrap_or_else(|e| world.fail(e));
        let b = world
            .open_ssh(NodeId(2), NodeId(0), SshClientConfig::new("mallory", vec![SshCommand::exec("exit 0")]))
            .unwrap_or_else(|e| world.fail(e));
        world.run_until_ssh_closed(a, Duration::from_secs(300));
        // The denied client's login ends on its own schedule (its first SYN may wait for
        // a handshake retry): wait for it, not for a fixed time after the other.
        world.run_until_ssh_closed(b, Duration::from_secs(300));
        world.run_for(Duration::from_secs(1));
        let (ca, cb) = (world.ssh_client(a).clone(), world.ssh_client(b).clone());
        let rest_ok = ca.commands.len() == 3 && ca.commands[1..].iter().all(|c| c.is_ok());
        sim_assert!(world, rest_ok && ca.finished_at.is_some() && ca.rekeys >= 3, "seed {seed}: {ca:?}");
        sim_assert!(world, ca.commands[0].exit_status == Some(7), "{ca:?}");
        sim_assert!(world, cb.auth_failed, "seed {seed}: {cb:?}");
        (world.trace_hash_hex(), world.events_processed(), ca)
    };
    let seed = seed_from_env(404);
    let (first, events, record) = run(seed);
    assert!(events > 2_000, "the run did something ({events} events)");
    let (again, _, record_again) = run(seed);
    assert_eq!(again, first, "seed {seed}: same seed, different trace");
    assert_eq!(record_again, record, "seed {seed}: same seed, different client record");
    let (other, _, _) = run(seed + 1);
    assert_ne!(other, first, "seeds {seed} and {}: same trace", seed + 1);
}

/// The first handshake between client and server is lost, so the client's SYN and its
/// retransmissions wait in WireGuard's queue and arrive together once a retry gets through.
/// Each copy must reach the one half-open connection (two SYN-ACKs and a reset is what a
/// real `ssh` used to see on its first login to a peer).
#[test]
fn a_first_login_whose_handshake_needed_a_retry_succeeds() {
    let seed = seed_from_env(410);
    let mut world = build(seed, LinkConfig::ideal(ms(10)), 1, &[1], ServerConfig::default());
    world.partition(NodeId(1), NodeId(0));
    let id = world.open_ssh(NodeId(1), NodeId(0), SshClientConfig::new("alice", vec![SshCommand::exec("exit 3")]));
    let id = id.unwrap_or_else(|e| world.fail(e));
    world.run_for(Duration::from_secs(4));
    world.heal(NodeId(1), NodeId(0));
    let closed = world.run_until_ssh_closed(id, Duration::from_secs(60));
    let record = world.ssh_client(id).clone();
    sim_assert!(world, closed && record.connected_at.is_some_and(|t| t.as_micros() > 4_000_000), "{record:?}");
    sim_assert!(world, record.commands.first().and_then(|c| c.exit_status) == Some(3), "{record:?}");
    sim_assert!(world, record.finished_at.is_some(), "the login went through: {record:?}");
    sim_assert!(world, world.ssh_accepted().len() == 1, "one session: {:?}", world.ssh_accepted());
}
