//! Administration: what `meshcontrol`'s admin CLI and API do (users, pre-auth keys, API
//! keys, the policy, nodes, pending logins). Every change names its actor and goes into the
//! audit log; a refused operation changes nothing.

use sha2::{Digest, Sha256};

use super::{
    AdminError, ApiKeyRecord, AuthKeyOptions, AuthKeyRecord, Change, ControlServer, NodeRecord, Output, UserId,
    UserRecord,
};
use crate::ct;
use crate::policy::{NodeId, Policy};
use crate::time::Instant;

/// The DNS label rules node names follow.
fn check_label(name: &str) -> Result<(), AdminError> {
    let good = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if good {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!("{name:?} is not a DNS label (a-z, 0-9, -)")))
    }
}

/// `<prefix>-<id>-<48 hex>` -> (id, secret).
pub(super) fn parse_secret<'a>(prefix: &str, text: &'a str) -> Option<(u64, &'a str)> {
    let rest = text.strip_prefix(prefix)?.strip_prefix('-')?;
    let (id, secret) = rest.split_once('-')?;
    let good = !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()) && secret.len() == 48;
    good.then(|| id.parse().ok().map(|id| (id, secret))).flatten()
}

impl ControlServer {
    pub fn create_user(&mut self, actor: &str, name: &str) -> Result<UserId, AdminError> {
        crate::policy::alias::check_user_name(name).map_err(AdminError::Invalid)?;
        if self.users.values().any(|u| u.name == name) {
            return Err(AdminError::UserExists(name.into()));
        }
        let id = UserId(self.next_user);
        self.next_user += 1;
        let record = UserRecord { id, name: name.into(), groups: Vec::new() };
        self.users.insert(id, record.clone());
        self.out.push_back(Output::Persist(Change::User(record)));
        self.audit(actor, "user-create", name.to_string());
        Ok(id)
    }

    pub fn rename_user(&mut self, now: Instant, actor: &str, old: &str, new: &str) -> Result<(), AdminError> {
        crate::policy::alias::check_user_name(new).map_err(AdminError::Invalid)?;
        if self.user_id(new).is_some() {
            return Err(AdminError::UserExists(new.into()));
        }
        let id = self.user_id(old).ok_or_else(|| AdminError::NoUser(old.into()))?;
        let groups = self.users.get(&id).map(|u| u.groups.clone()).unwrap_or_default();
        let record = UserRecord { id, name: new.into(), groups };
        self.users.insert(id, record.clone());
        self.out.push_back(Output::Persist(Change::User(record)));
        self.audit(actor, "user-rename", format!("{old} -> {new}"));
        let theirs: Vec<NodeId> = self.nodes.values().filter(|n| n.user == id).map(|n| n.id).collect();
        self.nodes_changed(now, &theirs);
        Ok(())
    }

    /// Records the group claim of `name`'s latest single sign-on (the shell calls this after
    /// verifying an ID token): the user is then also in every declared policy group the
    /// claim names (see [`crate::policy::idp_groups`]). Values that are not valid group
    /// names are ignored and at most [`crate::policy::MAX_IDP_GROUPS`] are kept. Returns
    /// whether the groups changed; only a change is persisted, audited (`user-groups`) and
    /// compiled, and the nodes whose filter, SSH rules or peers depend on it get an update.
    pub fn set_user_groups(
        &mut self,
        now: Instant,
        actor: &str,
        name: &str,
        groups: &[String],
    ) -> Result<bool, AdminError> {
        let id = self.user_id(name).ok_or_else(|| AdminError::NoUser(name.into()))?;
        let sanitized = crate::policy::idp_groups(groups);
        if sanitized.ignored > 0 || sanitized.dropped > 0 {
            tracing::info!(
                user = name,
                ignored = sanitized.ignored,
                dropped = sanitized.dropped,
                "IdP groups: invalid names ignored, groups past the limit dropped"
            );
        }
        let Some(user) = self.users.get_mut(&id) else { return Err(AdminError::NoUser(name.into())) };
        if user.groups == sanitized.kept {
            return Ok(false);
        }
        user.groups = sanitized.kept;
        let record = user.clone();
        self.out.push_back(Output::Persist(Change::User(record.clone())));
        let shown = if record.groups.is_empty() { "(none)".to_string() } else { record.groups.join(", ") };
        self.audit(actor, "user-groups", format!("{name}: {shown}"));
        let theirs: Vec<NodeId> = self.nodes.values().filter(|n| n.user == id).map(|n| n.id).collect();
        self.nodes_changed(now, &theirs);
        Ok(true)
    }

