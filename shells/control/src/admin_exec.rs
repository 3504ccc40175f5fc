//! Admin requests applied to the core's `ControlServer` (inside the actor, which owns it).
//! The core decides; this only translates requests into its calls and results into views.
//! Requests that need the database (`audit`, `users/passwd`) are the actor's.

use std::time::Duration;

use mesh_core::control::server::{AdminError, AuthKeyOptions, ControlServer};
use mesh_core::policy::{NodeId, DEFAULT_POLICY};
use mesh_core::time::Instant;
use serde::Serialize;
use serde_json::Value;

use crate::admin_api::{
    AdminRequest, ApiKeyView, AuthKeyView, CreatedKey, NodeView, PendingView, PolicyView, UserView,
};
use crate::os_random::hex;

fn value<T: Serialize>(v: T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

fn done(r: Result<(), AdminError>) -> Result<Value, String> {
    r.map(|()| Value::Null).map_err(|e| e.to_string())
}

pub fn users(server: &ControlServer) -> Vec<UserView> {
    server
        .users()
        .map(|u| UserView {
            id: u.id.0,
            name: u.name.clone(),
            nodes: server.nodes().filter(|n| n.user == u.id).count(),
            groups: u.groups.clone(),
        })
        .collect()
}

pub fn user_name(server: &ControlServer, id: mesh_core::control::server::UserId) -> String {
    server.users().find(|u| u.id == id).map(|u| u.name.clone()).unwrap_or_default()
}

pub fn nodes(server: &ControlServer, unix: u64) -> Vec<NodeView> {
    server
        .nodes()
        .map(|n| NodeView {
            id: n.id.0,
            name: n.name.clone(),
            user: user_name(server, n.user),
            tags: n.tags.clone(),
            addresses: n.addresses.iter().map(|a| a.to_string()).collect(),
            online: server.is_online(n.id),
            last_seen: server.last_seen(n.id),
            key_expiry: n.key_expiry,
            expired: n.key_expiry.is_some_and(|e| e <= unix),
            ephemeral: n.ephemeral,
            ssh: n.ssh,
            machine_key: hex(&n.machine_key.0),
            node_key: hex(&n.node_key.0),
        })
        .collect()
}

pub fn pending(server: &ControlServer) -> Vec<PendingView> {
    let logins = server.pending_logins().map(|(token, hostname)| PendingView {
        kind: "login".into(),
        token: token.into(),
        detail: format!("node {hostname} waits for a login"),
    });
    let checks = server.pending_checks().map(|(token, src, dst, user)| PendingView {
        kind: "check".into(),
        token: token.into(),
        detail: format!("ssh from node {src} to node {dst} as {user}"),
    });
    logins.chain(checks).collect()
}

/// Applies `request` as `actor`. `Err` is the core's refusal (nothing changed).
pub fn apply(
    server: &mut ControlServer,
    now: Instant,
    unix: u64,
    actor: &str,
    request: AdminRequest,
) -> Result<Value, String> {
    match request {
        AdminRequest::UsersCreate { name } => {
            server.create_user(actor, &name).map(|id| Value::from(id.0)).map_err(|e| e.to_string())
        }
        AdminRequest::UsersList {} => value(users(server)),
        AdminRequest::UsersRename { old, new } => done(server.rename_user(now, actor, &old, &new)),
        AdminRequest::UsersDelete { name } => done(server.delete_user(actor, &name)),
        AdminRequest::PreauthkeysCreate { user, reusable, ephemeral, tags, expiration_secs } => {
            let options = AuthKeyOptions { reusable, ephemeral, tags, lifetime: Duration::from_secs(expiration_secs) };
            let (id, key) = server.create_auth_key(actor, &user, options).map_err(|e| e.to_string())?;
            value(CreatedKey { id, key })
        }
        AdminRequest::PreauthkeysList { user } => {
            let wanted = match &user {
                Some(name) => Some(server.user_id(name).ok_or_else(|| AdminError::NoUser(name.clone()).to_string())?),
                None => None,
            };
            let keys: Vec<AuthKeyView> = server
                .auth_keys()
                .filter(|k| wanted.is_none_or(|u| k.user == u))
                .map(|k| AuthKeyView {
                    id: k.id,
                    user: user_name(server, k.user),
                    reusable: k.reusable,
                    ephemeral: k.ephemeral,
                    tags: k.tags.clone(),
                    expires: k.expires,
                    used: k.used,
                    revoked: k.revoked,
                })
                .collect();
            value(keys)
        }
        AdminRequest::PreauthkeysExpire { id } => done(server.revoke_auth_key(actor, id)),
        AdminRequest::NodesList {} => value(nodes(server, unix)),
        AdminRequest::NodesExpire { id } => done(server.expire_node(now, actor, NodeId(id))),
        AdminRequest::NodesDelete { id } => done(server.delete_node(now, actor, NodeId(id))),
        AdminRequest::NodesTag { id, tags } => done(server.set_node_tags(now, actor, NodeId(id), tags)),
        AdminRequest::NodesRename { id, name } => done(server.rename_node(now, actor, NodeId(id), &name)),
        AdminRequest::NodesRegister { token, user } => {
            server.approve_login(now, actor, &token, &user).map(|id| Value::from(id.0)).map_err(|e| e.to_string())
        }
        AdminRequest::PolicyGet {} => value(match server.policy_text() {
            Some(text) => PolicyView { text: text.to_string(), default: false },
            None => PolicyView { text: DEFAULT_POLICY.to_string(), default: true },
        }),
        AdminRequest::PolicySet { text } => done(server.set_policy(now, actor, &text)),
        AdminRequest::ApikeysCreate { expiration_secs } => {
            let (id, key) = server.create_api_key(actor, Duration::from_secs(expiration_secs));
            value(CreatedKey { id, key })
        }
        AdminRequest::ApikeysList {} => value(
            server
                .api_keys()
                .map(|k| ApiKeyView { id: k.id, created: k.created, expires: k.expires, revoked: k.revoked })
                .collect::<Vec<_>>(),
        ),
        AdminRequest::ApikeysExpire { id } => done(server.expire_api_key(actor, id)),
        AdminRequest::AuthList {} => value(pending(server)),
        AdminRequest::AuthApprove { token, user } => {
            if server.pending_checks().any(|(t, ..)| t == token) {
                done(server.approve_check(now, actor, &token))
            } else if server.pending_logins().any(|(t, _)| t == token) {
                let user = user.ok_or("this is a pending login: name the user it logs in as (--user)")?;
                server.approve_login(now, actor, &token, &user).map(|id| Value::from(id.0)).map_err(|e| e.to_string())
            } else {
                Err(AdminError::NoPending(token).to_string())
            }
        }
        AdminRequest::AuthReject { token } => {
            if server.pending_checks().any(|(t, ..)| t == token) {
                done(server.reject_check(now, actor, &token))
            } else {
                done(server.reject_login(now, actor, &token))
            }
        }
        AdminRequest::UsersPasswd { .. } | AdminRequest::Audit { .. } => {
            Err("internal: this request is served by the actor".into())
        }
    }
}
