//! One node's output from the resolved rules: its filter, its SSH rules, and the peers it
//! sees. The full build and every incremental change build outputs through these.

use std::net::IpAddr;
use std::sync::Arc;

use super::super::alias::Alias;
use super::super::model::SshAction;
use super::membership::{destination, has_bit, signature};
use super::{NodeInfo, NodePolicy, NodeSet, NodeSshAction, NodeSshRule, Tailnet};
use crate::ip::filter::{FilterRule, PortRange};
use crate::wireguard::IpPrefix;

impl Tailnet {
    /// The output of the node in `slot`, reusing `old`'s shared parts where they are equal
    /// (so that callers can tell "unchanged" by pointer).
    pub(super) fn output(&self, slot: usize, node: &NodeInfo, old: Option<&NodePolicy>) -> NodePolicy {
        let class = self.class_ids.get(&self.signature(slot)).copied().unwrap_or(usize::MAX);
        let self_rule = self.rules.iter().any(|r| r.self_applies(slot));
        let (filter, origins) = self.filter_of(slot, node, class);
        let filter = reuse(filter, old.map(|o| &o.filter));
        let ssh = reuse(self.ssh_of(slot, node), old.map(|o| &o.ssh));
        let visible = self.visible_of(class, self_rule, node, old.map(|o| &o.visible));
        NodePolicy { filter, origins, ssh, visible, class, self_rule, slot }
    }

    /// Bit 2r: a source of rule r; bit 2r+1: a destination of it.
    pub(super) fn signature(&self, slot: usize) -> Vec<u64> {
        signature(self.rules.len(), |r| (self.rules[r].srcs.contains(slot), self.rules[r].dsts.contains(slot)))
    }

    /// What a class of nodes sees: the sources of the rules it is a destination of and
    /// the destinations of the rules it is a source of.
    pub(super) fn class_visibility(&self, signature: &[u64]) -> NodeSet {
        let mut seen = NodeSet::with_len(self.slots.len());
        for (r, rule) in self.rules.iter().enumerate() {
            if has_bit(signature, 2 * r + 1) {
                seen.union_with(&rule.srcs);
            }
            if has_bit(signature, 2 * r) {
                seen.union_with(&rule.dsts);
            }
        }
        seen
    }

    pub(super) fn visible_of(
        &self,
        class: usize,
        self_rule: bool,
        node: &NodeInfo,
        old: Option<&Arc<NodeSet>>,
    ) -> Arc<NodeSet> {
        let class = self.classes.get(class).and_then(Option::as_ref).map(|c| c.visible.clone()).unwrap_or_default();
        let own = if self_rule { self.own.get(&node.user) } else { None };
        let Some(own) = own else { return class };
        let mut set = (*class).clone();
        set.union_with(&own.nodes);
        reuse(set, old)
    }

    /// The filter of the node in `slot` (of `class`): every rule that has it among its
    /// destinations. The class's signature names those rules, so the rules it is not in
    /// are never looked at (at 10k nodes each rule's sets are a cache miss). With each
    /// filter rule, the index of the policy rule it came from (`u32::MAX` for the
    /// `autogroup:self` part, whose sources are the user's own).
    pub(super) fn filter_of(&self, slot: usize, node: &NodeInfo, class: usize) -> (Vec<FilterRule>, Vec<u32>) {
        let groups = self.groups_of(node);
        let signature = self.classes.get(class).and_then(Option::as_ref).map_or(&[][..], |c| &c.signature[..]);
        let destination_of = |r: usize| has_bit(signature, 2 * r + 1);
        let mut out = Vec::new();
        let mut origins = Vec::new();
        let rules = self.policy.rules.iter().zip(&self.rules).enumerate();
        for (r, (rule, state)) in rules.filter(|(r, (_, s))| destination_of(*r) || s.self_targets.is_some()) {
            if destination_of(r) {
                let mut dsts = Vec::new();
                for d in &rule.dsts {
                    if *d != Alias::SelfNodes && destination(d, node, &groups) {
                        destinations(d, node, &rule.ports, &mut dsts);
                    }
                }
                if !dsts.is_empty() {
                    out.push(FilterRule { srcs: state.prefixes.clone(), dsts, protos: rule.protos.clone() });
                    origins.push(u32::try_from(r).unwrap_or(u32::MAX));
                }
            }
            if state.self_applies(slot) {
                if let Some(own) = self.own.get(&node.user) {
                    let mut dsts = Vec::new();
                    destinations(&Alias::SelfNodes, node, &rule.ports, &mut dsts);
                    out.push(FilterRule { srcs: own.prefixes.clone(), dsts, protos: rule.protos.clone() });
                    origins.push(u32::MAX);
                }
            }
        }
        (out, origins)
    }

