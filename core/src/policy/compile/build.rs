//! The full build: every selector resolved once for the whole inventory through indexes
//! (nodes by user and by tag), then every node's output.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::super::alias::Alias;
use super::super::model::{NetRule, Policy, SshAction, SshRule, SshUser};
use super::membership::{self, adds_node_addresses, names_users};
use super::output::{domain_of, every_address};
use super::{NodeId, NodeInfo, NodeSet, Own, RuleState, SshState, Tailnet};
use crate::wireguard::IpPrefix;

pub(super) fn build(policy: Arc<Policy>, slots: Vec<Option<NodeInfo>>) -> Tailnet {
    let member_groups = membership::member_groups(&policy);
    let mut index = Index::new(&policy, &slots);
    let rules: Vec<RuleState> = policy.rules.iter().map(|r| index.rule(r)).collect();
    let ssh: Vec<SshState> = ssh_order(&policy).into_iter().map(|k| index.ssh(&policy.ssh[k], k)).collect();
    let own = index.own();
    let mut user_groups = BTreeMap::new();
    let mut address_holders = BTreeMap::new();
    for node in slots.iter().flatten() {
        if !user_groups.contains_key(&node.user) {
            let groups = membership::groups_of(&member_groups, &node.user);
            user_groups.insert(node.user.clone(), groups.into());
        }
        for a in &node.addresses {
            *address_holders.entry(*a).or_insert(0) += 1;
        }
    }
    let len = slots.len();
    let mut tailnet = Tailnet {
        policy,
        slots,
        member_groups,
        user_groups,
        address_holders,
        rules,
        ssh,
        class_ids: BTreeMap::new(),
        classes: Vec::new(),
        own,
        out: vec![None; len],
    };
    for slot in 0..len {
        if tailnet.slots[slot].is_none() {
            continue;
        }
        let signature = tailnet.signature(slot);
        let id = tailnet.class_for(signature);
        if let Some(class) = tailnet.classes[id].as_mut() {
            class.members.insert(slot);
        }
    }
    for id in 0..tailnet.classes.len() {
        let Some(signature) = tailnet.classes[id].as_ref().map(|c| c.signature.clone()) else { continue };
        let visible = Arc::new(tailnet.class_visibility(&signature));
        if let Some(class) = tailnet.classes[id].as_mut() {
            class.visible = visible;
        }
    }
    for slot in 0..len {
        if let Some(node) = &tailnet.slots[slot] {
            let out = tailnet.output(slot, node, None);
            tailnet.out[slot] = Some(out);
        }
    }
    tailnet
}

/// `check` rules before `accept` rules, each group in file order.
pub(super) fn ssh_order(policy: &Policy) -> Vec<usize> {
    let mut order: Vec<usize> = (0..policy.ssh.len()).collect();
    order.sort_by_key(|&i| (policy.ssh[i].action != SshAction::Check, i));
    order
}

/// Selector resolution for one inventory, cached.
struct Index<'a> {
    policy: &'a Policy,
    slots: &'a [Option<NodeInfo>],
    /// Untagged nodes by user name.
    by_user: BTreeMap<&'a str, Vec<usize>>,
    by_tag: BTreeMap<&'a str, Vec<usize>>,
    /// Untagged nodes by the policy groups their IdP groups name.
    by_idp_group: BTreeMap<&'a str, Vec<usize>>,
    src_sets: BTreeMap<Alias, NodeSet>,
    dst_sets: BTreeMap<Alias, NodeSet>,
}

