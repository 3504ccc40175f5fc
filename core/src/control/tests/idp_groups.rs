//! Groups filled by the identity provider's group claim: a user gains and loses a declared
//! policy group by single sign-on, the nodes whose filter, SSH rules or peers depend on it
//! get deltas, undeclared and invalid names change nothing, and the groups survive a
//! restart.

use std::sync::Arc;

use super::*;
use crate::policy::{NodeSshAction, MAX_IDP_GROUPS};

/// `group:eng` is declared empty: only the IdP fills it. Its members reach the server
/// (bob's node, tagged) on port 22 and may SSH to it as root.
const POLICY: &str = r#"{
  "groups": {"group:eng": []},
  "tagOwners": {"tag:server": ["bob@example.com"]},
  "acls": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:server:22"]}],
  "ssh": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:server"], "users": ["root"]}]
}"#;

fn groups(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// alice's node `a` (conn 1) and bob's `tag:server` node `b` (conn 2), both streaming.
fn two_users() -> (Harness, NodeId, NodeId) {
    let mut h = Harness::new();
    h.server.set_policy(h.now, "admin", POLICY).unwrap_or_else(|e| panic!("{e}"));
    let alice = h.key("alice@example.com", AuthKeyOptions::default());
    let bob = h.key("bob@example.com", AuthKeyOptions { tags: vec!["tag:server".into()], ..Default::default() });
    let a = h.join(1, "a", &alice);
    let b = h.join(2, "b", &bob);
    h.drain();
    (h, a, b)
}

fn user_groups(h: &Harness, name: &str) -> Vec<String> {
    h.server.users().find(|u| u.name == name).map(|u| u.groups.clone()).unwrap_or_default()
}

#[test]
fn a_user_gains_and_loses_a_group_by_single_sign_on() {
    let (mut h, a, b) = two_users();
    let a_addresses =
        h.server.nodes().find(|n| n.id == a).map(|n| n.addresses.clone()).unwrap_or_else(|| panic!("no a"));

    // alice signs on with `eng` (twice, and a value that names no group): she is in
    // group:eng, so b's filter and SSH rules now name a, and a sees b.
    let changed = h.server.set_user_groups(h.now, "oidc", "alice@example.com", &groups(&["eng", "not a group", "eng"]));
    assert_eq!(changed, Ok(true));
    assert_eq!(user_groups(&h, "alice@example.com"), ["eng"]);
    let before = h.persisted.len();
    let sent = h.drain();
    let persisted = &h.persisted[before..];
    assert!(persisted.iter().any(|c| matches!(c, Change::User(u) if u.groups == ["eng"])), "{persisted:?}");
    assert!(
        persisted.iter().any(|c| matches!(c, Change::Audit(e)
            if e.action == "user-groups" && e.actor == "oidc" && e.detail == "alice@example.com: eng")),
        "{persisted:?}"
    );
    let [ServerMessage::Delta(to_b)] = to(&sent, 2)[..] else { panic!("b: {sent:?}") };
    let filter = to_b.filter.as_ref().unwrap_or_else(|| panic!("b's filter: {to_b:?}"));
    assert_eq!(filter.len(), 1);
    for address in &a_addresses {
        assert!(filter[0].srcs.iter().any(|p| p.contains(*address)), "{filter:?}");
    }
    let ssh = to_b.ssh.as_ref().unwrap_or_else(|| panic!("b's ssh rules: {to_b:?}"));
    assert_eq!(ssh.len(), 1);
    assert_eq!(&ssh[0].principals[..], &[a]);
    assert_eq!(ssh[0].action, NodeSshAction::Accept);
    let [ServerMessage::Delta(to_a)] = to(&sent, 1)[..] else { panic!("a: {sent:?}") };
    assert_eq!(to_a.upsert.iter().map(|p| p.id).collect::<Vec<_>>(), [b], "a now sees b");
    assert!(to_a.filter.is_none(), "a's own filter does not depend on alice's groups");

    // The same groups again (in another order, with repeats): nothing changes, nothing
    // is persisted, audited or sent.
    let before = h.persisted.len();
    let same = h.server.set_user_groups(h.now, "oidc", "alice@example.com", &groups(&["eng", "eng"]));
    assert_eq!(same, Ok(false));
    assert!(h.drain().is_empty());
    assert_eq!(h.persisted.len(), before);

    // A later sign-on without `eng` (with a group the policy does not declare): alice
    // leaves group:eng, b's filter and SSH rules empty again, a no longer sees b.
    let changed = h.server.set_user_groups(h.now, "oidc", "alice@example.com", &groups(&["sales"]));
    assert_eq!(changed, Ok(true));
    assert_eq!(user_groups(&h, "alice@example.com"), ["sales"]);
    let sent = h.drain();
    let [ServerMessage::Delta(to_b)] = to(&sent, 2)[..] else { panic!("b: {sent:?}") };
    // The rule stays for its destination, with no source left.
    let filter = to_b.filter.as_ref().unwrap_or_else(|| panic!("b's filter: {to_b:?}"));
    assert!(filter.iter().all(|r| r.srcs.is_empty()), "{filter:?}");
    assert_eq!(to_b.ssh, Some(Arc::new(vec![])));
    let [ServerMessage::Delta(to_a)] = to(&sent, 1)[..] else { panic!("a: {sent:?}") };
    assert_eq!(to_a.remove, [b]);
}

#[test]
fn undeclared_groups_and_other_users_change_no_node() {
    let (mut h, _, _) = two_users();
    // Recorded (it is what the IdP said), but no node's output depends on it.
    assert_eq!(h.server.set_user_groups(h.now, "oidc", "alice@example.com", &groups(&["sales"])), Ok(true));
    assert!(h.drain().is_empty(), "nothing to stream");
    // A user that does not exist is refused.
    assert_eq!(
        h.server.set_user_groups(h.now, "oidc", "nobody@example.com", &groups(&["eng"])),
        Err(AdminError::NoUser("nobody@example.com".into()))
    );
    assert!(h.drain().is_empty(), "a refused call changes nothing");
}

#[test]
fn group_claims_are_bounded_and_invalid_values_ignored() {
    let (mut h, _, _) = two_users();
    let long = "x".repeat(crate::policy::MAX_IDP_GROUP_BYTES + 1);
    let mut claim: Vec<String> = (0..MAX_IDP_GROUPS + 36).map(|i| format!("g{i:03}")).collect();
    claim.extend([long, "group:eng".into(), "a b".into(), String::new(), "é".into()]);
    assert_eq!(h.server.set_user_groups(h.now, "oidc", "alice@example.com", &claim), Ok(true));
    let kept = user_groups(&h, "alice@example.com");
    assert_eq!(kept.len(), MAX_IDP_GROUPS);
    assert!(kept.iter().all(|g| g.starts_with('g') && g.len() == 4), "{kept:?}");
    h.drain();
    // The audit entry names the user and the groups, bounded by the same limit.
    let entry = h.persisted.iter().rev().find_map(|c| match c {
        Change::Audit(e) if e.action == "user-groups" => Some(e.clone()),
        _ => None,
    });
    let entry = entry.unwrap_or_else(|| panic!("no audit entry"));
    assert!(entry.detail.starts_with("alice@example.com: g000, g001"), "{}", entry.detail);
    // An empty claim empties them (the most recent sign-on is what counts).
    assert_eq!(h.server.set_user_groups(h.now, "oidc", "alice@example.com", &[]), Ok(true));
    assert!(user_groups(&h, "alice@example.com").is_empty());
}

#[test]
fn idp_groups_survive_a_restart_and_a_rename() {
    let (mut h, a, b) = two_users();
    assert_eq!(h.server.set_user_groups(h.now, "oidc", "alice@example.com", &groups(&["eng"])), Ok(true));
    h.server.rename_user(h.now, "admin", "alice@example.com", "alice@example.org").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(user_groups(&h, "alice@example.org"), ["eng"], "a rename keeps the groups");
    h.drain();
    let mut state = State { policy: Some(POLICY.into()), ..State::default() };
    for change in &h.persisted {
        match change {
            Change::User(u) => {
                state.users.retain(|x| x.id != u.id);
                state.users.push(u.clone());
            }
            Change::Node(n) => {
                state.nodes.retain(|x| x.id != n.id);
                state.nodes.push(n.clone());
            }
            _ => {}
        }
    }
    let mut restarted = Harness::with_state(state);
    assert_eq!(user_groups(&restarted, "alice@example.org"), ["eng"]);
    // b reconnects: its first map already has the rule for a (alice is still in eng).
    restarted.server.handle_connect(restarted.now, ConnId(20), machine(2));
    let mut again = register(2, "b", "");
    if let NodeMessage::Register(r) = &mut again {
        r.auth = RegisterAuth::Known;
    }
    restarted.send(20, again);
    let sent = restarted.send(20, NodeMessage::Map { endpoints: vec![] });
    let [ServerMessage::Map(map)] = to(&sent, 20)[..] else { panic!("{sent:?}") };
    assert_eq!(map.node.id, b);
    assert_eq!(map.filter.len(), 1);
    assert_eq!(map.ssh.len(), 1);
    assert_eq!(&map.ssh[0].principals[..], &[a]);
}
