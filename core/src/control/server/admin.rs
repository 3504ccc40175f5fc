//! Administration: what `meshcontrol`'s admin CLI and API do (users, pre-auth keys, the
//! policy, nodes).

use sha2::{Digest, Sha256};

use super::{AdminError, AuthKeyOptions, AuthKeyRecord, Change, ControlServer, NodeRecord, Output, UserId, UserRecord};
use crate::policy::{NodeId, Policy};
use crate::time::Instant;

impl ControlServer {
    // ---- administration ------------------------------------------------------------------

    pub fn create_user(&mut self, name: &str) -> Result<UserId, AdminError> {
        crate::policy::alias::check_user_name(name).map_err(AdminError::Invalid)?;
        if self.users.values().any(|u| u.name == name) {
            return Err(AdminError::UserExists(name.into()));
        }
        let id = UserId(self.next_user);
        self.next_user += 1;
        let record = UserRecord { id, name: name.into() };
        self.users.insert(id, record.clone());
        self.out.push_back(Output::Persist(Change::User(record)));
        Ok(id)
    }

    pub fn user_id(&self, name: &str) -> Option<UserId> {
        self.users.values().find(|u| u.name == name).map(|u| u.id)
    }

    /// A new pre-auth key; the secret is returned once and only its hash is kept.
    pub fn create_auth_key(&mut self, user: &str, options: AuthKeyOptions) -> Result<(u64, String), AdminError> {
        let user_id = self.user_id(user).ok_or_else(|| AdminError::NoUser(user.into()))?;
        for t in &options.tags {
            if !self.policy.tag_owners.contains_key(t) {
                return Err(AdminError::Invalid(format!("{t} is not defined in the policy's tagOwners")));
            }
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
        Ok((id, format!("mskey-{id}-{hex}")))
    }

    pub fn revoke_auth_key(&mut self, id: u64) -> Result<(), AdminError> {
        let key = self.keys.get_mut(&id).ok_or(AdminError::NoKey(id))?;
        key.revoked = true;
        let record = key.clone();
        self.out.push_back(Output::Persist(Change::AuthKey(record)));
        Ok(())
    }

    /// Replaces the policy; a policy that fails to parse or fails its tests changes nothing.
    pub fn set_policy(&mut self, now: Instant, text: &str) -> Result<(), AdminError> {
        let policy = Policy::parse("policy", text)?;
        self.policy = policy;
        self.policy_text = Some(text.to_string());
        self.out.push_back(Output::Persist(Change::Policy(text.to_string())));
        self.changed(now);
        Ok(())
    }

    pub fn policy_text(&self) -> Option<&str> {
        self.policy_text.as_deref()
    }

    pub fn delete_node(&mut self, now: Instant, id: NodeId) -> Result<(), AdminError> {
        if !self.nodes.contains_key(&id) {
            return Err(AdminError::NoNode(id.0));
        }
        self.remove_node(id);
        self.changed(now);
        Ok(())
    }

    /// Expires a node's key now: it leaves every peer's map and must log in again.
    pub fn expire_node(&mut self, now: Instant, id: NodeId) -> Result<(), AdminError> {
        let unix = self.unix;
        let node = self.nodes.get_mut(&id).ok_or(AdminError::NoNode(id.0))?;
        node.key_expiry = Some(unix);
        let record = node.clone();
        self.out.push_back(Output::Persist(Change::Node(record)));
        self.changed(now);
        Ok(())
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
}
