//! Compiling a policy for a tailnet: for each node, the packet-filter rules for traffic
//! into it, its SSH rules, and the peers it may see.
//!
//! [`Tailnet`] is the compiled state of a whole tailnet, kept up to date one node at a
//! time: [`Tailnet::set`] adds, changes or removes a node and reports the nodes whose
//! output changed, at a cost proportional to what the node touches (the rules it is a
//! source or destination of, the peers that gain or lose it), not to the tailnet. That is
//! what keeps a join at 10k nodes under a millisecond. [`compile`] is the one-shot form.
//!
//! The full build costs nodes x rules, never nodes squared: every selector resolves once
//! to a [`NodeSet`] (a bitset), each rule's source addresses are built once and shared by
//! every node that receives the rule (`Arc`), and visibility is computed once per *class*
//! of nodes (nodes that are sources and destinations of the same rules see the same peers)
//! plus, for `autogroup:self`, each user's own nodes.
//!
//! Rooms: [`membership`] says which rules a node is a source or destination of (per node,
//! from the policy); [`build`] resolves the whole inventory at once; [`output`] builds one
//! node's filter, SSH rules and visibility from the resolved rules; [`update`] applies one
//! node's change to the resolved rules.

mod build;
mod membership;
mod output;
mod update;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::model::Policy;
use super::nodeset::NodeSet;
use crate::ip::filter::FilterRule;
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
    /// Its mesh addresses (one IPv4, usually one IPv6), unique in the tailnet.
    pub addresses: Vec<IpAddr>,
    /// Approved routes it serves (subnets, `0.0.0.0/0` for an exit node).
    pub routes: Vec<IpPrefix>,
    /// Policy groups (`group:eng`) its user is in by the identity provider's group claim,
    /// besides the groups the policy lists the user in. Groups the policy does not declare
    /// are ignored (rules can only name declared ones); a tagged node is in no group.
    pub idp_groups: Vec<String>,
}

impl NodeInfo {
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }
}

/// What one node receives.
#[derive(Clone, Debug)]
pub struct NodePolicy {
    /// Rules for traffic into this node (default deny).
    pub filter: Arc<Vec<FilterRule>>,
    /// For each filter rule, the index of the policy rule it came from (`u32::MAX`: the
    /// `autogroup:self` part), so a rule's new sources can be swapped in.
    origins: Vec<u32>,
    /// SSH rules, `check` first, first match wins; empty means SSH is denied.
    pub ssh: Arc<Vec<NodeSshRule>>,
    /// The slots of the nodes it may see, itself included; shared by every node of its
    /// class (and per node when `autogroup:self` adds its user's own nodes).
    visible: Arc<NodeSet>,
    /// Its class (an index into the tailnet's classes).
    class: usize,
    /// Whether an `autogroup:self` destination makes it see its user's own nodes.
    self_rule: bool,
    slot: usize,
}

/// Equal when the node receives the same (its class's index is bookkeeping).
impl PartialEq for NodePolicy {
    fn eq(&self, other: &Self) -> bool {
        self.filter == other.filter
            && self.ssh == other.ssh
            && self.visible == other.visible
            && self.self_rule == other.self_rule
            && self.slot == other.slot
    }
}

impl Eq for NodePolicy {}

impl NodePolicy {
    /// Slots of the peers this node may see, ascending, without itself.
    pub fn peers(&self) -> Vec<usize> {
        self.visible.iter().filter(|&i| i != self.slot).collect()
    }

    /// The slots of the nodes this node may see, itself included (shared, so callers can
    /// tell "unchanged" by pointer).
    pub fn visible(&self) -> &Arc<NodeSet> {
        &self.visible
    }

    /// Whether this node may see the node at `slot`.
    pub fn sees(&self, slot: usize) -> bool {
        slot != self.slot && self.visible.contains(slot)
    }
}

/// What an SSH rule does with a matching login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NodeSshAction {
    /// Log in.
    Accept,
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
    /// What its logins may forward (also after a check is approved).
    pub forwarding: crate::policy::SshForwarding,
    /// Environment name globs the client may set.
    pub accept_env: Arc<[String]>,
    /// The index of the policy's `ssh` entry it came from (check requests name it).
    pub rule: u32,
}

/// Requested login name -> local account (see [`NodeSshRule::users`]).
pub type UserMap = Arc<BTreeMap<String, String>>;

/// A policy compiled for every node of an inventory, in inventory order (slot = index).
#[derive(Clone, Debug)]
pub struct Compiled {
    pub nodes: Vec<NodePolicy>,
}

/// Compiles `policy` for `nodes` (each node's slot is its index).
pub fn compile(policy: &Policy, nodes: &[NodeInfo]) -> Compiled {
    let tailnet = Tailnet::new(Arc::new(policy.clone()), nodes.iter().cloned().map(Some).collect());
    Compiled { nodes: tailnet.out.into_iter().flatten().collect() }
}

/// A policy compiled for a tailnet whose nodes live in slots (the control server uses
/// node ids; [`compile`] uses inventory indices). Slots are small integers: they index
/// bitsets.
#[derive(Clone, Debug)]
pub struct Tailnet {
    policy: Arc<Policy>,
    slots: Vec<Option<NodeInfo>>,
    /// Group member selector -> the groups it is listed in (from the policy).
    member_groups: BTreeMap<String, Vec<String>>,
    /// User -> the groups the policy lists it in, for every user with a node (a node's
    /// IdP groups are added per node, see `groups_of`).
    user_groups: BTreeMap<String, Arc<[String]>>,
    /// How many nodes hold each address (addresses are unique on a server; an offline
    /// inventory may repeat one).
    address_holders: BTreeMap<IpAddr, u32>,
    /// Per network rule, in policy order.
    rules: Vec<RuleState>,
    /// Per SSH rule, `check` rules first.
    ssh: Vec<SshState>,
    /// Classes by signature (two bits per network rule: source of, destination of), and
    /// the classes themselves (a slab: a node's output names its class by index).
    class_ids: BTreeMap<Vec<u64>, usize>,
    classes: Vec<Option<Class>>,
    /// Each user's untagged nodes.
    own: BTreeMap<String, Own>,
    out: Vec<Option<NodePolicy>>,
}