    /// Deletes a user without nodes (delete or move their nodes first); their pre-auth
    /// keys are revoked.
    pub fn delete_user(&mut self, actor: &str, name: &str) -> Result<(), AdminError> {
        let id = self.user_id(name).ok_or_else(|| AdminError::NoUser(name.into()))?;
        let nodes = self.nodes.values().filter(|n| n.user == id).count();
        if nodes > 0 {
            return Err(AdminError::Invalid(format!("{name} still has {nodes} nodes")));
        }
        let keys: Vec<u64> = self.keys.values().filter(|k| k.user == id && !k.revoked).map(|k| k.id).collect();
        for k in keys {
            self.revoke_auth_key(actor, k)?;
        }
        self.users.remove(&id);
        self.out.push_back(Output::Persist(Change::UserRemoved(id)));
        self.audit(actor, "user-delete", name.to_string());
        Ok(())
    }

    pub fn user_id(&self, name: &str) -> Option<UserId> {
        self.users.values().find(|u| u.name == name).map(|u| u.id)
    }

    /// A new pre-auth key; the secret is returned once and only its hash is kept.
    pub fn create_auth_key(
        &mut self,
        actor: &str,
        user: &str,
        options: AuthKeyOptions,
    ) -> Result<(u64, String), AdminError> {
        let user_id = self.user_id(user).ok_or_else(|| AdminError::NoUser(user.into()))?;
        if let Some(t) = options.tags.iter().find(|t| !self.policy.tag_owners.contains_key(*t)) {
            return Err(AdminError::Invalid(format!("{t} is not defined in the policy's tagOwners")));
        }
        let id = self.next_key;
        self.next_key += 1;
        let hex: String = self.rng.gen_bytes::<24>().iter().map(|b| format!("{b:02x}")).collect();
        let record = AuthKeyRecord {
            id,
            user: user_id,
            hash: Sha256::digest(hex.as_bytes()).into(),
            reusable: options.reusable,
            ephemeral: options.ephemeral,
            tags: options.tags,
            expires: self.unix.saturating_add(options.lifetime.as_secs()),
            used: false,
            revoked: false,
        };
        self.keys.insert(id, record.clone());
        self.out.push_back(Output::Persist(Change::AuthKey(record)));
        self.audit(actor, "preauthkey-create", format!("{id} for {user}"));
        Ok((id, format!("mskey-{id}-{hex}")))
    }

    pub fn revoke_auth_key(&mut self, actor: &str, id: u64) -> Result<(), AdminError> {
        let key = self.keys.get_mut(&id).ok_or(AdminError::NoKey(id))?;
        key.revoked = true;
        let record = key.clone();
        self.out.push_back(Output::Persist(Change::AuthKey(record)));
        self.audit(actor, "preauthkey-expire", id.to_string());
        Ok(())
    }

