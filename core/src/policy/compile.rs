//! Compiling a policy for a tailnet: for each node, the packet-filter rules for traffic
//! into it, its SSH rules, and the peers it may see.
//!
//! The cost is proportional to nodes x rules, never to nodes squared: every selector is
//! resolved once to a [`NodeSet`] (a bitset), each rule's source addresses are built once
//! and shared by every node that receives the rule (`Arc`), and visibility is computed once
//! per *class* of nodes (nodes that appear in the same rules as sources and destinations
//! see the same peers) plus, for `autogroup:self`, once per user.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::alias::{user_matches, Alias};
use super::model::{NetRule, Policy, SshAction, SshRule, SshUser};
use super::nodeset::NodeSet;
use crate::ip::filter::{FilterRule, PortRange};
use crate::wireguard::IpPrefix;

/// A node's identity as the coordination server knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct NodeId(pub u64);

/// What the compiler needs to know about one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The node's DNS label.
    pub name: String,
    /// The user who registered it (its identity for the policy unless it is tagged).
    pub user: String,
    /// A tagged node belongs to its tags, not to a user.
    pub tags: Vec<String>,
    /// Its mesh addresses (one IPv4, usually one IPv6).
    pub addresses: Vec<IpAddr>,
    /// Approved routes it serves (subnets, `0.0.0.0/0` for an exit node).
    pub routes: Vec<IpPrefix>,
}

impl NodeInfo {
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }
}

/// What one node receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePolicy {
    /// Rules for traffic into this node (default deny).
    pub filter: Vec<FilterRule>,
    /// SSH rules, `check` first, first match wins; empty means SSH is denied.
    pub ssh: Vec<NodeSshRule>,
    /// Peers in this node's class, and for `autogroup:self` its user's own nodes.
    visible: Arc<NodeSet>,
    own: Option<Arc<NodeSet>>,
    index: usize,
}

impl NodePolicy {
    /// Indices (into the compiled inventory) of the peers this node may see, ascending,
    /// without itself.
    pub fn peers(&self) -> Vec<usize> {
        let mut set = (*self.visible).clone();
        if let Some(own) = &self.own {
            set.union_with(own);
        }
        set.remove(self.index);
        set.iter().collect()
    }

    /// The visibility sets (inventory indices): the node's class, and its user's own
    /// nodes when `autogroup:self` applies. Shared between nodes; the node itself is in
    /// them. For callers that keep their own id space (the control server).
    pub fn visibility(&self) -> (&Arc<NodeSet>, Option<&Arc<NodeSet>>) {
        (&self.visible, self.own.as_ref())
    }

    /// Whether this node may see the node at `index`.
    pub fn sees(&self, index: usize) -> bool {
        index != self.index && (self.visible.contains(index) || self.own.as_ref().is_some_and(|o| o.contains(index)))
    }
}

/// What an SSH rule lets a matching login do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NodeSshAction {
    /// Log in; the forwarding a rule allows comes with it (Tailscale's accept carries all).
    Accept { agent_forwarding: bool, local_forwarding: bool, remote_forwarding: bool },
    /// Hold the login and ask the coordination server, which enforces `checkPeriod`.
    Check,
}

/// One SSH rule as a node receives it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeSshRule {
    /// The source nodes this rule is for.
    pub principals: Arc<[NodeId]>,
    /// Requested login name -> local account: `"*"` matches any name, `"="` maps a name
    /// to itself (never to uid 0), an empty value means "no match here".
    pub users: UserMap,
    pub action: NodeSshAction,
    /// Environment name globs the client may set.
    pub accept_env: Arc<[String]>,
    /// The index of the policy's `ssh` entry it came from (check requests name it).
    pub rule: u32,
}

/// Requested login name -> local account (see [`NodeSshRule::users`]).
pub type UserMap = Arc<BTreeMap<String, String>>;

/// A policy compiled for every node of an inventory, in inventory order.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub nodes: Vec<NodePolicy>,
}

