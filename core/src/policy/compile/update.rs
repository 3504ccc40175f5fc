//! One node's change applied to the resolved rules. Removing a node undoes exactly what
//! inserting it did (both read the node's [`Membership`]), and each step marks the nodes
//! whose output it may have changed; [`Tailnet::refresh`] rebuilds only those.

use std::sync::Arc;

use super::super::alias::Alias;
use super::build::localpart_map;
use super::membership::{self, Membership};
use super::output::domain_of;
use super::{NodeId, NodeInfo, NodePolicy, NodeSet, Own, Tailnet};
use crate::ip::filter::FilterRule;
use crate::wireguard::IpPrefix;

/// Nodes whose output may have changed, by part (slot lists: a change touches few
/// nodes of a large tailnet, and a bitset of it would cost a large allocation).
#[derive(Debug, Default)]
pub(super) struct Dirty {
    /// Filters to rebuild.
    filter: Vec<usize>,
    /// Filters that only need the new source prefixes of the rules in `swaps` swapped in.
    swap: Vec<usize>,
    swaps: Vec<usize>,
    ssh: Vec<usize>,
    visible: Vec<usize>,
    /// Slots that were removed.
    gone: Vec<usize>,
}

impl Tailnet {
    pub(super) fn insert(&mut self, slot: usize, node: NodeInfo, dirty: &mut Dirty) {
        if slot >= self.slots.len() {
            self.slots.resize(slot + 1, None);
            self.out.resize(slot + 1, None);
        }
        if !self.user_groups.contains_key(&node.user) {
            let groups = membership::groups_of(&self.member_groups, &node.user);
            self.user_groups.insert(node.user.clone(), groups.into());
        }
        let order: Vec<usize> = self.ssh.iter().map(|s| s.position).collect();
        let m = Membership::of(&self.policy, &order, &node, &self.groups_of(&node));
        let hosts: Vec<IpPrefix> = node.addresses.iter().map(|a| IpPrefix::host(*a)).collect();
        for a in &node.addresses {
            *self.address_holders.entry(*a).or_insert(0) += 1;
        }
        for (r, rule) in self.rules.iter_mut().enumerate() {
            if m.src[r] {
                rule.srcs.insert(slot);
            }
            if m.adds[r] {
                if let Some(p) = with_added(&rule.prefixes, &hosts) {
                    rule.prefixes = p;
                    dirty.swaps.push(r);
                    dirty.swap.extend(rule.dsts.iter());
                }
            }
            if m.dst[r] {
                rule.dsts.insert(slot);
            }
            if m.self_target[r] {
                if let Some(t) = rule.self_targets.as_mut() {
                    t.insert(slot);
                }
            }
        }
        for (k, ssh) in self.ssh.iter_mut().enumerate() {
            if m.ssh_src[k] {
                ssh.srcs.insert(slot);
                ssh.principals = with_id(&ssh.principals, node.id);
                if !node.is_tagged() {
                    for (domain, people) in &mut ssh.localpart_people {
                        if domain_of(&node.user) == Some(domain.as_str()) {
                            people.insert(node.user.clone());
                        }
                    }
                }
                dirty.ssh.extend(ssh.dsts.iter());
            } else if localpart_person(&ssh.localpart_people, &node) {
                // Not a source itself, but its user is one through another node (IdP
                // groups are per node): the user's `localpart:` rules list all its own
                // nodes, now this one too.
                dirty.ssh.extend(ssh.dsts.iter());
            }
            if m.ssh_dst[k] {
                ssh.dsts.insert(slot);
            }
        }
        if !node.is_tagged() {
            let own = self.own.entry(node.user.clone()).or_insert_with(|| Own {
                nodes: Arc::default(),
                prefixes: Arc::from([]),
                ids: Arc::from([]),
                localpart: localpart_map(&node.user),
            });
            let mut nodes = (*own.nodes).clone();
            nodes.insert(slot);
            own.nodes = Arc::new(nodes);
            own.prefixes = with_added(&own.prefixes, &hosts).unwrap_or_else(|| own.prefixes.clone());
            own.ids = with_id(&own.ids, node.id);
        }
        // Every class that sees the node gains it; the node joins its own class.
        let seen_by = m.seen_by();
        for class in self.classes.iter_mut().flatten() {
            if intersects(&class.signature, &seen_by) {
                let mut visible = (*class.visible).clone();
                visible.insert(slot);
                class.visible = Arc::new(visible);
                dirty.visible.extend(class.members.iter());
            }
        }
        self.slots[slot] = Some(node.clone());
        let signature = m.signature();
        let id = self.class_for(signature.clone());
        let fresh = self.classes[id].as_ref().is_some_and(|c| c.members.is_empty());
        let visible = fresh.then(|| Arc::new(self.class_visibility(&signature)));
        if let Some(class) = self.classes[id].as_mut() {
            class.members.insert(slot);
            if let Some(v) = visible {
                class.visible = v;
            }
        }
        self.mark_own(&node, dirty);
        dirty.filter.push(slot);
        dirty.ssh.push(slot);
        dirty.visible.push(slot);
        dirty.gone.retain(|&g| g != slot);
    }

