//! What the server stores and is configured with: users, nodes, pre-auth keys, the durable
//! [`Change`]s the shell commits, and the [`State`] it loads back.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use thiserror::Error;

use crate::control::messages::ServerMessage;
use crate::policy::{NodeId, PolicyError};
use crate::wireguard::PublicKey;

/// A user of the tailnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct UserId(pub u64);

/// One control connection, numbered by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserRecord {
    pub id: UserId,
    /// `alice@example.com`: the name policies use.
    pub name: String,
    /// The group claim of the user's most recent single sign-on (`eng`, which fills the
    /// policy's `group:eng` when the policy declares it), sanitized by
    /// [`crate::policy::idp_groups`]: sorted, valid names only, at most
    /// [`crate::policy::MAX_IDP_GROUPS`]. Empty for users who never signed on.
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub machine_key: PublicKey,
    pub node_key: PublicKey,
    pub user: UserId,
    /// Unique DNS label.
    pub name: String,
    pub tags: Vec<String>,
    pub addresses: Vec<IpAddr>,
    pub endpoints: Vec<SocketAddr>,
    pub ssh_host_keys: Vec<String>,
    pub ssh: bool,
    /// Unix seconds; `None`: never (tagged nodes).
    pub key_expiry: Option<u64>,
    pub ephemeral: bool,
}

/// A pre-authentication key. Only the SHA-256 of its secret is kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuthKeyRecord {
    pub id: u64,
    pub user: UserId,
    pub hash: [u8; 32],
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    /// Unix seconds.
    pub expires: u64,
    pub used: bool,
    pub revoked: bool,
}

/// A durable change, for the shell to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    User(UserRecord),
    Node(NodeRecord),
    NodeRemoved(NodeId),
    AuthKey(AuthKeyRecord),
    Policy(String),
    UserRemoved(UserId),
    ApiKey(ApiKeyRecord),
    Approval(ApprovalRecord),
    ApprovalRemoved {
        src: NodeId,
        dst: NodeId,
        local_user: String,
    },
    /// Appended to the audit log (never loaded back into the state machine).
    Audit(AuditEntry),
}

/// An admin API key; only the SHA-256 of its secret is kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyRecord {
    pub id: u64,
    pub hash: [u8; 32],
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    pub revoked: bool,
}

/// A check-mode approval: `src` may log in to `dst` as `local_user` until `expires`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalRecord {
    pub src: NodeId,
    pub dst: NodeId,
    pub local_user: String,
    /// When the user authenticated (unix seconds).
    pub authenticated: u64,
    pub expires: u64,
    /// The rule it was given under; a policy that changes the rule forgets it.
    pub rule: String,
}

/// Who did what, when.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub unix: u64,
    /// `admin`, `api-key:3`, `node`, a user name.
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// Everything the shell keeps, loaded back at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub users: Vec<UserRecord>,
    pub nodes: Vec<NodeRecord>,
    pub auth_keys: Vec<AuthKeyRecord>,
    pub api_keys: Vec<ApiKeyRecord>,
    pub approvals: Vec<ApprovalRecord>,
    /// `None`: the default policy.
    pub policy: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Commit this before acting on any later output.
    Persist(Change),
    Send {
        conn: ConnId,
        message: ServerMessage,
    },
    Close {
        conn: ConnId,
        reason: String,
    },
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub dns_domain: String,
    /// The URL nodes and people reach the server at (login links).
    pub server_url: String,
    /// How long a user's node key is valid (Tailscale and headscale: 180 days).
    pub node_key_lifetime: Duration,
    pub keepalive: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            dns_domain: "mesh.internal".into(),
            server_url: "http://127.0.0.1:8080".into(),
            node_key_lifetime: Duration::from_secs(180 * 86_400),
            keepalive: Duration::from_secs(50),
        }
    }
}

/// Why an admin operation was refused. Nothing changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AdminError {
    #[error("user {0} exists")]
    UserExists(String),
    #[error("no user {0}")]
    NoUser(String),
    #[error("no node {0}")]
    NoNode(u64),
    #[error("no pre-auth key {0}")]
    NoKey(u64),
    #[error("no API key {0}")]
    NoApiKey(u64),
    #[error("no pending login or check {0}")]
    NoPending(String),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Invalid(String),
}

/// Options of a new pre-auth key.
#[derive(Clone, Debug, Default)]
pub struct AuthKeyOptions {
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    pub lifetime: Duration,
}
