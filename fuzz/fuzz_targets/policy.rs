//! Arbitrary text as a policy file, then compiled for a small tailnet. Must never panic;
//! an accepted policy must compile, no node may list itself among its peers, and the
//! incremental compiler (each node removed and put back) must agree with the full build.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

use mesh_core::policy::{compile, NodeId, NodeInfo, Policy, Tailnet};

fn tailnet() -> Vec<NodeInfo> {
    let node = |i: u8, user: &str, tags: &[&str], routes: &[&str]| NodeInfo {
        id: NodeId(u64::from(i)),
        name: format!("n{i}"),
        user: user.to_string(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        addresses: vec![
            IpAddr::from([100, 64, 0, i]),
            IpAddr::from([0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, u16::from(i)]),
        ],
        routes: routes.iter().filter_map(|r| r.parse().ok()).collect(),
        idp_groups: Vec::new(),
    };
    vec![
        node(1, "alice@example.com", &[], &[]),
        node(2, "alice@example.com", &[], &[]),
        node(3, "bob@example.com", &[], &[]),
        node(4, "bob@", &["tag:web"], &[]),
        node(5, "carol@other.org", &["tag:db", "tag:web"], &["10.0.0.0/8", "0.0.0.0/0"]),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = Policy::parse("fuzz", text) else { return };
    let nodes = tailnet();
    let compiled = compile(&policy, &nodes);
    assert_eq!(compiled.nodes.len(), nodes.len());
    for (i, node) in compiled.nodes.iter().enumerate() {
        assert!(!node.peers().contains(&i));
        for rule in node.ssh.iter() {
            assert!(!rule.principals.is_empty());
        }
    }
    let policy = Arc::new(policy);
    let slots: Vec<Option<NodeInfo>> = nodes.iter().cloned().map(Some).collect();
    let mut tailnet = Tailnet::new(policy.clone(), slots.clone());
    for (slot, node) in nodes.iter().enumerate() {
        let mut without = slots.clone();
        without[slot] = None;
        tailnet.set(slot, None);
        let fresh = Tailnet::new(policy.clone(), without);
        for s in 0..nodes.len() {
            assert_eq!(tailnet.node(s), fresh.node(s), "slot {s} after removing {slot}");
        }
        tailnet.set(slot, Some(node.clone()));
    }
    for (s, node) in compiled.nodes.iter().enumerate() {
        assert_eq!(tailnet.node(s), Some(node), "slot {s} after putting every node back");
    }
});