    pub(super) fn remove(&mut self, slot: usize, dirty: &mut Dirty) {
        let Some(node) = self.slots.get_mut(slot).and_then(Option::take) else { return };
        let order: Vec<usize> = self.ssh.iter().map(|s| s.position).collect();
        let m = Membership::of(&self.policy, &order, &node, &self.groups_of(&node));
        let hosts: Vec<IpPrefix> = node.addresses.iter().map(|a| IpPrefix::host(*a)).collect();
        let mut shared = false;
        for a in &node.addresses {
            if let Some(count) = self.address_holders.get_mut(a) {
                *count -= 1;
                shared |= *count > 0;
                if *count == 0 {
                    self.address_holders.remove(a);
                }
            }
        }
        for r in 0..self.rules.len() {
            let rule = &mut self.rules[r];
            rule.srcs.remove(slot);
            rule.dsts.remove(slot);
            if let Some(t) = rule.self_targets.as_mut() {
                t.remove(slot);
            }
            if m.adds[r] {
                // A prefix stays when the rule names it itself, or (on an inventory that
                // repeats an address) another source node still holds it.
                let prefixes = if shared {
                    Some(self.rule_prefixes(r))
                } else {
                    let named: Vec<IpPrefix> = named_prefixes(&self.policy.rules[r].srcs);
                    let gone: Vec<IpPrefix> = hosts.iter().filter(|h| !named.contains(h)).copied().collect();
                    with_removed(&self.rules[r].prefixes, &gone)
                };
                let rule = &mut self.rules[r];
                if let Some(p) = prefixes.filter(|p| *p != rule.prefixes) {
                    rule.prefixes = p;
                    dirty.swaps.push(r);
                    dirty.swap.extend(rule.dsts.iter());
                }
            }
        }
        if let Some(own) = self.own.get_mut(&node.user).filter(|_| !node.is_tagged()) {
            let mut nodes = (*own.nodes).clone();
            nodes.remove(slot);
            let left = !nodes.is_empty();
            own.nodes = Arc::new(nodes);
            own.prefixes = if shared {
                own_prefixes(&self.slots, &own.nodes)
            } else {
                with_removed(&own.prefixes, &hosts).unwrap_or_else(|| own.prefixes.clone())
            };
            own.ids = own.ids.iter().copied().filter(|id| *id != node.id).collect();
            if !left {
                self.own.remove(&node.user);
            }
        }
        for (k, ssh) in self.ssh.iter_mut().enumerate() {
            if m.ssh_src[k] {
                ssh.srcs.remove(slot);
                ssh.principals = ssh.principals.iter().copied().filter(|id| *id != node.id).collect();
                // The user stays a `localpart:` person while another of its nodes is a
                // source (all of them are, unless IdP groups differ between them).
                let still = self.own.get(&node.user).is_some_and(|o| o.nodes.iter().any(|i| ssh.srcs.contains(i)));
                if !node.is_tagged() && !still {
                    for (_, people) in &mut ssh.localpart_people {
                        people.remove(&node.user);
                    }
                }
                dirty.ssh.extend(ssh.dsts.iter());
            } else if localpart_person(&ssh.localpart_people, &node) {
                // Its user's `localpart:` rules list all the user's own nodes.
                dirty.ssh.extend(ssh.dsts.iter());
            }
            ssh.dsts.remove(slot);
        }
        let signature = m.signature();
        if let Some(&id) = self.class_ids.get(&signature) {
            let empty = self.classes[id].as_mut().is_some_and(|c| {
                c.members.remove(slot);
                c.members.is_empty()
            });
            if empty {
                self.classes[id] = None;
                self.class_ids.remove(&signature);
            }
        }
        for class in self.classes.iter_mut().flatten() {
            if class.visible.contains(slot) {
                let mut visible = (*class.visible).clone();
                visible.remove(slot);
                class.visible = Arc::new(visible);
                dirty.visible.extend(class.members.iter());
            }
        }
        self.mark_own(&node, dirty);
        if let Some(out) = self.out.get_mut(slot) {
            *out = None;
        }
        dirty.gone.push(slot);
    }

