//! The policy's own `tests` and `sshTests`, evaluated on identities rather than on a
//! tailnet's nodes (so `policy check` works offline, before any node exists): a test says
//! "alice may reach tag:web on 443", and that is true when some rule's sources include
//! alice and its destinations include tag:web on that port.

use super::alias::{user_matches, Alias};
use super::hujson::Located;
use super::model::{AclTest, NetRule, Policy, SshAction, SshRule, SshTest, SshUser};
use crate::ip::packet::Proto;
use crate::wireguard::IpPrefix;

/// Runs every test of the policy; the first failure is the error.
pub(crate) fn run_tests(policy: &Policy) -> Result<(), Located> {
    for test in &policy.tests {
        acl_test(policy, test)?;
    }
    for test in &policy.ssh_tests {
        ssh_test(policy, test)?;
    }
    Ok(())
}

fn acl_test(policy: &Policy, test: &AclTest) -> Result<(), Located> {
    let protos = if test.protos.is_empty() { vec![Proto::Tcp] } else { test.protos.clone() };
    for (expect, list) in [(true, &test.accept), (false, &test.deny)] {
        for target in list {
            for proto in &protos {
                let allowed =
                    policy.rules.iter().any(|r| allows(policy, r, &test.src, &target.dst, *proto, target.port));
                if allowed != expect {
                    let (should, does) = if expect { ("accepted", "denies") } else { ("denied", "accepts") };
                    return Err(Located::new(
                        test.origin.pos,
                        format!(
                            "{} failed: from {} to {} ({}) should be {should}, but the policy {does} it",
                            test.origin.path,
                            test.src,
                            target.text,
                            proto_name(*proto)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn proto_name(p: Proto) -> String {
    match p {
        Proto::Tcp => "tcp".into(),
        Proto::Udp => "udp".into(),
        Proto::Icmp => "icmp".into(),
        Proto::Other(n) => format!("protocol {n}"),
    }
}

/// Whether `rule` lets `src` reach `dst` on `port` over `proto`.
fn allows(policy: &Policy, rule: &NetRule, src: &Alias, dst: &Alias, proto: Proto, port: u16) -> bool {
    let proto_ok = if rule.protos.is_empty() {
        matches!(proto, Proto::Tcp | Proto::Udp | Proto::Icmp)
    } else {
        rule.protos.contains(&proto)
    };
    let port_ok = !matches!(proto, Proto::Tcp | Proto::Udp) || rule.ports.iter().any(|r| r.contains(port));
    proto_ok
        && port_ok
        && rule.srcs.iter().any(|s| source_matches(policy, s, src))
        && rule.dsts.iter().any(|d| destination_matches(policy, d, dst, src))
}

fn same_user(a: &str, b: &str) -> bool {
    user_matches(a, b) || user_matches(b, a) || a.trim_end_matches('@') == b.trim_end_matches('@')
}

fn in_group(policy: &Policy, group: &str, user: &str) -> bool {
    policy.groups.get(group).is_some_and(|members| members.iter().any(|m| same_user(m, user)))
}

fn within(outer: &IpPrefix, inner: &IpPrefix) -> bool {
    outer.len() <= inner.len() && outer.contains(inner.addr())
}

/// Whether the rule selector `selector` includes the test's identity `who`.
fn source_matches(policy: &Policy, selector: &Alias, who: &Alias) -> bool {
    match (selector, who) {
        (Alias::All | Alias::DangerAll, _) => true,
        (Alias::User(a), Alias::User(b)) => same_user(a, b),
        (Alias::Group(g), Alias::User(u)) => in_group(policy, g, u),
        (Alias::Group(a), Alias::Group(b)) => a == b,
        (Alias::Tag(a), Alias::Tag(b)) => a == b,
        (Alias::Member, Alias::User(_) | Alias::Group(_)) => true,
        (Alias::Tagged, Alias::Tag(_)) => true,
        (Alias::Host(_, p) | Alias::Prefix(p), Alias::Host(_, q) | Alias::Prefix(q)) => within(p, q),
        _ => false,
    }
}

/// Whether the rule destination `selector` includes the test's target, for source `src`.
fn destination_matches(policy: &Policy, selector: &Alias, target: &Alias, src: &Alias) -> bool {
    match (selector, target) {
        (Alias::All, _) => true,
        (Alias::SelfNodes, Alias::User(t)) => matches!(src, Alias::User(s) if same_user(s, t)),
        (Alias::Internet, Alias::Prefix(p)) => !tailnet_range(p),
        (Alias::SelfNodes | Alias::Internet, _) => false,
        _ => source_matches(policy, selector, target),
    }
}

fn tailnet_range(p: &IpPrefix) -> bool {
    ["100.64.0.0/10", "fd7a:115c:a1e0::/48"]
        .iter()
        .filter_map(|r| r.parse::<IpPrefix>().ok())
        .any(|r| within(&r, p) || within(p, &r))
}

/// What the first matching SSH rule (check rules first) decides for a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SshOutcome {
    Accept,
    Check,
    Deny,
}

/// The decision for `src` logging in to `dst` as `user`, as a node would take it.
pub(crate) fn ssh_decision(policy: &Policy, src: &Alias, dst: &Alias, user: &str) -> SshOutcome {
    let mut order: Vec<&SshRule> = policy.ssh.iter().collect();
    order.sort_by_key(|r| r.action != SshAction::Check);
    for rule in order {
        let src_ok = rule.srcs.iter().any(|s| source_matches(policy, s, src));
        let dst_ok = rule.dsts.iter().any(|d| match (d, dst) {
            (Alias::Tag(a), Alias::Tag(b)) => a == b,
            (Alias::User(a), Alias::User(b)) => same_user(a, b),
            (Alias::SelfNodes, Alias::User(t)) => matches!(src, Alias::User(s) if same_user(s, t)),
            (Alias::SelfNodes, Alias::SelfNodes) => matches!(src, Alias::User(_)),
            _ => false,
        });
        let user_ok = rule.users.iter().any(|u| match u {
            SshUser::Root => user == "root",
            SshUser::NonRoot => user != "root",
            SshUser::Named(n) => n == user,
            SshUser::Localpart { domain } => match src {
                Alias::User(s) => s.split_once('@').is_some_and(|(local, d)| d == domain && local == user),
                _ => false,
            },
        });
        if src_ok && dst_ok && user_ok {
            return match rule.action {
                SshAction::Accept => SshOutcome::Accept,
                SshAction::Check => SshOutcome::Check,
            };
        }
    }
    SshOutcome::Deny
}

fn ssh_test(policy: &Policy, test: &SshTest) -> Result<(), Located> {
    let expectations =
        [(SshOutcome::Accept, &test.accept), (SshOutcome::Check, &test.check), (SshOutcome::Deny, &test.deny)];
    for dst in &test.dsts {
        for (expect, users) in expectations {
            for user in users {
                let got = ssh_decision(policy, &test.src, dst, user);
                if got != expect {
                    return Err(Located::new(
                        test.origin.pos,
                        format!(
                            "{} failed: {} logging in to {dst} as {user:?} should be {}, but the policy gives {}",
                            test.origin.path,
                            test.src,
                            outcome(expect),
                            outcome(got)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn outcome(o: SshOutcome) -> &'static str {
    match o {
        SshOutcome::Accept => "accept",
        SshOutcome::Check => "check",
        SshOutcome::Deny => "deny",
    }
}