/// A network rule resolved against the tailnet.
#[derive(Clone, Debug)]
struct RuleState {
    /// Nodes among its sources (by identity or address), for visibility.
    srcs: NodeSet,
    /// Nodes among its destinations (by identity, address or route).
    dsts: NodeSet,
    /// Source addresses for the filter, sorted, shared by every node that gets the rule.
    prefixes: Arc<[IpPrefix]>,
    /// With `autogroup:self` among the destinations: the untagged nodes whose users are
    /// sources (each receives the rule from its own user's nodes).
    self_targets: Option<NodeSet>,
}

impl RuleState {
    fn self_applies(&self, slot: usize) -> bool {
        self.self_targets.as_ref().is_some_and(|t| t.contains(slot))
    }
}

/// An SSH rule resolved against the tailnet.
#[derive(Clone, Debug)]
struct SshState {
    /// Its index in the policy's `ssh` list.
    position: usize,
    /// Source nodes (by identity).
    srcs: NodeSet,
    /// Destination nodes by tag or user (`autogroup:self` is per node).
    dsts: NodeSet,
    /// Every source node's id, sorted.
    principals: Arc<[NodeId]>,
    users: UserMap,
    accept_env: Arc<[String]>,
    /// For each `localpart:*@domain`: the domain and the users of it with untagged
    /// source nodes.
    localpart_people: Vec<(String, std::collections::BTreeSet<String>)>,
}

/// Nodes with the same signature see the same peers.
#[derive(Clone, Debug)]
struct Class {
    signature: Vec<u64>,
    visible: Arc<NodeSet>,
    members: NodeSet,
}

/// A user's untagged nodes, in the forms rules use them.
#[derive(Clone, Debug)]
struct Own {
    nodes: Arc<NodeSet>,
    prefixes: Arc<[IpPrefix]>,
    ids: Arc<[NodeId]>,
    /// `localpart:` maps this user to the local part of its name, unless that is `root`
    /// or no valid account name.
    localpart: Option<UserMap>,
}

impl Tailnet {
    /// Compiles `policy` for the nodes in `slots`.
    pub fn new(policy: Arc<Policy>, slots: Vec<Option<NodeInfo>>) -> Self {
        build::build(policy, slots)
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// What the node in `slot` receives.
    pub fn node(&self, slot: usize) -> Option<&NodePolicy> {
        self.out.get(slot).and_then(Option::as_ref)
    }

    /// The node in `slot`, as last set.
    pub fn info(&self, slot: usize) -> Option<&NodeInfo> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// Sets, replaces or (with `None`) removes the node in `slot`, and returns the slots
    /// whose [`NodePolicy`] changed (including `slot` itself when it was added, changed
    /// or removed), ascending. Setting what is already there changes nothing.
    pub fn set(&mut self, slot: usize, node: Option<NodeInfo>) -> Vec<usize> {
        if self.info(slot) == node.as_ref() {
            return Vec::new();
        }
        let mut dirty = update::Dirty::default();
        if self.info(slot).is_some() {
            self.remove(slot, &mut dirty);
        }
        if let Some(node) = node {
            self.insert(slot, node, &mut dirty);
        }
        self.refresh(dirty)
    }

    /// The slots of the nodes that see the node in `slot` (itself included), ascending.
    pub fn viewers(&self, slot: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for class in self.classes.iter().flatten() {
            if class.visible.contains(slot) {
                out.extend(class.members.iter());
            }
        }
        if let Some(node) = self.info(slot).filter(|n| !n.is_tagged()) {
            if let Some(own) = self.own.get(&node.user) {
                for i in own.nodes.iter() {
                    if self.node(i).is_some_and(|p| p.self_rule) {
                        out.push(i);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The class of `signature`, created (seeing nothing yet) when it is new.
    fn class_for(&mut self, signature: Vec<u64>) -> usize {
        if let Some(&id) = self.class_ids.get(&signature) {
            return id;
        }
        let class = Class { signature: signature.clone(), visible: Arc::default(), members: NodeSet::default() };
        let id = match self.classes.iter().position(Option::is_none) {
            Some(free) => {
                self.classes[free] = Some(class);
                free
            }
            None => {
                self.classes.push(Some(class));
                self.classes.len() - 1
            }
        };
        self.class_ids.insert(signature, id);
        id
    }

    /// The groups of `node`'s user: those the policy lists it in (cached per user), and
    /// the node's IdP groups (borrowed when there are none, the common case).
    fn groups_of(&self, node: &NodeInfo) -> std::borrow::Cow<'_, [String]> {
        let listed: &[String] = self.user_groups.get(&node.user).map_or(&[], |g| g);
        if node.idp_groups.is_empty() {
            return std::borrow::Cow::Borrowed(listed);
        }
        let mut all: Vec<String> = listed.iter().chain(&node.idp_groups).cloned().collect();
        all.sort();
        all.dedup();
        std::borrow::Cow::Owned(all)
    }
}

#[cfg(test)]
mod tests;