    /// A user's own nodes changed: those of them whose filter, SSH rules or visibility
    /// use the user's node list.
    fn mark_own(&self, node: &NodeInfo, dirty: &mut Dirty) {
        if node.is_tagged() {
            return;
        }
        let Some(own) = self.own.get(&node.user) else { return };
        for i in own.nodes.iter() {
            if self.rules.iter().any(|r| r.self_applies(i)) {
                dirty.filter.push(i);
                dirty.visible.push(i);
            }
            if self.ssh.iter().any(|s| s.srcs.contains(i)) {
                dirty.ssh.push(i);
            }
        }
    }

    /// `old`'s filter with the current source prefixes of the rules in `swaps`, or `None`
    /// when it has none of those rules.
    fn swapped(&self, old: &NodePolicy, swaps: &[usize]) -> Option<(Vec<FilterRule>, Vec<u32>)> {
        let swapped = |o: u32| swaps.contains(&(o as usize));
        if !old.origins.iter().any(|&o| swapped(o)) {
            return None;
        }
        let mut filter = (*old.filter).clone();
        for (rule, &o) in filter.iter_mut().zip(&old.origins) {
            if let Some(state) = self.rules.get(o as usize).filter(|_| swapped(o)) {
                rule.srcs = state.prefixes.clone();
            }
        }
        Some((filter, old.origins.clone()))
    }

    /// Rule `r`'s source prefixes from scratch.
    fn rule_prefixes(&self, r: usize) -> Arc<[IpPrefix]> {
        let rule = &self.policy.rules[r];
        let mut prefixes = named_prefixes(&rule.srcs);
        if rule.srcs.iter().any(|s| matches!(s, Alias::All | Alias::DangerAll)) {
            prefixes.extend(super::output::every_address());
        }
        for i in self.rules[r].srcs.iter() {
            let Some(n) = self.info(i) else { continue };
            let groups = self.groups_of(n);
            if rule.srcs.iter().any(|s| membership::adds_node_addresses(s) && membership::identity(s, n, &groups)) {
                prefixes.extend(n.addresses.iter().map(|a| IpPrefix::host(*a)));
            }
        }
        prefixes.sort();
        prefixes.dedup();
        prefixes.into()
    }

