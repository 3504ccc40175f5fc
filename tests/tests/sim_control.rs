//! The coordination server and 20 nodes in the simulator (issue 9): the real server and
//! client state machines over simulated control connections (latency, loss, partitions),
//! with the nodes' data plane running on the netmaps they receive. Seeds come from
//! `MESHSIM_SEED`; a failure prints the rerun command.

use std::time::Duration;

use mesh_core::control::messages::RegisterAuth;
use mesh_core::control::server::{AuthKeyOptions, ServerConfig};
use mesh_core::policy::NodeId as ControlNodeId;
use mesh_sim::{
    seed_from_env, sim_assert, ClientId, ControlLinkConfig, ControlSim, LinkConfig, NodeId, TrafficConfig, World,
};

const OPEN: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

fn link() -> ControlLinkConfig {
    ControlLinkConfig {
        latency: Duration::from_millis(25),
        jitter: Duration::from_millis(10),
        loss: 0.05,
        ..Default::default()
    }
}

/// `n` world nodes, each registered in turn with a reusable key under an open policy.
fn tailnet(seed: u64, n: usize) -> (ControlSim, Vec<ClientId>) {
    let mut world = World::new(seed, LinkConfig::wan());
    world.set_rerun_hint(format!("MESHSIM_SEED={seed} cargo test -p mesh-tests --test sim_control"));
    for _ in 0..n {
        world.add_node().unwrap_or_else(|e| panic!("{e}"));
    }
    let mut sim = ControlSim::new(world, ServerConfig::default(), link());
    let key = sim
        .admin(|s, now| {
            s.create_user("admin", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
            s.set_policy(now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
            let options =
                AuthKeyOptions { reusable: true, lifetime: Duration::from_secs(86_400), ..Default::default() };
            s.create_auth_key("admin", "alice@example.com", options).unwrap_or_else(|e| panic!("{e}")).1
        })
        .unwrap_or_else(|| panic!("no server"));
    let mut clients = Vec::new();
    for i in 0..n {
        let id = sim.add_client(Some(NodeId(i)), &format!("node{i}"), RegisterAuth::AuthKey(key.clone()));
        // One at a time, so that node i gets the simulator's address for node i.
        let ok = sim.run_until_true(Duration::from_secs(10), |s| s.registered(id).is_some());
        sim_assert!(sim.world, ok, "node {i} did not register: {:?}", sim.client_events(id));
        clients.push(id);
    }
    (sim, clients)
}

fn peers_of(sim: &ControlSim, c: ClientId) -> usize {
    sim.client(c).netmap().map_or(0, |m| m.peers.len())
}

fn converged(sim: &ControlSim, clients: &[ClientId], peers: usize) -> bool {
    clients.iter().all(|&c| sim.client(c).is_streaming() && peers_of(sim, c) == peers)
}

#[test]
fn twenty_nodes_register_converge_and_carry_traffic() {
    let (mut sim, clients) = tailnet(seed_from_env(901), 20);
    let ok = sim.run_until_true(Duration::from_secs(20), |s| converged(s, &clients, 19));
    sim_assert!(
        sim.world,
        ok,
        "netmaps did not converge: {:?}",
        clients.iter().map(|&c| peers_of(&sim, c)).collect::<Vec<_>>()
    );
    // The data plane runs on what the control plane gave it.
    sim.world.start_traffic(TrafficConfig { interval: Duration::from_millis(50) });
    let start = sim.world.now();
    sim.run_for(Duration::from_secs(30));
    let silent: Vec<_> =
        sim.world.pairs().iter().filter(|(_, _, p)| !p.delivered_after(start)).map(|(a, b, _)| (a, b)).collect();
    sim_assert!(sim.world, silent.is_empty(), "pairs with no delivery: {silent:?}");
    // A single-use key raced by two nodes: exactly one wins.
    let single = sim
        .admin(|s, _| {
            let options = AuthKeyOptions { lifetime: Duration::from_secs(3600), ..Default::default() };
            s.create_auth_key("admin", "alice@example.com", options).unwrap_or_else(|e| panic!("{e}")).1
        })
        .unwrap_or_default();
    let a = sim.add_client(None, "racer-a", RegisterAuth::AuthKey(single.clone()));
    let b = sim.add_client(None, "racer-b", RegisterAuth::AuthKey(single));
    sim.run_for(Duration::from_secs(10));
    let winners = [a, b].iter().filter(|&&c| sim.registered(c).is_some()).count();
    let losers: Vec<&String> = [a, b].iter().flat_map(|&c| sim.rejections(c)).collect();
    sim_assert!(sim.world, winners == 1, "{winners} winners");
    sim_assert!(sim.world, losers.len() == 1 && losers[0].contains("already used"), "{losers:?}");
    let ok = sim.run_until_true(Duration::from_secs(10), |s| converged(s, &clients, 20));
    sim_assert!(sim.world, ok, "the winner did not reach every netmap");
}

#[test]
fn policy_changes_deletions_and_expiry_reach_every_node() {
    let (mut sim, clients) = tailnet(seed_from_env(902), 20);
    sim.run_until_true(Duration::from_secs(20), |s| converged(s, &clients, 19));
    // A policy that lets nothing through: every node drops all peers and gets an empty filter.
    sim.admin(|s, now| s.set_policy(now, "admin", r#"{"acls": []}"#).unwrap_or_else(|e| panic!("{e}")));
    let ok = sim.run_until_true(Duration::from_secs(10), |s| {
        clients.iter().all(|&c| s.client(c).netmap().is_some_and(|m| m.peers.is_empty() && m.filter.is_empty()))
    });
    sim_assert!(sim.world, ok, "the deny-all policy did not reach every node");
    sim_assert!(sim.world, sim.world.node(NodeId(3)).peer_nodes().is_empty(), "world node still has peers");
    sim.admin(|s, now| s.set_policy(now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}")));
    let ok = sim.run_until_true(Duration::from_secs(10), |s| converged(s, &clients, 19));
    sim_assert!(sim.world, ok, "the open policy did not come back everywhere");
    // Deleting a node: it leaves every peer list; its own client is told it is gone.
    let victim = sim.registered(clients[5]).map(|r| r.node).unwrap_or(ControlNodeId(0));
    sim.admin(|s, now| s.delete_node(now, "admin", victim).unwrap_or_else(|e| panic!("{e}")));
    let rest: Vec<ClientId> = clients.iter().copied().filter(|&c| c != clients[5]).collect();
    let ok = sim.run_until_true(Duration::from_secs(10), |s| {
        rest.iter()
            .all(|&c| s.client(c).netmap().is_some_and(|m| m.peers.len() == 18 && !m.peers.contains_key(&victim)))
    });
    sim_assert!(sim.world, ok, "the deleted node is still in some netmap");
    let ok = sim.run_until_true(Duration::from_secs(20), |s| !s.rejections(clients[5]).is_empty());
    sim_assert!(sim.world, ok, "the deleted node was not told: {:?}", sim.client_events(clients[5]));
    // Key expiry: the expired node leaves its peers' maps.
    let expired = sim.registered(clients[7]).map(|r| r.node).unwrap_or(ControlNodeId(0));
    sim.admin(|s, now| s.expire_node(now, "admin", expired).unwrap_or_else(|e| panic!("{e}")));
    let others: Vec<ClientId> = rest.iter().copied().filter(|&c| c != clients[7]).collect();
    let ok = sim.run_until_true(Duration::from_secs(10), |s| {
        others.iter().all(|&c| s.client(c).netmap().is_some_and(|m| !m.peers.contains_key(&expired)))
    });
    sim_assert!(sim.world, ok, "the expired node is still in some netmap");
}

#[test]
fn a_server_crash_loses_nothing_and_tunnels_keep_working_while_it_is_down() {
    let (mut sim, clients) = tailnet(seed_from_env(903), 20);
    sim.run_until_true(Duration::from_secs(20), |s| converged(s, &clients, 19));
    // Endpoints follow each registration by one map request: let them settle.
    sim.run_for(Duration::from_secs(2));
    let before: Vec<_> = clients.iter().map(|&c| sim.client(c).netmap().map(|m| m.peers.clone())).collect();
    let nodes_before = sim.database().nodes.len();
    sim.world.start_traffic(TrafficConfig { interval: Duration::from_millis(50) });
    sim.run_for(Duration::from_secs(5));
    sim.crash_server();
    let down = sim.world.now();
    sim.run_for(Duration::from_secs(60));
    // The data plane kept going on the last netmap.
    let silent: Vec<_> =
        sim.world.pairs().iter().filter(|(_, _, p)| !p.delivered_after(down)).map(|(a, b, _)| (a, b)).collect();
    sim_assert!(sim.world, silent.is_empty(), "pairs silent while the server was down: {silent:?}");
    sim.restart_server();
    let ok = sim.run_until_true(Duration::from_secs(90), |s| converged(s, &clients, 19));
    sim_assert!(
        sim.world,
        ok,
        "not every node came back: {:?}",
        clients.iter().map(|&c| sim.client(c).is_streaming()).collect::<Vec<_>>()
    );
    sim_assert!(sim.world, sim.database().nodes.len() == nodes_before, "nodes lost in the crash");
    for (i, &c) in clients.iter().enumerate() {
        // Online flags are live state; compare who is there and everything else about them.
        let now = sim.client(c).netmap().map(|m| offline(&m.peers));
        let was = before[i].as_ref().map(offline);
        sim_assert!(sim.world, now == was, "node {i}'s netmap changed across the restart");
    }
    // The restarted server works: a new node joins and reaches every netmap; the
    // reusable key made before the crash is still valid.
    let key = sim
        .admin(|s, _| {
            let options = AuthKeyOptions { lifetime: Duration::from_secs(3600), ..Default::default() };
            s.create_auth_key("admin", "alice@example.com", options).unwrap_or_else(|e| panic!("{e}")).1
        })
        .unwrap_or_default();
    let late = sim.add_client(None, "late", RegisterAuth::AuthKey(key));
    let ok =
        sim.run_until_true(Duration::from_secs(10), |s| s.registered(late).is_some() && converged(s, &clients, 20));
    sim_assert!(sim.world, ok, "a node joining after the restart did not reach every netmap");
}

type Peers = std::collections::BTreeMap<ControlNodeId, std::sync::Arc<mesh_core::control::messages::Peer>>;

fn offline(peers: &Peers) -> Vec<mesh_core::control::messages::Peer> {
    peers.values().map(|p| mesh_core::control::messages::Peer { online: false, ..(**p).clone() }).collect()
}

#[test]
fn a_node_cut_off_from_the_server_keeps_its_tunnels_and_catches_up() {
    let (mut sim, clients) = tailnet(seed_from_env(904), 6);
    sim.run_until_true(Duration::from_secs(20), |s| converged(s, &clients, 5));
    sim.world.start_traffic(TrafficConfig { interval: Duration::from_millis(50) });
    sim.partition(clients[0]);
    let cut = sim.world.now();
    // While it is cut off, another node is deleted.
    let victim = sim.registered(clients[5]).map(|r| r.node).unwrap_or(ControlNodeId(0));
    sim.admin(|s, now| s.delete_node(now, "admin", victim).unwrap_or_else(|e| panic!("{e}")));
    sim.run_for(Duration::from_secs(60));
    sim_assert!(
        sim.world,
        peers_of(&sim, clients[0]) == 5,
        "the cut-off node learned of the deletion without a server"
    );
    sim_assert!(sim.world, sim.world.delivered_after(NodeId(0), NodeId(1), cut), "its tunnels stopped");
    sim.heal(clients[0]);
    // Its watchdog (120 s of silence) reconnects it, and it catches up.
    let ok = sim.run_until_true(Duration::from_secs(240), |s| {
        s.client(clients[0]).is_streaming()
            && s.client(clients[0]).netmap().is_some_and(|m| !m.peers.contains_key(&victim))
    });
    sim_assert!(sim.world, ok, "the node did not catch up: {:?}", sim.client_events(clients[0]));
}