    /// The SSH rules of the node in `slot`, in the tailnet's SSH order.
    pub(super) fn ssh_of(&self, slot: usize, node: &NodeInfo) -> Vec<NodeSshRule> {
        let mut out = Vec::new();
        for state in &self.ssh {
            let rule = &self.policy.ssh[state.position];
            let by_identity = state.dsts.contains(slot);
            let by_self = rule.dsts.contains(&Alias::SelfNodes) && !node.is_tagged() && state.srcs.contains(slot);
            let principals = match (by_identity, by_self) {
                (true, _) => state.principals.clone(),
                (false, true) => self.own.get(&node.user).map(|o| o.ids.clone()).unwrap_or_else(|| Arc::from([])),
                (false, false) => continue,
            };
            if principals.is_empty() {
                continue;
            }
            let action = match rule.action {
                SshAction::Accept => NodeSshAction::Accept,
                SshAction::Check => NodeSshAction::Check,
            };
            let forwarding = rule.forwarding;
            let position = u32::try_from(state.position).unwrap_or(u32::MAX);
            // `localpart:*@domain`: one rule per source user of that domain, for that
            // user's own nodes only.
            for (domain, people) in &state.localpart_people {
                let mine = domain_of(&node.user) == Some(domain.as_str());
                let people: Box<dyn Iterator<Item = &str>> = if by_identity {
                    Box::new(people.iter().map(String::as_str))
                } else if mine {
                    Box::new(std::iter::once(node.user.as_str()))
                } else {
                    Box::new(std::iter::empty())
                };
                for person in people {
                    let Some(own) = self.own.get(person) else { continue };
                    let Some(map) = &own.localpart else { continue };
                    out.push(NodeSshRule {
                        principals: own.ids.clone(),
                        users: map.clone(),
                        action,
                        forwarding,
                        accept_env: state.accept_env.clone(),
                        rule: position,
                    });
                }
            }
            let only_root_placeholder = state.users.len() == 1 && state.users.get("root").is_some_and(String::is_empty);
            if !only_root_placeholder {
                out.push(NodeSshRule {
                    principals,
                    users: state.users.clone(),
                    action,
                    forwarding,
                    accept_env: state.accept_env.clone(),
                    rule: position,
                });
            }
        }
        out
    }
}

/// `fresh`, or `old` when they are equal.
fn reuse<T: PartialEq>(fresh: T, old: Option<&Arc<T>>) -> Arc<T> {
    match old {
        Some(old) if **old == fresh => old.clone(),
        _ => Arc::new(fresh),
    }
}

/// The filter destinations a selector gives `node`.
fn destinations(alias: &Alias, node: &NodeInfo, ports: &[PortRange], out: &mut Vec<(IpPrefix, PortRange)>) {
    let mut push = |prefix: IpPrefix| {
        for p in ports {
            if !out.contains(&(prefix, *p)) {
                out.push((prefix, *p));
            }
        }
    };
    match alias {
        Alias::Host(_, p) | Alias::Prefix(p) => push(*p),
        Alias::Internet => the_internet().into_iter().for_each(&mut push),
        Alias::All => {
            node.addresses.iter().for_each(|a| push(IpPrefix::host(*a)));
            node.routes.iter().filter(|r| !r.is_empty()).for_each(|r| push(*r));
        }
        _ => node.addresses.iter().for_each(|a| push(IpPrefix::host(*a))),
    }
}

pub(super) fn domain_of(user: &str) -> Option<&str> {
    user.split_once('@').map(|(_, d)| d).filter(|d| !d.is_empty())
}

/// What `autogroup:internet` reaches through an exit node: the public address space, as
/// Tailscale and headscale define it: IPv4 without the private ranges (RFC 1918), the
/// CGNAT range the tailnet lives in, link-local, loopback and "this network"; and IPv6's
/// global unicast `2000::/3` (which leaves out the tailnet's ULA range and link-local).
/// Never the tailnet itself, so an exit node's own ports stay closed to such a rule.
fn the_internet() -> Vec<IpPrefix> {
    const EXCLUDED: [([u8; 4], u8); 7] = [
        ([0, 0, 0, 0], 8),
        ([10, 0, 0, 0], 8),
        ([100, 64, 0, 0], 10),
        ([127, 0, 0, 0], 8),
        ([169, 254, 0, 0], 16),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
    ];
    let excluded: Vec<(u32, u8)> = EXCLUDED.iter().map(|(a, l)| (u32::from_be_bytes(*a), *l)).collect();
    let mut out = Vec::new();
    v4_without(0, 0, &excluded, &mut out);
    out.extend(IpPrefix::new(IpAddr::from([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3));
    out
}

/// The prefix `base/len` without the `excluded` ones, as the fewest prefixes.
fn v4_without(base: u32, len: u8, excluded: &[(u32, u8)], out: &mut Vec<IpPrefix>) {
    let mask = |l: u8| if l == 0 { 0 } else { u32::MAX << (32 - l) };
    let inside = |(e, el): &(u32, u8)| *el <= len && base & mask(*el) == *e;
    let overlaps = |(e, el): &(u32, u8)| *el > len && e & mask(len) == base;
    if excluded.iter().any(inside) {
        return;
    }
    if !excluded.iter().any(overlaps) {
        out.extend(IpPrefix::new(IpAddr::from(base.to_be_bytes()), len));
        return;
    }
    v4_without(base, len + 1, excluded, out);
    v4_without(base | (1 << (31 - len)), len + 1, excluded, out);
}

/// `0.0.0.0/0` and `::/0`.
pub(super) fn every_address() -> [IpPrefix; 2] {
    [IpPrefix::default_route(false), IpPrefix::default_route(true)]
}
