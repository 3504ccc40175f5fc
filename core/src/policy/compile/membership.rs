//! Which selectors and rules one node matches, decided from the node and the policy alone.
//! An incremental change evaluates these for the one node it touches; [`super::build`]
//! resolves the same selectors for the whole inventory through indexes, and a property
//! test holds the two to the same answers.

use std::collections::BTreeMap;

use super::super::alias::{user_matches, Alias};
use super::super::model::Policy;
use super::NodeInfo;
use crate::wireguard::IpPrefix;

/// Whether an identity selector (user, group, tag, autogroup) names `node`; `groups` are
/// the groups of the node's user.
pub(super) fn identity(alias: &Alias, node: &NodeInfo, groups: &[String]) -> bool {
    match alias {
        Alias::User(u) => !node.is_tagged() && user_matches(u, &node.user),
        Alias::Group(g) => !node.is_tagged() && groups.iter().any(|x| x == g),
        Alias::Tag(t) => node.tags.contains(t),
        Alias::Member => !node.is_tagged(),
        Alias::Tagged => node.is_tagged(),
        Alias::All | Alias::DangerAll => true,
        Alias::Host(..) | Alias::Prefix(_) | Alias::SelfNodes | Alias::Internet => false,
    }
}

/// Whether a source selector covers `node` (an address selector covers the nodes in it).
pub(super) fn source(alias: &Alias, node: &NodeInfo, groups: &[String]) -> bool {
    identity(alias, node, groups)
        || matches!(alias, Alias::Host(_, p) | Alias::Prefix(p) if node.addresses.iter().any(|a| p.contains(*a)))
}

/// Whether a destination selector covers `node` (an address selector also covers the
/// routers of subnets it overlaps; `autogroup:internet` covers exit nodes).
pub(super) fn destination(alias: &Alias, node: &NodeInfo, groups: &[String]) -> bool {
    identity(alias, node, groups) || covers(alias, node)
}

/// Whether a destination selector covers `node` by address or route.
pub(super) fn covers(alias: &Alias, node: &NodeInfo) -> bool {
    match alias {
        Alias::Host(_, p) | Alias::Prefix(p) => {
            node.addresses.iter().any(|a| p.contains(*a)) || node.routes.iter().any(|r| overlaps(r, p))
        }
        Alias::Internet => node.routes.iter().any(IpPrefix::is_empty),
        Alias::All => true,
        _ => false,
    }
}

/// Whether a source selector adds the addresses of the nodes it names to a rule's source
/// prefixes (address selectors and `*` add their own prefixes instead).
pub(super) fn adds_node_addresses(alias: &Alias) -> bool {
    !matches!(alias, Alias::Host(..) | Alias::Prefix(_) | Alias::All | Alias::DangerAll)
}

/// Whether a source selector makes its users' nodes targets of an `autogroup:self`
/// destination.
pub(super) fn names_users(alias: &Alias) -> bool {
    matches!(alias, Alias::User(_) | Alias::Group(_) | Alias::Member)
}

/// Whether an SSH rule reaches `node` by its `dst` tag or user.
pub(super) fn ssh_destination(dsts: &[Alias], node: &NodeInfo) -> bool {
    dsts.iter().any(|d| match d {
        Alias::Tag(t) => node.tags.contains(t),
        Alias::User(u) => !node.is_tagged() && user_matches(u, &node.user),
        _ => false,
    })
}

/// Group member selector -> the groups listing it.
pub(super) fn member_groups(policy: &Policy) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, members) in &policy.groups {
        for m in members {
            out.entry(m.clone()).or_default().push(group.clone());
        }
    }
    out
}

/// The groups `user` belongs to: those listing it, also in the `user@` form that
/// [`user_matches`] accepts.
pub(super) fn groups_of(member_groups: &BTreeMap<String, Vec<String>>, user: &str) -> Vec<String> {
    let mut out: Vec<String> =
        member_groups.get(user).into_iter().chain(member_groups.get(&format!("{user}@"))).flatten().cloned().collect();
    out.sort();
    out.dedup();
    out
}

/// One node's place in every rule.
#[derive(Debug, Default)]
pub(super) struct Membership {
    /// Per network rule: among the sources; adding its addresses to the source prefixes;
    /// among the destinations; an `autogroup:self` target.
    pub(super) src: Vec<bool>,
    pub(super) adds: Vec<bool>,
    pub(super) dst: Vec<bool>,
    pub(super) self_target: Vec<bool>,
    /// Per SSH rule (in the tailnet's SSH order): a source; a destination by tag or user.
    pub(super) ssh_src: Vec<bool>,
    pub(super) ssh_dst: Vec<bool>,
}

impl Membership {
    pub(super) fn of(policy: &Policy, ssh_order: &[usize], node: &NodeInfo, groups: &[String]) -> Self {
        let mut m = Membership::default();
        for rule in &policy.rules {
            m.src.push(rule.srcs.iter().any(|s| source(s, node, groups)));
            m.adds.push(rule.srcs.iter().any(|s| adds_node_addresses(s) && identity(s, node, groups)));
            m.dst.push(rule.dsts.iter().any(|d| destination(d, node, groups)));
            m.self_target.push(
                rule.dsts.contains(&Alias::SelfNodes)
                    && rule.srcs.iter().any(|s| names_users(s) && identity(s, node, groups)),
            );
        }
        for &k in ssh_order {
            let rule = &policy.ssh[k];
            m.ssh_src.push(rule.srcs.iter().any(|s| identity(s, node, groups)));
            m.ssh_dst.push(ssh_destination(&rule.dsts, node));
        }
        m
    }

    /// The node's class: bit 2r when it is a source of rule r, 2r+1 when a destination.
    pub(super) fn signature(&self) -> Vec<u64> {
        signature(self.src.len(), |r| (self.src[r], self.dst[r]))
    }

    /// The classes that see this node: those that are destinations of a rule it is a
    /// source of, or sources of a rule it is a destination of (as a signature mask).
    pub(super) fn seen_by(&self) -> Vec<u64> {
        signature(self.src.len(), |r| (self.dst[r], self.src[r]))
    }
}

/// A class signature over `rules` rules: bit 2r set when `of(r).0` (source of rule r),
/// bit 2r+1 when `of(r).1` (destination of it).
pub(super) fn signature(rules: usize, of: impl Fn(usize) -> (bool, bool)) -> Vec<u64> {
    let mut sig = vec![0u64; (2 * rules).div_ceil(64)];
    for r in 0..rules {
        let (source, destination) = of(r);
        for (b, set) in [(2 * r, source), (2 * r + 1, destination)] {
            if set {
                sig[b / 64] |= 1 << (b % 64);
            }
        }
    }
    sig
}

/// Whether bit `b` of a signature is set.
pub(super) fn has_bit(signature: &[u64], b: usize) -> bool {
    signature.get(b / 64).is_some_and(|w| w & (1 << (b % 64)) != 0)
}

fn overlaps(a: &IpPrefix, b: &IpPrefix) -> bool {
    a.addr().is_ipv4() == b.addr().is_ipv4() && (a.contains(b.addr()) || b.contains(a.addr()))
}
