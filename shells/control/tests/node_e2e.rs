//! (c) Nodes end to end over the real port: the core's `ChannelClient` behind the HTTP
//! upgrade on a std `TcpStream`, registering with a pre-auth key made through the CLI, a
//! full map, then deltas; a wrong server key fails the handshake; a malformed message
//! closes only its own connection.

mod common;

use common::{Node, Server, TempDir, DEADLINE};
use mesh_core::control::messages::{NodeMessage, RegisterAuth, ServerMessage};
use mesh_core::wireguard::PrivateKey;

#[test]
fn nodes_register_stream_maps_and_survive_a_bad_neighbour() {
    let dir = TempDir::new("node-e2e");
    let server = Server::start(&dir);
    server.cli(&["users", "create", "alice@example.com"]).ok();
    let key = server.cli(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]).ok();
    let key = key.trim().to_string();
    let server_key = server.key();

    // The first node registers and starts its map.
    let mut first = Node::connect(server.addr, server_key, 1);
    first.register("laptop", RegisterAuth::AuthKey(key.clone()));
    let registered = first.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(registered.name, "laptop");
    assert_eq!(registered.user, "alice@example.com");
    first.send(&NodeMessage::Map { endpoints: vec![] });
    let map = first.expect("Map", |m| match m {
        ServerMessage::Map(map) => Some(map.clone()),
        _ => None,
    });
    assert_eq!(map.node.name, "laptop");
    assert!(map.peers.is_empty());

    // A second node joins: the first gets a delta with it.
    let mut second = Node::connect(server.addr, server_key, 2);
    second.register("desktop", RegisterAuth::AuthKey(key.clone()));
    let r2 = second.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.clone()),
        _ => None,
    });
    second.send(&NodeMessage::Map { endpoints: vec![] });
    let map2 = second.expect("Map", |m| match m {
        ServerMessage::Map(map) => Some(map.clone()),
        _ => None,
    });
    assert_eq!(map2.peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["laptop"]);
    // (One delta when it registers, another when its stream makes it online.)
    let delta = first.expect("a Delta with desktop online", |m| match m {
        ServerMessage::Delta(d) if d.upsert.iter().any(|p| p.id == r2.node && p.online) => Some(d.clone()),
        _ => None,
    });
    assert!(delta.upsert.iter().any(|p| p.name == "desktop"), "{delta:?}");

    // The nodes are listed, online.
    let nodes: serde_json::Value =
        serde_json::from_str(&server.cli(&["nodes", "list", "--json"]).ok()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(nodes.as_array().map(Vec::len), Some(2));
    assert!(nodes.as_array().into_iter().flatten().all(|n| n["online"] == true), "{nodes}");

    // A node that pinned the wrong server key never gets through the handshake.
    let wrong = PrivateKey::from_bytes([99; 32]).public_key();
    let mut impostor = Node::connect(server.addr, wrong, 3);
    assert!(impostor.recv(DEADLINE).is_none(), "the handshake must fail");
    assert!(!impostor.channel.is_established());

    // A malformed message closes that connection only.
    let mut bad = Node::connect(server.addr, server_key, 4);
    bad.send_raw(&[1, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert!(bad.recv(DEADLINE).is_none(), "the server closes a connection that sent garbage");
    let mut bad_version = Node::connect(server.addr, server_key, 5);
    bad_version.send_raw(&[9, 0]);
    assert!(bad_version.recv(DEADLINE).is_none());
    // A record that does not decrypt (garbage on the wire after the handshake), likewise.
    let mut garbage = Node::connect(server.addr, server_key, 6);
    garbage.send(&NodeMessage::Endpoints(vec![]));
    std::io::Write::write_all(
        &mut garbage.stream,
        &[0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(garbage.recv(DEADLINE).is_none(), "the server closes a connection with a forged record");

    // The first node still streams: a rename of the second reaches it as a delta.
    server.cli(&["nodes", "rename", &r2.node.0.to_string(), "workstation"]).ok();
    first.expect("a Delta with the new name", |m| match m {
        ServerMessage::Delta(d) if d.upsert.iter().any(|p| p.name == "workstation") => Some(()),
        _ => None,
    });

    // The second node leaves: the first gets a delta showing it offline.
    drop(second);
    first.expect("a Delta with desktop offline", |m| match m {
        ServerMessage::Delta(d) if d.upsert.iter().any(|p| p.id == r2.node && !p.online) => Some(()),
        _ => None,
    });

    // Deleting the first node closes its stream.
    server.cli(&["nodes", "delete", &registered.node.0.to_string()]).ok();
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        match first.recv(DEADLINE) {
            None => break,
            Some(_) => assert!(std::time::Instant::now() < end, "the deleted node's stream stays open"),
        }
    }

    let (_, metrics) = common::http(server.addr, "GET", "/metrics", &[], "");
    assert!(metrics.contains("meshcontrol_decode_errors_total 2"), "{metrics}");
    assert!(metrics.contains("meshcontrol_handshake_failures_total 1"), "{metrics}");
    assert!(server.log().contains("control connection failed"), "the forged record is logged");
}

#[test]
fn a_restart_keeps_registered_nodes() {
    let dir = TempDir::new("node-restart");
    let mut server = Server::start(&dir);
    server.cli(&["users", "create", "alice@example.com"]).ok();
    let key = server.cli(&["preauthkeys", "create", "--user", "alice@example.com"]).ok();
    let server_key = server.key();
    let mut node = Node::connect(server.addr, server_key, 7);
    node.register("laptop", RegisterAuth::AuthKey(key.trim().to_string()));
    let registered = node.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.clone()),
        _ => None,
    });
    drop(node);
    server.kill();

    let server = Server::start(&dir);
    let mut node = Node::connect(server.addr, server_key, 7);
    node.register("laptop", RegisterAuth::Known);
    let again = node.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(again, registered, "the machine key is recognised after the restart");
    node.send(&NodeMessage::Map { endpoints: vec![] });
    node.expect("Map", |m| matches!(m, ServerMessage::Map(_)).then_some(()));
    // The single-use key stays used.
    let keys: serde_json::Value =
        serde_json::from_str(&server.cli(&["preauthkeys", "list", "--json"]).ok()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(keys[0]["used"], true);
}