    /// Rebuilds the outputs `dirty` names and returns the slots whose output changed.
    /// Only the parts marked are rebuilt: a peer that only gains a node to see costs a
    /// pointer, not a filter.
    pub(super) fn refresh(&mut self, mut dirty: Dirty) -> Vec<usize> {
        for list in [&mut dirty.filter, &mut dirty.swap, &mut dirty.ssh, &mut dirty.visible] {
            list.sort_unstable();
            list.dedup();
        }
        let mut todo: Vec<usize> =
            dirty.filter.iter().chain(&dirty.swap).chain(&dirty.ssh).chain(&dirty.visible).copied().collect();
        todo.sort_unstable();
        todo.dedup();
        let mut changed = dirty.gone;
        for slot in todo {
            let Some(node) = self.info(slot) else { continue };
            let Some(old) = self.node(slot) else {
                // New here: everything.
                let fresh = self.output(slot, node, None);
                self.out[slot] = Some(fresh);
                changed.push(slot);
                continue;
            };
            let marked = |list: &[usize]| list.binary_search(&slot).is_ok();
            let filter = if marked(&dirty.filter) {
                Some(self.filter_of(slot, node, old.class)).filter(|(f, _)| *f != *old.filter)
            } else if marked(&dirty.swap) {
                self.swapped(old, &dirty.swaps)
            } else {
                None
            };
            let ssh = marked(&dirty.ssh).then(|| self.ssh_of(slot, node)).filter(|s| *s != *old.ssh);
            let visible = marked(&dirty.visible)
                .then(|| self.visible_of(old.class, old.self_rule, node, Some(&old.visible)))
                .filter(|v| !Arc::ptr_eq(v, &old.visible));
            if filter.is_none() && ssh.is_none() && visible.is_none() {
                continue;
            }
            let Some(out) = self.out[slot].as_mut() else { continue };
            if let Some((f, origins)) = filter {
                out.filter = Arc::new(f);
                out.origins = origins;
            }
            if let Some(s) = ssh {
                out.ssh = Arc::new(s);
            }
            if let Some(v) = visible {
                out.visible = v;
            }
            changed.push(slot);
        }
        changed.sort_unstable();
        changed.dedup();
        changed
    }
}

/// The prefixes a rule's sources name themselves.
fn named_prefixes(srcs: &[Alias]) -> Vec<IpPrefix> {
    srcs.iter()
        .filter_map(|s| match s {
            Alias::Host(_, p) | Alias::Prefix(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn own_prefixes(slots: &[Option<NodeInfo>], nodes: &NodeSet) -> Arc<[IpPrefix]> {
    let mut prefixes: Vec<IpPrefix> = nodes
        .iter()
        .filter_map(|i| slots.get(i).and_then(Option::as_ref))
        .flat_map(|n| n.addresses.iter().map(|a| IpPrefix::host(*a)))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes.into()
}

/// `old` with `add` merged in (sorted), or `None` when it had them all.
fn with_added(old: &Arc<[IpPrefix]>, add: &[IpPrefix]) -> Option<Arc<[IpPrefix]>> {
    let mut at: Vec<(usize, IpPrefix)> =
        add.iter().filter_map(|p| old.binary_search(p).err().map(|i| (i, *p))).collect();
    if at.is_empty() {
        return None;
    }
    at.sort();
    at.dedup_by_key(|(_, p)| *p);
    let mut out = Vec::with_capacity(old.len() + at.len());
    let mut from = 0;
    for (i, p) in at {
        out.extend_from_slice(&old[from..i]);
        out.push(p);
        from = i;
    }
    out.extend_from_slice(&old[from..]);
    Some(out.into())
}

/// `old` without `gone`, or `None` when it had none of them.
fn with_removed(old: &Arc<[IpPrefix]>, gone: &[IpPrefix]) -> Option<Arc<[IpPrefix]>> {
    if !gone.iter().any(|p| old.binary_search(p).is_ok()) {
        return None;
    }
    Some(old.iter().filter(|p| !gone.contains(p)).copied().collect())
}

/// `ids` (sorted) with `id`.
fn with_id(ids: &Arc<[NodeId]>, id: NodeId) -> Arc<[NodeId]> {
    match ids.binary_search(&id) {
        Ok(_) => ids.clone(),
        Err(at) => ids[..at].iter().chain([&id]).chain(&ids[at..]).copied().collect(),
    }
}

/// Whether `node`'s user is among the `localpart:` people of an SSH rule (untagged only).
fn localpart_person(people: &[(String, std::collections::BTreeSet<String>)], node: &NodeInfo) -> bool {
    !node.is_tagged() && people.iter().any(|(_, p)| p.contains(&node.user))
}

fn intersects(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).any(|(x, y)| x & y != 0)
}