    /// A new admin API key (`mskapi-<id>-<secret>`), shown once.
    pub fn create_api_key(&mut self, actor: &str, lifetime: std::time::Duration) -> (u64, String) {
        let id = self.next_api_key;
        self.next_api_key += 1;
        let hex: String = self.rng.gen_bytes::<24>().iter().map(|b| format!("{b:02x}")).collect();
        let record = ApiKeyRecord {
            id,
            hash: Sha256::digest(hex.as_bytes()).into(),
            created: self.unix,
            expires: self.unix.saturating_add(lifetime.as_secs()),
            revoked: false,
        };
        self.api_keys.insert(id, record.clone());
        self.out.push_back(Output::Persist(Change::ApiKey(record)));
        self.audit(actor, "apikey-create", id.to_string());
        (id, format!("mskapi-{id}-{hex}"))
    }

    pub fn expire_api_key(&mut self, actor: &str, id: u64) -> Result<(), AdminError> {
        let key = self.api_keys.get_mut(&id).ok_or(AdminError::NoApiKey(id))?;
        key.revoked = true;
        let record = key.clone();
        self.out.push_back(Output::Persist(Change::ApiKey(record)));
        self.audit(actor, "apikey-expire", id.to_string());
        Ok(())
    }

    /// The id of the valid API key `secret` is, compared in constant time.
    pub fn verify_api_key(&self, secret: &str) -> Option<u64> {
        let (id, hex) = parse_secret("mskapi", secret)?;
        let key = self.api_keys.get(&id)?;
        let hash: [u8; 32] = Sha256::digest(hex.as_bytes()).into();
        (ct::eq(&hash, &key.hash) && !key.revoked && key.expires > self.unix).then_some(id)
    }

    pub fn api_keys(&self) -> impl Iterator<Item = &ApiKeyRecord> {
        self.api_keys.values()
    }

    /// Replaces the policy; a policy that fails to parse or fails its tests changes nothing.
    pub fn set_policy(&mut self, now: Instant, actor: &str, text: &str) -> Result<(), AdminError> {
        let policy = Policy::parse("policy", text)?;
        self.policy = std::sync::Arc::new(policy);
        self.policy_text = Some(text.to_string());
        self.out.push_back(Output::Persist(Change::Policy(text.to_string())));
        self.audit(actor, "policy-set", self.policy.summary());
        self.forget_stale_approvals();
        self.policy_changed(now);
        Ok(())
    }

    pub fn policy_text(&self) -> Option<&str> {
        self.policy_text.as_deref()
    }

    pub fn delete_node(&mut self, now: Instant, actor: &str, id: NodeId) -> Result<(), AdminError> {
        let name = self.nodes.get(&id).map(|n| n.name.clone()).ok_or(AdminError::NoNode(id.0))?;
        self.remove_node(id);
        self.audit(actor, "node-delete", format!("{name} ({})", id.0));
        self.nodes_changed(now, &[id]);
        Ok(())
    }

    /// Expires a node's key now: it leaves every peer's map and must log in again.
    pub fn expire_node(&mut self, now: Instant, actor: &str, id: NodeId) -> Result<(), AdminError> {
        let unix = self.unix;
        let node = self.nodes.get_mut(&id).ok_or(AdminError::NoNode(id.0))?;
        node.key_expiry = Some(unix);
        let record = node.clone();
        self.out.push_back(Output::Persist(Change::Node(record.clone())));
        self.audit(actor, "node-expire", format!("{} ({})", record.name, id.0));
        self.nodes_changed(now, &[id]);
        Ok(())
    }

    pub fn rename_node(&mut self, now: Instant, actor: &str, id: NodeId, name: &str) -> Result<(), AdminError> {
        check_label(name)?;
        if self.index.by_name(name).is_some_and(|other| other != id) {
            return Err(AdminError::Invalid(format!("the name {name} is taken")));
        }
        let node = self.nodes.get_mut(&id).ok_or(AdminError::NoNode(id.0))?;
        self.index.remove(node);
        let old = std::mem::replace(&mut node.name, name.to_string());
        self.index.add(node);
        let record = node.clone();
        self.out.push_back(Output::Persist(Change::Node(record)));
        self.audit(actor, "node-rename", format!("{old} -> {name}"));
        self.nodes_changed(now, &[id]);
        Ok(())
    }

