//! The coordination server's state machine at scale (issue 9's benchmarks):
//! - `join_10k`: one node joining a tailnet of 10k streaming nodes (register + map
//!   request, until every output is ready), under the 200-rule fixture policy (each
//!   joined node is deleted again, untimed, so every join meets the same tailnet);
//! - `endpoint_10k`: one node's endpoint change reaching its viewers (no recompile);
//! - `policy_edit_10k`: a policy edit, until every node's update is ready.
//!
//! Printed once: server memory per node at 10k streaming nodes (resident set growth), and
//! the wall time for a policy change to reach 1000 simulated nodes over the real protocol
//! in the simulator.

use std::time::Duration;

use criterion::{criterion_group, Criterion};
use mesh_core::control::messages::{NodeMessage, Register, RegisterAuth};
use mesh_core::control::server::{
    AuthKeyOptions, ConnId, ControlServer, NodeRecord, ServerConfig, State, UserId, UserRecord,
};
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::PublicKey;
use mesh_sim::{ControlLinkConfig, ControlSim, LinkConfig, World};
use mesh_tests::tailnet_fixture;

/// Resident memory of this process (bytes), from /proc/self/statm.
fn resident() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

const T0: u64 = 1_800_000_000;

fn key(i: u64, salt: u8) -> PublicKey {
    let mut k = [salt; 32];
    k[..8].copy_from_slice(&i.to_le_bytes());
    PublicKey(k)
}

/// A server restarted from a database of `n` fixture nodes, all connected and streaming.
fn streaming_server(n: usize, policy: &str) -> (ControlServer, Instant) {
    let inventory = tailnet_fixture::nodes(n);
    let mut users: Vec<UserRecord> = Vec::new();
    let nodes: Vec<NodeRecord> = inventory
        .iter()
        .map(|info| {
            let user =
                info.user.trim_start_matches("user").split('@').next().and_then(|u| u.parse().ok()).unwrap_or(0u64);
            if users.last().is_none_or(|u| u.id.0 != user + 1) {
                users.push(UserRecord { id: UserId(user + 1), name: info.user.clone(), groups: Vec::new() });
            }
            NodeRecord {
                id: info.id,
                machine_key: key(info.id.0, 1),
                node_key: key(info.id.0, 2),
                user: UserId(user + 1),
                name: info.name.clone(),
                tags: info.tags.clone(),
                addresses: info.addresses.clone(),
                endpoints: vec![std::net::SocketAddr::from(([198, 51, 100, 1], 41641))],
                ssh_host_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost host".into()],
                ssh: true,
                key_expiry: Some(T0 + 86_400 * 90),
                ephemeral: false,
            }
        })
        .collect();
    let state = State { users, nodes, policy: Some(policy.to_string()), ..State::default() };
    let unix = UnixTime(Duration::from_secs(T0));
    let mut server =
        ControlServer::new(ServerConfig::default(), [9; 32], state, unix).unwrap_or_else(|e| panic!("{e}"));
    let now = Instant::from_micros(1);
    for info in &inventory {
        let conn = ConnId(info.id.0);
        server.handle_connect(now, conn, key(info.id.0, 1));
        server.handle_message(now, conn, register(info.id.0, RegisterAuth::Known));
        server.handle_message(now, conn, NodeMessage::Map { endpoints: vec![] });
        while server.poll_output().is_some() {}
    }
    (server, now)
}

fn register(i: u64, auth: RegisterAuth) -> NodeMessage {
    NodeMessage::Register(Register {
        node_key: key(i, 2),
        hostname: format!("node{i}"),
        ssh_host_keys: vec![],
        requested_tags: vec![],
        ssh: true,
        auth,
    })
}

fn drain(server: &mut ControlServer) -> usize {
    std::iter::from_fn(|| server.poll_output()).count()
}

