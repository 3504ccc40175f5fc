//! The tailnet policy: Tailscale's policy file format (HuJSON with `groups`, `hosts`,
//! `tagOwners`, `acls`, `grants`, `ssh`, `tests`, `sshTests`, `autoApprovers`,
//! `nodeAttrs`), read strictly and compiled per node.
//!
//! - [`Policy::parse`] reads and checks a file: unknown keys, bad selectors, undefined
//!   groups and tags, malformed ports and protocols are errors as `file:line:col: message`
//!   naming the field; then the file's own `tests` and `sshTests` run, and a failing one
//!   rejects the policy. Parts the system reads but does not act on become
//!   [`Policy::warnings`], never silent drops.
//! - [`compile`] turns a policy and an inventory of nodes into what each node receives:
//!   its packet filter, its SSH rules and the peers it may see ([`NodePolicy`]). A node's
//!   user is in the groups the policy lists it in and in the declared groups its
//!   identity provider's group claim names ([`NodeInfo::idp_groups`], see [`idp_groups`]).
//!
//! Pure: no IO, no clock. The coordination server runs it; `meshcontrol policy check`
//! runs it offline.

pub mod alias;
mod compile;
mod evaluate;
mod hujson;
mod idp;
mod model;
mod nodeset;
mod ports;
mod read;
mod ssh_access;
#[cfg(test)]
mod tests;

use thiserror::Error;

pub use alias::Alias;
pub use compile::{compile, Compiled, NodeId, NodeInfo, NodePolicy, NodeSshAction, NodeSshRule, Tailnet, UserMap};
pub use hujson::{Pos, MAX_POLICY_BYTES};
pub use idp::{idp_groups, idp_policy_group, IdpGroups, MAX_IDP_GROUPS, MAX_IDP_GROUP_BYTES};
pub use model::*;
pub use nodeset::NodeSet;
pub use read::check_local_user;
pub use ssh_access::{ssh_access, SshAccess, SshDenied};

/// A policy that cannot be used, with where and why.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{file}:{}: {message}", .pos)]
pub struct PolicyError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

/// The policy of a tailnet that has none: every user reaches their own nodes, and may SSH
/// to them as any non-root account or root after a fresh check (DESIGN.md).
pub const DEFAULT_POLICY: &str = r#"// The default policy: each user's nodes reach each other; SSH to your own nodes
// needs a recent login with the identity provider (check), as any account.
{
  "acls": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
  ],
  "ssh": [
    {
      "action": "check",
      "src": ["autogroup:member"],
      "dst": ["autogroup:self"],
      "users": ["autogroup:nonroot", "root"],
    },
  ],
}
"#;

impl Policy {
    /// Reads, checks and tests a policy file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        let locate = |e: hujson::Located| PolicyError { file: file.to_string(), pos: e.pos, message: e.message };
        let policy = read::read(text).map_err(locate)?;
        evaluate::run_tests(&policy).map_err(locate)?;
        Ok(policy)
    }

    /// [`DEFAULT_POLICY`], parsed.
    pub fn default_policy() -> Policy {
        // The text is a constant checked by a test; an error here would be a bug in it.
        Policy::parse("default", DEFAULT_POLICY).unwrap_or_default()
    }

    /// One line for people: what the file defines.
    pub fn summary(&self) -> String {
        format!(
            "{} groups, {} hosts, {} tags, {} network rules, {} ssh rules, {} tests, {} ssh tests, {} warnings",
            self.groups.len(),
            self.hosts.len(),
            self.tag_owners.len(),
            self.rules.len(),
            self.ssh.len(),
            self.tests.len(),
            self.ssh_tests.len(),
            self.warnings.len()
        )
    }

    /// Whether `owner` (a user name, or `tag:x` for a tagged node's tags) may assign
    /// `tag` under `tagOwners`.
    pub fn may_own_tag(&self, tag: &str, user: &str, user_tags: &[String]) -> bool {
        self.tag_owners.get(tag).is_some_and(|owners| {
            owners.iter().any(|o| {
                alias::user_matches(o, user)
                    || self.groups.get(o).is_some_and(|m| m.iter().any(|u| alias::user_matches(u, user)))
                    || user_tags.iter().any(|t| t == o)
                    || (o == "autogroup:member" && user_tags.is_empty())
            })
        })
    }

    /// The decision the first matching SSH rule takes for a login, on identities (the
    /// basis of `sshTests`; nodes decide on their compiled rules).
    pub fn ssh_decision(&self, src: &Alias, dst: &Alias, user: &str) -> Option<SshAction> {
        match evaluate::ssh_decision(self, src, dst, user) {
            evaluate::SshOutcome::Accept => Some(SshAction::Accept),
            evaluate::SshOutcome::Check => Some(SshAction::Check),
            evaluate::SshOutcome::Deny => None,
        }
    }
}