    /// Replaces a node's tags (defined in tagOwners). A tagged node's key never expires;
    /// untagging gives it a fresh lifetime.
    pub fn set_node_tags(
        &mut self,
        now: Instant,
        actor: &str,
        id: NodeId,
        mut tags: Vec<String>,
    ) -> Result<(), AdminError> {
        if let Some(t) = tags.iter().find(|t| !self.policy.tag_owners.contains_key(*t)) {
            return Err(AdminError::Invalid(format!("{t} is not defined in the policy's tagOwners")));
        }
        tags.sort();
        tags.dedup();
        let lifetime = self.config.node_key_lifetime.as_secs();
        let unix = self.unix;
        let node = self.nodes.get_mut(&id).ok_or(AdminError::NoNode(id.0))?;
        node.key_expiry = if tags.is_empty() { Some(unix.saturating_add(lifetime)) } else { None };
        node.tags = tags;
        let record: NodeRecord = node.clone();
        self.out.push_back(Output::Persist(Change::Node(record.clone())));
        self.audit(actor, "node-tag", format!("{} ({}): {:?}", record.name, id.0, record.tags));
        self.nodes_changed(now, &[id]);
        Ok(())
    }

    /// Completes an interactive registration for `user` (the login page, or `nodes
    /// register`): the waiting node is registered and told so.
    pub fn approve_login(&mut self, now: Instant, actor: &str, token: &str, user: &str) -> Result<NodeId, AdminError> {
        let user_id = self.user_id(user).ok_or_else(|| AdminError::NoUser(user.into()))?;
        let pending = self.pending_logins.get(token).ok_or_else(|| AdminError::NoPending(token.into()))?;
        if pending.expires <= now {
            return Err(AdminError::NoPending(token.into()));
        }
        let tags = pending.request.requested_tags.clone();
        self.check_tags(user_id, &tags, false).map_err(AdminError::Invalid)?;
        if self.nodes.values().any(|n| n.node_key == pending.request.node_key || n.machine_key == pending.machine_key) {
            return Err(AdminError::Invalid("that machine or node key is registered already".into()));
        }
        let Some(p) = self.pending_logins.remove(token) else { return Err(AdminError::NoPending(token.into())) };
        if !self.conns.contains_key(&p.conn) {
            return Err(AdminError::Invalid("the node is no longer connected; run `up` again".into()));
        }
        self.audit(actor, "login-approve", format!("{} for {user}", p.request.hostname));
        self.create_node(now, p.conn, p.machine_key, p.request, user_id, tags, false)
            .ok_or_else(|| AdminError::Invalid("the tailnet has no free addresses".into()))
    }

    pub fn reject_login(&mut self, now: Instant, actor: &str, token: &str) -> Result<(), AdminError> {
        let p = self.pending_logins.remove(token).ok_or_else(|| AdminError::NoPending(token.into()))?;
        self.audit(actor, "login-reject", p.request.hostname.clone());
        self.reject(now, p.conn, "the login was rejected");
        Ok(())
    }

    /// Registrations waiting for a login: (token, hostname).
    pub fn pending_logins(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pending_logins.iter().map(|(t, p)| (t.as_str(), p.request.hostname.as_str()))
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    pub fn users(&self) -> impl Iterator<Item = &UserRecord> {
        self.users.values()
    }

    pub fn auth_keys(&self) -> impl Iterator<Item = &AuthKeyRecord> {
        self.keys.values()
    }

    pub fn is_online(&self, id: NodeId) -> bool {
        self.online.contains(&id)
    }

    /// When node `id` was last connected (unix seconds; `None`: not since this server
    /// started). An online node was seen now.
    pub fn last_seen(&self, id: NodeId) -> Option<u64> {
        if self.online.contains(&id) {
            return Some(self.unix);
        }
        self.last_seen.get(&id).copied()
    }
}
