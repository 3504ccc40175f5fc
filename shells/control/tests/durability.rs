//! (b) Durability: CLI writes in a loop while the server is killed with SIGKILL at a random
//! moment. After a restart on the same state dir, every write the CLI reported done (exit
//! 0) is there, and no user appears twice.

mod common;

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::time::Duration;

use common::{cli, Server, TempDir};

fn random_below(n: u64) -> u64 {
    RandomState::new().hash_one(std::process::id()) % n
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = TempDir::new("durability");
    let mut server = Server::start(&dir);
    let state = server.state.clone();
    let writer = std::thread::spawn(move || {
        let mut done = Vec::new();
        let mut failed = 0;
        for n in 1..=1000 {
            let name = format!("u{n}@example.com");
            let out = cli(&state, &["users", "create", &name], None);
            match out.code {
                0 => done.push(name),
                // The server is gone; what it did not acknowledge may or may not be there.
                _ => failed += 1,
            }
            if failed > 3 {
                break;
            }
        }
        done
    });
    // Somewhere inside the loop (1000 writes take seconds; the kill comes within 0.5 s).
    std::thread::sleep(Duration::from_millis(50 + random_below(400)));
    server.kill();
    let done = writer.join().unwrap_or_else(|_| panic!("the writer panicked"));
    eprintln!("{} writes acknowledged before the kill", done.len());
    assert!(done.len() < 1000, "the kill came after the loop");

    let server = Server::start(&dir);
    let users: serde_json::Value =
        serde_json::from_str(&server.cli(&["users", "list", "--json"]).ok()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> =
        users.as_array().into_iter().flatten().filter_map(|u| u["name"].as_str().map(str::to_string)).collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "a user appears twice: {names:?}");
    for name in &done {
        assert!(unique.contains(name), "{name} was acknowledged but is gone after the restart");
    }
    // The audit log has one entry per user kept.
    let audit: serde_json::Value = serde_json::from_str(&server.cli(&["audit", "--json", "--limit", "1000"]).ok())
        .unwrap_or_else(|e| panic!("{e}"));
    let created = audit.as_array().into_iter().flatten().filter(|e| e["action"] == "user-create").count();
    assert_eq!(created, names.len());
    // And the server goes on from there.
    server.cli(&["users", "create", "after@example.com"]).ok();
}

/// The same for node registrations: every node that was told `Registered` (which the server
/// sends only after the node is committed) is there after a SIGKILL and a restart.
#[test]
fn registered_nodes_survive_kill_9() {
    use common::Node;
    use mesh_core::control::messages::{NodeMessage, Register, RegisterAuth, ServerMessage};

    let dir = TempDir::new("durability-nodes");
    let mut server = Server::start(&dir);
    server.cli(&["users", "create", "alice@example.com"]).ok();
    let key = server.cli(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]).ok();
    let key = key.trim().to_string();
    let (addr, server_key) = (server.addr, server.key());
    let writer = std::thread::spawn(move || {
        let mut registered = Vec::new();
        let mut failed = 0;
        for n in 1..=250u8 {
            let name = format!("h{n}");
            let Ok(mut node) = Node::try_connect(addr, server_key, n) else {
                failed += 1;
                if failed > 3 {
                    break;
                }
                continue;
            };
            let sent = node.try_send(&NodeMessage::Register(Register {
                node_key: node.node_key,
                hostname: name.clone(),
                ssh_host_keys: vec![],
                requested_tags: vec![],
                ssh: false,
                auth: RegisterAuth::AuthKey(key.clone()),
            }));
            if sent && matches!(node.recv(common::DEADLINE), Some(ServerMessage::Registered(_))) {
                registered.push(name);
            }
        }
        registered
    });
    std::thread::sleep(Duration::from_millis(50 + random_below(300)));
    server.kill();
    let registered = writer.join().unwrap_or_else(|_| panic!("the writer panicked"));
    eprintln!("{} nodes registered before the kill", registered.len());

    let server = Server::start(&dir);
    let nodes: serde_json::Value =
        serde_json::from_str(&server.cli(&["nodes", "list", "--json"]).ok()).unwrap_or_else(|e| panic!("{e}"));
    let names: BTreeSet<String> =
        nodes.as_array().into_iter().flatten().filter_map(|n| n["name"].as_str().map(str::to_string)).collect();
    for name in &registered {
        assert!(names.contains(name), "{name} was told Registered but is gone after the restart");
    }
}
