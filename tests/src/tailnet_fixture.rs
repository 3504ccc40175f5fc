//! A synthetic tailnet and policy of a chosen size, for the policy and control-server
//! benchmarks: users with a few nodes each, a tenth of the nodes tagged, groups of users,
//! and a policy of `rules` network rules in the shapes real policies use (group to tag on
//! a port, user to tag, tag to tag, everyone to a web tag, CIDRs), optionally with
//! `autogroup:self` rules.

use std::fmt::Write;
use std::net::IpAddr;

use mesh_core::policy::{NodeId, NodeInfo};

pub const TAGS: usize = 20;
pub const GROUPS: usize = 20;

fn user(u: usize) -> String {
    format!("user{u}@example.com")
}

/// `nodes` nodes: users own 4 each; every tenth node is tagged, the tags taking turns.
pub fn nodes(nodes: usize) -> Vec<NodeInfo> {
    (0..nodes)
        .map(|i| {
            let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let tags = if i % 10 == 9 { vec![format!("tag:t{}", (i / 10) % TAGS)] } else { Vec::new() };
            NodeInfo {
                id: NodeId(i as u64 + 1),
                name: format!("node{i}"),
                user: user(i / 4),
                tags,
                addresses: vec![
                    IpAddr::from((0x6440_0000u32 + n).to_be_bytes()),
                    IpAddr::from(std::net::Ipv6Addr::from(
                        0xfd7a_115c_a1e0_0000_0000_0000_0000_0000u128 + u128::from(n),
                    )),
                ],
                routes: Vec::new(),
                idp_groups: Vec::new(),
            }
        })
        .collect()
}

/// A policy over [`nodes`]`(nodes)` with `rules` acls; with `self_rules`, one in ten of
/// them is `autogroup:member -> autogroup:self` on a port.
pub fn policy(nodes: usize, rules: usize, self_rules: bool) -> String {
    let users = nodes.div_ceil(4).max(1);
    let mut p = String::from("{\n  \"groups\": {\n");
    for g in 0..GROUPS {
        let members: Vec<String> = (0..users).filter(|u| u % GROUPS == g).map(|u| format!("\"{}\"", user(u))).collect();
        let _ = writeln!(p, "    \"group:g{g}\": [{}],", members.join(", "));
    }
    p.push_str("  },\n  \"tagOwners\": {\n");
    for t in 0..TAGS {
        let _ = writeln!(p, "    \"tag:t{t}\": [\"group:g{}\"],", t % GROUPS);
    }
    p.push_str("  },\n  \"acls\": [\n");
    for r in 0..rules {
        let port = 1000 + r;
        let (src, dst) = match r % 10 {
            0 if self_rules => ("\"autogroup:member\"".to_string(), format!("autogroup:self:{port}")),
            0..=2 => (format!("\"group:g{}\"", r % GROUPS), format!("tag:t{}:{port}", r % TAGS)),
            3 | 4 => (format!("\"{}\"", user(r % users)), format!("tag:t{}:{port}", (r + 1) % TAGS)),
            5 | 6 => (format!("\"tag:t{}\"", r % TAGS), format!("tag:t{}:{port}", (r + 3) % TAGS)),
            7 => ("\"*\"".to_string(), format!("tag:t{}:443", r % TAGS)),
            8 => ("\"100.64.0.0/16\"".to_string(), format!("tag:t{}:{port}", r % TAGS)),
            _ => (format!("\"group:g{}\"", r % GROUPS), format!("group:g{}:{port}", (r + 1) % GROUPS)),
        };
        let _ = writeln!(p, "    {{\"action\": \"accept\", \"src\": [{src}], \"dst\": [\"{dst}\"]}},");
    }
    p.push_str("  ],\n  \"ssh\": [\n");
    p.push_str("    {\"action\": \"check\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self\"], \"users\": [\"autogroup:nonroot\"]},\n");
    for t in 0..TAGS {
        let _ = writeln!(
            p,
            "    {{\"action\": \"accept\", \"src\": [\"group:g{}\"], \"dst\": [\"tag:t{t}\"], \"users\": [\"root\", \"deploy\"]}},",
            t % GROUPS
        );
    }
    p.push_str("  ],\n}\n");
    p
}