/// Compiles `policy` for `nodes`.
pub fn compile(policy: &Policy, nodes: &[NodeInfo]) -> Compiled {
    let mut index = Index::new(policy, nodes);
    let net: Vec<RuleSets> = policy.rules.iter().map(|r| index.rule_sets(r)).collect();
    let ssh_order = ssh_order(policy);
    let mut ssh: Vec<SshSets> = ssh_order.iter().map(|&i| index.ssh_sets(&policy.ssh[i], i)).collect();
    let classes = index.visibility(&net);
    let mut out = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let filter = index.filter(i, node, &policy.rules, &net);
        let ssh = index.ssh(i, node, &mut ssh);
        let own = net.iter().any(|r| r.self_applies(i)).then(|| index.own_nodes(&node.user));
        out.push(NodePolicy { filter, ssh, visible: classes[i].clone(), own, index: i });
    }
    Compiled { nodes: out }
}

/// `check` rules before `accept` rules, each group in file order.
fn ssh_order(policy: &Policy) -> Vec<usize> {
    let mut order: Vec<usize> = (0..policy.ssh.len()).collect();
    order.sort_by_key(|&i| (policy.ssh[i].action != SshAction::Check, i));
    order
}

/// Selector resolution for one inventory, cached.
struct Index<'a> {
    policy: &'a Policy,
    nodes: &'a [NodeInfo],
    /// Untagged nodes by user name.
    by_user: BTreeMap<&'a str, Vec<usize>>,
    by_tag: BTreeMap<&'a str, Vec<usize>>,
    src_sets: BTreeMap<Alias, Arc<NodeSet>>,
    dst_sets: BTreeMap<Alias, Arc<NodeSet>>,
    own: BTreeMap<String, Arc<NodeSet>>,
    own_prefixes: BTreeMap<String, Arc<[IpPrefix]>>,
    own_ids: BTreeMap<String, Arc<[NodeId]>>,
}

/// A network rule resolved against the inventory.
struct RuleSets {
    srcs: Arc<NodeSet>,
    dsts: Arc<NodeSet>,
    /// Source addresses for the filter.
    src_prefixes: Arc<[IpPrefix]>,
    /// With `autogroup:self` among the destinations: the nodes whose users are sources
    /// (each of them receives the rule from its own user's nodes).
    self_targets: Option<NodeSet>,
}

impl RuleSets {
    /// Whether `autogroup:self` of this rule makes node `i` a destination.
    fn self_applies(&self, i: usize) -> bool {
        self.self_targets.as_ref().is_some_and(|t| t.contains(i))
    }
}

/// An SSH rule resolved against the inventory.
struct SshSets<'p> {
    rule: &'p SshRule,
    /// Its index in the policy's `ssh` list.
    position: u32,
    srcs: NodeSet,
    /// Every source node, for destinations matched by tag or user.
    principals: Arc<[NodeId]>,
    users: UserMap,
    accept_env: Arc<[String]>,
    /// For each `localpart:*@domain`: the domain and the source users in it.
    localpart_people: Arc<Vec<(String, Vec<String>)>>,
    /// Cached `localpart:` expansions: user -> (principals, map).
    localparts: BTreeMap<String, (Arc<[NodeId]>, UserMap)>,
}