fn server_at_scale(c: &mut Criterion) {
    let policy = tailnet_fixture::policy(10_000, 200, false);
    let (mut server, now) = streaming_server(10_000, &policy);
    let mut group = c.benchmark_group("control_server");
    group.sample_size(10);
    let secret = server
        .create_auth_key(
            "bench",
            "user0@example.com",
            AuthKeyOptions { reusable: true, lifetime: Duration::from_secs(86_400), ..Default::default() },
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .1;
    drain(&mut server);
    // Each sample joins one node to the 10k and, untimed, deletes it again: every join
    // meets the same tailnet.
    let mut next = 20_000u64;
    group.bench_function("join_10k", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for _ in 0..iterations {
                next += 1;
                let conn = ConnId(next);
                let start = std::time::Instant::now();
                server.handle_connect(now, conn, key(next, 1));
                server.handle_message(now, conn, register(next, RegisterAuth::AuthKey(secret.clone())));
                server.handle_message(now, conn, NodeMessage::Map { endpoints: vec![] });
                drain(&mut server);
                spent += start.elapsed();
                let joined = server.nodes().map(|n| n.id).max();
                if let Some(id) = joined {
                    server.delete_node(now, "bench", id).unwrap_or_else(|e| panic!("{e}"));
                }
                server.handle_disconnect(now, conn);
                drain(&mut server);
            }
            spent
        })
    });
    let mut port = 0u16;
    group.bench_function("endpoint_10k", |b| {
        b.iter(|| {
            port = port.wrapping_add(1);
            let endpoint = std::net::SocketAddr::from(([198, 51, 100, 7], 1024 + port % 1000));
            server.handle_message(now, ConnId(5), NodeMessage::Endpoints(vec![endpoint]));
            drain(&mut server)
        })
    });
    let edited = policy.replace("\"tag:t3:1003\"", "\"tag:t3:1004\"");
    let mut flip = false;
    group.bench_function("policy_edit_10k", |b| {
        b.iter(|| {
            flip = !flip;
            let text = if flip { &edited } else { &policy };
            server.set_policy(now, "bench", text).unwrap_or_else(|e| panic!("{e}"));
            drain(&mut server)
        })
    });
    group.finish();
}

/// Printed once: memory per node, and a policy change through 1000 simulated nodes.
fn scale_report() {
    let policy = tailnet_fixture::policy(10_000, 200, false);
    let before = resident();
    let (server, _) = streaming_server(10_000, &policy);
    let after = resident();
    println!(
        "control_server memory: {} bytes per node at 10k streaming nodes (resident set growth)",
        (after - before) / 10_000
    );
    drop(server);

    let world = World::new(7, LinkConfig::ideal(Duration::from_millis(20)));
    let mut sim = ControlSim::new(world, ServerConfig::default(), ControlLinkConfig::default());
    let open = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    let key = sim
        .admin(|s, now| {
            s.create_user("bench", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
            s.set_policy(now, "bench", open).unwrap_or_else(|e| panic!("{e}"));
            let options =
                AuthKeyOptions { reusable: true, lifetime: Duration::from_secs(86_400), ..Default::default() };
            s.create_auth_key("bench", "alice@example.com", options).unwrap_or_else(|e| panic!("{e}")).1
        })
        .unwrap_or_default();
    let clients: Vec<_> =
        (0..1000).map(|i| sim.add_client(None, &format!("n{i}"), RegisterAuth::AuthKey(key.clone()))).collect();
    let ok = sim.run_until_true(Duration::from_secs(120), |s| {
        clients.iter().all(|&c| s.client(c).netmap().is_some_and(|m| m.peers.len() == 999))
    });
    assert!(ok, "1000 nodes did not converge");
    let closed = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}"#;
    let wall = std::time::Instant::now();
    let virtual_start = sim.world.now();
    sim.admin(|s, now| s.set_policy(now, "bench", closed).unwrap_or_else(|e| panic!("{e}")));
    let ok = sim.run_until_true(Duration::from_secs(60), |s| {
        clients.iter().all(|&c| {
            s.client(c).netmap().is_some_and(|m| m.filter.iter().all(|r| r.dsts.iter().all(|(_, p)| p.first == 22)))
        })
    });
    assert!(ok, "the policy change did not reach every node");
    println!(
        "control_server policy change to 1000 simulated nodes: {:.1} ms wall, {:.0} ms virtual (20 ms links)",
        wall.elapsed().as_secs_f64() * 1e3,
        sim.world.now().saturating_duration_since(virtual_start).as_secs_f64() * 1e3
    );
}

criterion_group!(benches, server_at_scale);

fn main() {
    // For profiling one benchmark alone: MESH_BENCH_NO_REPORT=1.
    if std::env::var_os("MESH_BENCH_NO_REPORT").is_none() {
        scale_report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