impl<'a> Index<'a> {
    fn new(policy: &'a Policy, slots: &'a [Option<NodeInfo>]) -> Self {
        let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut by_tag: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut by_idp_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, n) in nodes(slots) {
            if n.is_tagged() {
                for t in &n.tags {
                    by_tag.entry(t.as_str()).or_default().push(i);
                }
            } else {
                by_user.entry(n.user.as_str()).or_default().push(i);
                for g in &n.idp_groups {
                    by_idp_group.entry(g.as_str()).or_default().push(i);
                }
            }
        }
        let (src_sets, dst_sets) = (BTreeMap::new(), BTreeMap::new());
        Self { policy, slots, by_user, by_tag, by_idp_group, src_sets, dst_sets }
    }

    /// Untagged nodes of the users a policy name stands for.
    fn user_nodes(&self, selector: &str, set: &mut NodeSet) {
        let bare = selector.strip_suffix('@');
        for key in std::iter::once(selector).chain(bare) {
            for &i in self.by_user.get(key).into_iter().flatten() {
                set.insert(i);
            }
        }
    }

    /// Nodes that an identity selector (user, group, tag, autogroup) names.
    fn identity_set(&self, alias: &Alias, set: &mut NodeSet) {
        match alias {
            Alias::User(u) => self.user_nodes(u, set),
            Alias::Group(g) => {
                for u in self.policy.groups.get(g).into_iter().flatten() {
                    self.user_nodes(u, set);
                }
                for &i in self.by_idp_group.get(g.as_str()).into_iter().flatten() {
                    set.insert(i);
                }
            }
            Alias::Tag(t) => {
                for &i in self.by_tag.get(t.as_str()).into_iter().flatten() {
                    set.insert(i);
                }
            }
            Alias::Member => nodes(self.slots).filter(|(_, n)| !n.is_tagged()).for_each(|(i, _)| set.insert(i)),
            Alias::Tagged => nodes(self.slots).filter(|(_, n)| n.is_tagged()).for_each(|(i, _)| set.insert(i)),
            Alias::All | Alias::DangerAll => nodes(self.slots).for_each(|(i, _)| set.insert(i)),
            Alias::Host(..) | Alias::Prefix(_) | Alias::SelfNodes | Alias::Internet => {}
        }
    }

    /// Nodes a source selector covers (an address selector covers the nodes in it).
    fn src_set(&mut self, alias: &Alias) -> &NodeSet {
        if !self.src_sets.contains_key(alias) {
            let mut set = NodeSet::with_len(self.slots.len());
            self.identity_set(alias, &mut set);
            if let Alias::Host(_, p) | Alias::Prefix(p) = alias {
                for (i, n) in nodes(self.slots) {
                    if n.addresses.iter().any(|a| p.contains(*a)) {
                        set.insert(i);
                    }
                }
            }
            self.src_sets.insert(alias.clone(), set);
        }
        &self.src_sets[alias]
    }

    /// Nodes a destination selector covers.
    fn dst_set(&mut self, alias: &Alias) -> &NodeSet {
        if !self.dst_sets.contains_key(alias) {
            let mut set = NodeSet::with_len(self.slots.len());
            self.identity_set(alias, &mut set);
            for (i, n) in nodes(self.slots) {
                if membership::covers(alias, n) {
                    set.insert(i);
                }
            }
            self.dst_sets.insert(alias.clone(), set);
        }
        &self.dst_sets[alias]
    }

    fn rule(&mut self, rule: &NetRule) -> RuleState {
        let mut srcs = NodeSet::with_len(self.slots.len());
        let mut identity = NodeSet::with_len(self.slots.len());
        let mut prefixes: Vec<IpPrefix> = Vec::new();
        for s in &rule.srcs {
            let set = self.src_set(s).clone();
            srcs.union_with(&set);
            match s {
                Alias::Host(_, p) | Alias::Prefix(p) => prefixes.push(*p),
                Alias::All | Alias::DangerAll => prefixes.extend(every_address()),
                other if adds_node_addresses(other) => self.identity_set(other, &mut identity),
                _ => {}
            }
        }
        for i in identity.iter() {
            if let Some(n) = &self.slots[i] {
                prefixes.extend(n.addresses.iter().map(|a| IpPrefix::host(*a)));
            }
        }
        prefixes.sort();
        prefixes.dedup();
        let mut dsts = NodeSet::with_len(self.slots.len());
        for d in &rule.dsts {
            let set = self.dst_set(d).clone();
            dsts.union_with(&set);
        }
        let self_targets = rule.dsts.contains(&Alias::SelfNodes).then(|| {
            let mut targets = NodeSet::with_len(self.slots.len());
            for s in rule.srcs.iter().filter(|s| names_users(s)) {
                self.identity_set(s, &mut targets);
            }
            targets
        });
        RuleState { srcs, dsts, prefixes: prefixes.into(), self_targets }
    }

    fn ssh(&mut self, rule: &SshRule, position: usize) -> SshState {
        let mut srcs = NodeSet::with_len(self.slots.len());
        for s in &rule.srcs {
            self.identity_set(s, &mut srcs);
        }
        let mut dsts = NodeSet::with_len(self.slots.len());
        for d in &rule.dsts {
            if matches!(d, Alias::Tag(_) | Alias::User(_)) {
                self.identity_set(d, &mut dsts);
            }
        }
        let principals: Arc<[NodeId]> = sorted_ids(srcs.iter().filter_map(|i| self.slots[i].as_ref()).map(|n| n.id));
        let mut localpart_people = Vec::new();
        for u in &rule.users {
            let SshUser::Localpart { domain } = u else { continue };
            let people: BTreeSet<String> = srcs
                .iter()
                .filter_map(|i| self.slots[i].as_ref())
                .filter(|n| !n.is_tagged() && domain_of(&n.user) == Some(domain.as_str()))
                .map(|n| n.user.clone())
                .collect();
            localpart_people.push((domain.clone(), people));
        }
        SshState {
            position,
            srcs,
            dsts,
            principals,
            users: Arc::new(user_map(rule)),
            accept_env: rule.accept_env.clone().into(),
            localpart_people,
        }
    }

    /// Every user's untagged nodes.
    fn own(&self) -> BTreeMap<String, Own> {
        let mut out = BTreeMap::new();
        for (user, slots) in &self.by_user {
            let nodes = slots.iter().filter_map(|&i| self.slots[i].as_ref());
            let mut prefixes: Vec<IpPrefix> =
                nodes.clone().flat_map(|n| n.addresses.iter().map(|a| IpPrefix::host(*a))).collect();
            prefixes.sort();
            prefixes.dedup();
            let own = Own {
                nodes: Arc::new(slots.iter().copied().collect()),
                prefixes: prefixes.into(),
                ids: sorted_ids(nodes.map(|n| n.id)),
                localpart: localpart_map(user),
            };
            out.insert(user.to_string(), own);
        }
        out
    }
}