impl<'a> Index<'a> {
    fn new(policy: &'a Policy, nodes: &'a [NodeInfo]) -> Self {
        let mut by_user: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut by_tag: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.is_tagged() {
                for t in &n.tags {
                    by_tag.entry(t.as_str()).or_default().push(i);
                }
            } else {
                by_user.entry(n.user.as_str()).or_default().push(i);
            }
        }
        Self {
            policy,
            nodes,
            by_user,
            by_tag,
            src_sets: BTreeMap::new(),
            dst_sets: BTreeMap::new(),
            own: BTreeMap::new(),
            own_prefixes: BTreeMap::new(),
            own_ids: BTreeMap::new(),
        }
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
            }
            Alias::Tag(t) => {
                for &i in self.by_tag.get(t.as_str()).into_iter().flatten() {
                    set.insert(i);
                }
            }
            Alias::Member => {
                self.nodes.iter().enumerate().filter(|(_, n)| !n.is_tagged()).for_each(|(i, _)| set.insert(i))
            }
            Alias::Tagged => {
                self.nodes.iter().enumerate().filter(|(_, n)| n.is_tagged()).for_each(|(i, _)| set.insert(i))
            }
            Alias::All | Alias::DangerAll => (0..self.nodes.len()).for_each(|i| set.insert(i)),
            Alias::Host(..) | Alias::Prefix(_) | Alias::SelfNodes | Alias::Internet => {}
        }
    }

    /// Nodes a source selector covers (an address selector covers the nodes in it).
    fn src_set(&mut self, alias: &Alias) -> Arc<NodeSet> {
        if let Some(s) = self.src_sets.get(alias) {
            return s.clone();
        }
        let mut set = NodeSet::with_len(self.nodes.len());
        self.identity_set(alias, &mut set);
        if let Alias::Host(_, p) | Alias::Prefix(p) = alias {
            for (i, n) in self.nodes.iter().enumerate() {
                if n.addresses.iter().any(|a| p.contains(*a)) {
                    set.insert(i);
                }
            }
        }
        let set = Arc::new(set);
        self.src_sets.insert(alias.clone(), set.clone());
        set
    }

    /// Nodes a destination selector covers (an address selector also covers the routers
    /// of subnets it overlaps; `autogroup:internet` covers exit nodes).
    fn dst_set(&mut self, alias: &Alias) -> Arc<NodeSet> {
        if let Some(s) = self.dst_sets.get(alias) {
            return s.clone();
        }
        let mut set = NodeSet::with_len(self.nodes.len());
        self.identity_set(alias, &mut set);
        for (i, n) in self.nodes.iter().enumerate() {
            if dst_covers(alias, n) && !matches!(alias, Alias::All) {
                set.insert(i);
            }
        }
        let set = Arc::new(set);
        self.dst_sets.insert(alias.clone(), set.clone());
        set
    }

    fn rule_sets(&mut self, rule: &NetRule) -> RuleSets {
        let mut srcs = NodeSet::with_len(self.nodes.len());
        let mut identity = NodeSet::with_len(self.nodes.len());
        let mut prefixes: Vec<IpPrefix> = Vec::new();
        for s in &rule.srcs {
            srcs.union_with(&self.src_set(s));
            match s {
                Alias::Host(_, p) | Alias::Prefix(p) => prefixes.push(*p),
                Alias::All | Alias::DangerAll => prefixes.extend(every_address()),
                other => self.identity_set(other, &mut identity),
            }
        }
        for i in identity.iter() {
            prefixes.extend(self.nodes[i].addresses.iter().map(|a| IpPrefix::host(*a)));
        }
        prefixes.sort();
        prefixes.dedup();
        let mut dsts = NodeSet::with_len(self.nodes.len());
        for d in &rule.dsts {
            dsts.union_with(&self.dst_set(d));
        }
        let self_targets = rule.dsts.contains(&Alias::SelfNodes).then(|| {
            let mut targets = NodeSet::with_len(self.nodes.len());
            for s in rule.srcs.iter().filter(|s| matches!(s, Alias::User(_) | Alias::Group(_) | Alias::Member)) {
                self.identity_set(s, &mut targets);
            }
            targets
        });
        RuleSets { srcs: Arc::new(srcs), dsts: Arc::new(dsts), src_prefixes: prefixes.into(), self_targets }
    }

    /// The untagged nodes of `user`.
    fn own_nodes(&mut self, user: &str) -> Arc<NodeSet> {
        if let Some(s) = self.own.get(user) {
            return s.clone();
        }
        let set: NodeSet = self.by_user.get(user).into_iter().flatten().copied().collect();
        let set = Arc::new(set);
        self.own.insert(user.to_string(), set.clone());
        set
    }

    fn own_prefixes(&mut self, user: &str) -> Arc<[IpPrefix]> {
        if let Some(p) = self.own_prefixes.get(user) {
            return p.clone();
        }
        let nodes = self.nodes;
        let mut prefixes: Vec<IpPrefix> = self
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .flat_map(|&i| nodes[i].addresses.iter().map(|a| IpPrefix::host(*a)))
            .collect();
        prefixes.sort();
        let prefixes: Arc<[IpPrefix]> = prefixes.into();
        self.own_prefixes.insert(user.to_string(), prefixes.clone());
        prefixes
    }

    fn own_ids(&mut self, user: &str) -> Arc<[NodeId]> {
        if let Some(p) = self.own_ids.get(user) {
            return p.clone();
        }
        let nodes = self.nodes;
        let mut ids: Vec<NodeId> = self.by_user.get(user).into_iter().flatten().map(|&i| nodes[i].id).collect();
        ids.sort();
        let ids: Arc<[NodeId]> = ids.into();
        self.own_ids.insert(user.to_string(), ids.clone());
        ids
    }

    /// Visibility per node, shared by every node of the same class.
    ///
    /// Node `n` sees the sources of rules it is a destination of and the destinations of
    /// rules it is a source of. Nodes with the same (source-of, destination-of) signature
    /// see the same set, computed once.
    fn visibility(&self, rules: &[RuleSets]) -> Vec<Arc<NodeSet>> {
        let mut classes: BTreeMap<Vec<u64>, Arc<NodeSet>> = BTreeMap::new();
        let mut out = Vec::with_capacity(self.nodes.len());
        let words = (2 * rules.len()).div_ceil(64);
        for i in 0..self.nodes.len() {
            let mut signature = vec![0u64; words];
            for (r, rule) in rules.iter().enumerate() {
                if rule.srcs.contains(i) {
                    signature[(2 * r) / 64] |= 1 << ((2 * r) % 64);
                }
                if rule.dsts.contains(i) {
                    signature[(2 * r + 1) / 64] |= 1 << ((2 * r + 1) % 64);
                }
            }
            let class = classes
                .entry(signature)
                .or_insert_with(|| {
                    let mut seen = NodeSet::with_len(self.nodes.len());
                    for rule in rules {
                        if rule.dsts.contains(i) {
                            seen.union_with(&rule.srcs);
                        }
                        if rule.srcs.contains(i) {
                            seen.union_with(&rule.dsts);
                        }
                    }
                    Arc::new(seen)
                })
                .clone();
            out.push(class);
        }
        out
    }

    /// The filter of node `i`: every rule that has it among its destinations.
    fn filter(&mut self, i: usize, node: &NodeInfo, rules: &[NetRule], sets: &[RuleSets]) -> Vec<FilterRule> {
        let mut out = Vec::new();
        for (rule, set) in rules.iter().zip(sets) {
            if set.dsts.contains(i) {
                let mut dsts = Vec::new();
                for d in &rule.dsts {
                    if *d != Alias::SelfNodes && self.dst_set(d).contains(i) || matches!(d, Alias::All) {
                        destinations(d, node, &rule.ports, &mut dsts);
                    }
                }
                if !dsts.is_empty() {
                    out.push(FilterRule { srcs: set.src_prefixes.clone(), dsts, protos: rule.protos.clone() });
                }
            }
            if set.self_applies(i) {
                let mut dsts = Vec::new();
                destinations(&Alias::SelfNodes, node, &rule.ports, &mut dsts);
                out.push(FilterRule { srcs: self.own_prefixes(&node.user), dsts, protos: rule.protos.clone() });
            }
        }
        out
    }

    fn ssh_sets(&mut self, rule: &'a SshRule, position: usize) -> SshSets<'a> {
        let mut srcs = NodeSet::with_len(self.nodes.len());
        for s in &rule.srcs {
            self.identity_set(s, &mut srcs);
        }
        let principals: Arc<[NodeId]> = sorted_ids(srcs.iter().map(|i| self.nodes[i].id));
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
        let mut localpart_people = Vec::new();
        for u in &rule.users {
            let SshUser::Localpart { domain } = u else { continue };
            let mut people: Vec<String> = srcs
                .iter()
                .map(|i| &self.nodes[i])
                .filter(|n| !n.is_tagged() && domain_of(&n.user) == Some(domain.as_str()))
                .map(|n| n.user.clone())
                .collect();
            people.sort();
            people.dedup();
            localpart_people.push((domain.clone(), people));
        }
        SshSets {
            localpart_people: Arc::new(localpart_people),
            rule,
            position: u32::try_from(position).unwrap_or(u32::MAX),
            srcs,
            principals,
            users: Arc::new(users),
            accept_env: rule.accept_env.clone().into(),
            localparts: BTreeMap::new(),
        }
    }

    /// The SSH rules of node `i`.
    fn ssh(&mut self, i: usize, node: &NodeInfo, rules: &mut [SshSets<'a>]) -> Vec<NodeSshRule> {
        let mut out = Vec::new();
        for set in rules.iter_mut() {
            let rule = set.rule;
            let by_identity = rule.dsts.iter().any(|d| match d {
                Alias::Tag(t) => node.tags.contains(t),
                Alias::User(u) => !node.is_tagged() && user_matches(u, &node.user),
                _ => false,
            });
            let by_self = rule.dsts.contains(&Alias::SelfNodes) && !node.is_tagged() && set.srcs.contains(i);
            let principals = match (by_identity, by_self) {
                (true, _) => set.principals.clone(),
                (false, true) => self.own_ids(&node.user),
                (false, false) => continue,
            };
            if principals.is_empty() {
                continue;
            }
            let action = match rule.action {
                SshAction::Accept => {
                    NodeSshAction::Accept { agent_forwarding: true, local_forwarding: true, remote_forwarding: true }
                }
                SshAction::Check => NodeSshAction::Check,
            };
            // `localpart:*@domain`: one rule per source user of that domain, for that
            // user's own nodes only.
            for (domain, people) in set.localpart_people.clone().iter() {
                let people: Vec<&str> = if by_identity {
                    people.iter().map(String::as_str).collect()
                } else if domain_of(&node.user) == Some(domain.as_str()) {
                    vec![node.user.as_str()]
                } else {
                    Vec::new()
                };
                for person in people {
                    // `root@domain` never becomes root (root must be listed), and a local
                    // part that is no valid account name maps to nothing.
                    let Some(local) = person
                        .split('@')
                        .next()
                        .filter(|l| *l != "root" && crate::policy::read::check_local_user(l).is_ok())
                    else {
                        continue;
                    };
                    let (ids, map) = match set.localparts.get(person) {
                        Some(cached) => cached.clone(),
                        None => {
                            let ids = self.own_ids(person);
                            let map = Arc::new(BTreeMap::from([(local.to_string(), local.to_string())]));
                            set.localparts.insert(person.to_string(), (ids.clone(), map.clone()));
                            (ids, map)
                        }
                    };
                    out.push(NodeSshRule {
                        principals: ids,
                        users: map,
                        action,
                        accept_env: set.accept_env.clone(),
                        rule: set.position,
                    });
                }
            }
            let only_root_placeholder = set.users.len() == 1 && set.users.get("root").is_some_and(String::is_empty);
            if !only_root_placeholder {
                out.push(NodeSshRule {
                    principals,
                    users: set.users.clone(),
                    action,
                    accept_env: set.accept_env.clone(),
                    rule: set.position,
                });
            }
        }
        out
    }
}

/// Whether a destination selector covers `node` by address or route.
fn dst_covers(alias: &Alias, node: &NodeInfo) -> bool {
    match alias {
        Alias::Host(_, p) | Alias::Prefix(p) => {
            node.addresses.iter().any(|a| p.contains(*a)) || node.routes.iter().any(|r| overlaps(r, p))
        }
        Alias::Internet => node.routes.iter().any(IpPrefix::is_empty),
        Alias::All => true,
        _ => false,
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
        Alias::Internet => every_address().into_iter().for_each(&mut push),
        Alias::All => {
            node.addresses.iter().for_each(|a| push(IpPrefix::host(*a)));
            node.routes.iter().filter(|r| !r.is_empty()).for_each(|r| push(*r));
        }
        _ => node.addresses.iter().for_each(|a| push(IpPrefix::host(*a))),
    }
}

fn sorted_ids(ids: impl Iterator<Item = NodeId>) -> Arc<[NodeId]> {
    let mut v: Vec<NodeId> = ids.collect();
    v.sort();
    v.into()
}

fn domain_of(user: &str) -> Option<&str> {
    user.split_once('@').map(|(_, d)| d).filter(|d| !d.is_empty())
}

/// `0.0.0.0/0` and `::/0`.
fn every_address() -> [IpPrefix; 2] {
    [IpPrefix::default_route(false), IpPrefix::default_route(true)]
}

fn overlaps(a: &IpPrefix, b: &IpPrefix) -> bool {
    a.addr().is_ipv4() == b.addr().is_ipv4() && (a.contains(b.addr()) || b.contains(a.addr()))
}
