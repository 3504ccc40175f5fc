//! The incremental compiler against the full build: after every change, each node's
//! output equals what a fresh build of the same inventory gives, and every node whose
//! output changed is reported. Nodes carry IdP groups (declared, declared-but-empty
//! `group:g2`, undeclared) so both paths resolve groups an identity provider fills.

use std::net::IpAddr;
use std::sync::Arc;

use super::{NodeId, NodeInfo, Tailnet};
use crate::policy::Policy;
use crate::rng::Rng;
use crate::wireguard::IpPrefix;

const SRCS: &[&str] = &[
    "u0@ex.com",
    "u1@ex.com",
    "group:g0",
    "group:g1",
    "group:g2",
    "tag:t0",
    "tag:t1",
    "*",
    "autogroup:member",
    "autogroup:tagged",
    "autogroup:danger-all",
    "100.64.0.0/30",
    "h0",
    "100.64.0.5",
];
const DSTS: &[&str] = &[
    "u1@ex.com:22",
    "u2@ex.com:*",
    "group:g0:*",
    "group:g1:80",
    "group:g2:*",
    "tag:t0:80",
    "tag:t1:*",
    "*:443",
    "autogroup:self:22",
    "autogroup:self:*",
    "100.64.0.2:80",
    "10.0.0.0/8:*",
    "autogroup:internet:*",
    "autogroup:member:*",
    "autogroup:tagged:*",
    "h0:22",
];
const SSH_SRCS: &[&str] = &["u0@ex.com", "group:g0", "group:g1", "group:g2", "autogroup:member", "tag:t0"];
const SSH_DSTS: &[&str] = &["autogroup:self", "tag:t0", "tag:t1", "u0@ex.com"];
const SSH_USERS: &[&str] =
    &[r#"["root"]"#, r#"["autogroup:nonroot"]"#, r#"["localpart:*@ex.com"]"#, r#"["deploy", "root"]"#];
const USERS: &[&str] = &["u0@ex.com", "u1@ex.com", "u2@ex.com", "u3@ex.com", "root@ex.com", "x@other.org"];

fn pick<'a>(rng: &mut Rng, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len() as u64) as usize]
}

fn random_policy(rng: &mut Rng) -> Policy {
    loop {
        let mut acls = Vec::new();
        for _ in 0..1 + rng.below(5) {
            let srcs: Vec<String> = (0..1 + rng.below(2)).map(|_| format!("{:?}", pick(rng, SRCS))).collect();
            let dsts: Vec<String> = (0..1 + rng.below(2)).map(|_| format!("{:?}", pick(rng, DSTS))).collect();
            acls.push(format!(r#"{{"action": "accept", "src": [{}], "dst": [{}]}}"#, srcs.join(", "), dsts.join(", ")));
        }
        let mut ssh = Vec::new();
        for _ in 0..rng.below(4) {
            let action = if rng.chance(0.5) { "accept" } else { "check" };
            ssh.push(format!(
                r#"{{"action": "{action}", "src": [{:?}], "dst": [{:?}], "users": {}}}"#,
                pick(rng, SSH_SRCS),
                pick(rng, SSH_DSTS),
                pick(rng, SSH_USERS)
            ));
        }
        let text = format!(
            r#"{{
  "groups": {{"group:g0": ["u0@ex.com", "u1@ex.com"], "group:g1": ["u2@ex.com", "x@other.org", "root@ex.com"], "group:g2": []}},
  "hosts": {{"h0": "100.64.0.4/31"}},
  "tagOwners": {{"tag:t0": ["u0@ex.com"], "tag:t1": ["group:g1"]}},
  "acls": [{}],
  "ssh": [{}]
}}"#,
            acls.join(",\n"),
            ssh.join(",\n")
        );
        if let Ok(p) = Policy::parse("random", &text) {
            return p;
        }
    }
}

fn random_node(rng: &mut Rng, slot: usize) -> NodeInfo {
    let n = u32::try_from(slot).unwrap_or(0) + 1;
    // Now and then a node repeats slot 0's address (an offline inventory may).
    let v4 = if rng.chance(0.1) { 1 } else { n };
    let tags = match rng.below(5) {
        0 => vec!["tag:t0".to_string()],
        1 => vec!["tag:t1".to_string()],
        2 => vec!["tag:t0".to_string(), "tag:t1".to_string()],
        _ => Vec::new(),
    };
    let routes = match rng.below(6) {
        0 => vec![IpPrefix::new(IpAddr::from([10, 1, 0, 0]), 16).unwrap_or_else(|e| panic!("{e:?}"))],
        1 => vec![IpPrefix::default_route(false)],
        _ => Vec::new(),
    };
    // What an identity provider may have said about the node's user; the two nodes of a
    // user may disagree here (the server never does that, the compiler must not care).
    let idp_groups = match rng.below(6) {
        0 => vec!["group:g2".to_string()],
        1 => vec!["group:g0".to_string(), "group:g2".to_string()],
        2 => vec!["group:g1".to_string()],
        3 => vec!["group:undeclared".to_string()],
        _ => Vec::new(),
    };
    NodeInfo {
        id: NodeId(slot as u64 + 100),
        name: format!("n{slot}"),
        user: pick(rng, USERS).to_string(),
        tags,
        addresses: vec![
            IpAddr::from((0x6440_0000u32 + v4).to_be_bytes()),
            IpAddr::from(std::net::Ipv6Addr::from(0xfd7a_115c_a1e0_0000_0000_0000_0000_0000u128 + u128::from(n))),
        ],
        routes,
        idp_groups,
    }
}

#[test]
fn incremental_changes_equal_a_fresh_build() {
    const SLOTS: usize = 14;
    for seed in 1..=400u32 {
        let mut material = [0u8; 32];
        material[..4].copy_from_slice(&seed.to_le_bytes());
        let mut rng = Rng::new(material);
        let policy = Arc::new(random_policy(&mut rng));
        let mut slots: Vec<Option<NodeInfo>> =
            (0..SLOTS).map(|s| rng.chance(0.5).then(|| random_node(&mut rng, s))).collect();
        let mut tailnet = Tailnet::new(policy.clone(), slots.clone());
        for step in 0..40 {
            let slot = rng.below(SLOTS as u64 + 2) as usize;
            let node = rng.chance(0.7).then(|| random_node(&mut rng, slot));
            if slot >= slots.len() {
                slots.resize(slot + 1, None);
            }
            let old = std::mem::replace(&mut slots[slot], node.clone());
            let before: Vec<_> = (0..slots.len()).map(|s| tailnet.node(s).cloned()).collect();
            let changed = tailnet.set(slot, node);
            let fresh = Tailnet::new(policy.clone(), slots.clone());
            for (s, before) in before.iter().enumerate() {
                assert_eq!(
                    tailnet.node(s),
                    fresh.node(s),
                    "seed {seed} step {step}: slot {s} differs after setting slot {slot} from {old:?} to {:?}\n{policy:#?}",
                    slots[slot]
                );
                if !changed.contains(&s) {
                    assert_eq!(
                        before.as_ref(),
                        tailnet.node(s),
                        "seed {seed} step {step}: slot {s} changed unreported"
                    );
                }
                assert_eq!(tailnet.viewers(s), fresh.viewers(s), "seed {seed} step {step}: viewers of {s}");
            }
        }
    }
}