/// The occupied slots.
fn nodes(slots: &[Option<NodeInfo>]) -> impl Iterator<Item = (usize, &NodeInfo)> + Clone {
    slots.iter().enumerate().filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
}

/// An SSH rule's `users` as a map (`localpart:` entries are per user, elsewhere).
fn user_map(rule: &SshRule) -> BTreeMap<String, String> {
    let mut users = BTreeMap::new();
    for u in &rule.users {
        match u {
            SshUser::Root => {
                users.insert("root".to_string(), "root".to_string());
            }
            SshUser::NonRoot => {
                users.insert("*".to_string(), "=".to_string());
            }
            SshUser::Named(name) => {
                users.insert(name.clone(), name.clone());
            }
            SshUser::Localpart { .. } => {}
        }
    }
    users.entry("root".to_string()).or_default();
    users
}

/// `localpart:` maps `user` to its local part, unless that is `root` (root must be
/// listed) or no valid account name.
pub(super) fn localpart_map(user: &str) -> Option<super::UserMap> {
    let local = user.split('@').next().filter(|l| *l != "root" && crate::policy::read::check_local_user(l).is_ok())?;
    Some(Arc::new(BTreeMap::from([(local.to_string(), local.to_string())])))
}

pub(super) fn sorted_ids(ids: impl Iterator<Item = NodeId>) -> Arc<[NodeId]> {
    let mut v: Vec<NodeId> = ids.collect();
    v.sort();
    v.dedup();
    v.into()
}
