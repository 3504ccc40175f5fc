//! The node's side of an SSH login: which of its compiled SSH rules lets this source node
//! log in as the requested user, and as which local account. First match wins: the rules
//! arrive in policy order with `check` rules first (see `compile`), and a rule whose user
//! map has no entry (or an empty one) for the name is no match and the search goes on.
//!
//! The account itself is resolved by the session runtime through NSS; this says only which
//! name to resolve and whether uid 0 is allowed (`=` mappings, from `autogroup:nonroot`,
//! never give root whatever the name resolves to).

use super::compile::{NodeId, NodeSshAction, NodeSshRule};
#[cfg(test)]
use super::model::SshForwarding;
use super::read::check_local_user;

/// The decision for one login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshAccess<'a> {
    /// Log in as `local_user` under `rule`.
    Accept {
        local_user: String,
        allow_root: bool,
        rule: &'a NodeSshRule,
    },
    /// Ask the coordination server first (the rule's check period), then log in.
    Check {
        local_user: String,
        allow_root: bool,
        rule: &'a NodeSshRule,
    },
    Deny(SshDenied),
}

/// Why a login is refused, in words for the client's banner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshDenied {
    /// No rule names the source node.
    NoRuleForSource,
    /// Rules name the source, but none lets it log in as this user.
    UserNotPermitted(String),
}

impl std::fmt::Display for SshDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshDenied::NoRuleForSource => {
                write!(f, "no SSH rule of the tailnet policy allows this node to log in here")
            }
            SshDenied::UserNotPermitted(user) => {
                write!(f, "the tailnet policy does not let this node log in here as {user:?}")
            }
        }
    }
}

/// The decision for `source` logging in as `requested` under `rules` (this node's
/// compiled SSH rules).
pub fn ssh_access<'a>(rules: &'a [NodeSshRule], source: NodeId, requested: &str) -> SshAccess<'a> {
    let mut named = false;
    for rule in rules.iter().filter(|r| r.principals.contains(&source)) {
        named = true;
        let Some((local_user, allow_root)) = map_user(rule, requested) else { continue };
        return match rule.action {
            NodeSshAction::Accept => SshAccess::Accept { local_user, allow_root, rule },
            NodeSshAction::Check => SshAccess::Check { local_user, allow_root, rule },
        };
    }
    match named {
        true => SshAccess::Deny(SshDenied::UserNotPermitted(requested.to_string())),
        false => SshAccess::Deny(SshDenied::NoRuleForSource),
    }
}

/// The local account `rule` maps `requested` to, and whether it may be uid 0. An exact
/// entry wins over `*`; `=` is the requested name itself (never root); a name that is not
/// a plain account name maps to nothing.
fn map_user(rule: &NodeSshRule, requested: &str) -> Option<(String, bool)> {
    let target = rule.users.get(requested).or_else(|| rule.users.get("*"))?;
    let (name, allow_root) = match target.as_str() {
        "" => return None,
        "=" => (requested, false),
        other => (other, true),
    };
    check_local_user(name).ok()?;
    Some((name.to_string(), allow_root))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;

    fn rule(principals: &[u64], users: &[(&str, &str)], action: NodeSshAction, index: u32) -> NodeSshRule {
        NodeSshRule {
            principals: principals.iter().map(|&n| NodeId(n)).collect(),
            users: Arc::new(users.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<BTreeMap<_, _>>()),
            action,
            forwarding: SshForwarding::NONE,
            accept_env: Arc::from(Vec::new()),
            rule: index,
        }
    }

    const ACCEPT: NodeSshAction = NodeSshAction::Accept;

    #[test]
    fn first_matching_rule_wins_and_maps_the_user() {
        let rules = vec![
            rule(&[1], &[("root", "")], NodeSshAction::Check, 0),
            rule(&[1, 2], &[("*", "="), ("root", "root")], ACCEPT, 1),
            rule(&[3], &[("deploy", "svc-deploy")], ACCEPT, 2),
        ];
        // Node 1's check rule has no usable entry for root ("" is no match): the next rule.
        match ssh_access(&rules, NodeId(1), "root") {
            SshAccess::Accept { local_user, allow_root: true, rule } => {
                assert_eq!((local_user.as_str(), rule.rule), ("root", 1));
            }
            other => panic!("{other:?}"),
        }
        match ssh_access(&rules, NodeId(2), "alice") {
            SshAccess::Accept { local_user, allow_root: false, .. } => assert_eq!(local_user, "alice"),
            other => panic!("{other:?}"),
        }
        match ssh_access(&rules, NodeId(3), "deploy") {
            SshAccess::Accept { local_user, allow_root: true, .. } => assert_eq!(local_user, "svc-deploy"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ssh_access(&rules, NodeId(3), "alice"),
            SshAccess::Deny(SshDenied::UserNotPermitted("alice".into()))
        );
        assert_eq!(ssh_access(&rules, NodeId(9), "alice"), SshAccess::Deny(SshDenied::NoRuleForSource));
        assert_eq!(ssh_access(&[], NodeId(1), "alice"), SshAccess::Deny(SshDenied::NoRuleForSource));
    }

    #[test]
    fn check_rules_hold_and_odd_names_never_map() {
        let rules = vec![rule(&[1], &[("*", "=")], NodeSshAction::Check, 4)];
        assert!(matches!(
            ssh_access(&rules, NodeId(1), "bob"),
            SshAccess::Check { ref local_user, allow_root: false, .. } if local_user == "bob"
        ));
        // Numeric, padded, empty or path-like names are never looked up: `0`, ` 0`, `00`.
        for name in ["0", " 0", "00", "", "-x", "a/b", "a:b", "root\n", &"x".repeat(33)] {
            assert!(
                matches!(ssh_access(&rules, NodeId(1), name), SshAccess::Deny(SshDenied::UserNotPermitted(_))),
                "{name:?}"
            );
        }
    }
}
