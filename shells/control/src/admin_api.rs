//! The admin protocol: one request/response vocabulary for the Unix socket and for HTTP.
//!
//! A request is `{"op": "users/create", "args": {"name": "alice@example.com"}}`, a reply
//! `{"ok": <result>}` or `{"error": "<why>"}` (refused: nothing changed). On the socket
//! each is one frame: a 4-byte big-endian length, then that many bytes of JSON (at most
//! [`MAX_FRAME`]). Over HTTP the same request is `POST /api/v1/<op>` with `args` as the
//! body; the answer is 200 with the result, or `{"error": ...}` with 401 (no or invalid
//! API key), 400 (not a request) or 422 (refused by the server).

use std::fmt;

use mesh_core::control::server::AuditEntry;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest frame on the admin socket (a policy is at most 1 MiB).
pub const MAX_FRAME: usize = 4 << 20;

/// A secret in a request (a password): never shown by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", deny_unknown_fields)]
pub enum AdminRequest {
    #[serde(rename = "users/create")]
    UsersCreate { name: String },
    #[serde(rename = "users/list")]
    UsersList {},
    #[serde(rename = "users/rename")]
    UsersRename { old: String, new: String },
    #[serde(rename = "users/delete")]
    UsersDelete { name: String },
    /// Sets the user's local login password (hashed with argon2 by the server).
    #[serde(rename = "users/passwd")]
    UsersPasswd { name: String, password: Secret },
    #[serde(rename = "preauthkeys/create")]
    PreauthkeysCreate {
        user: String,
        #[serde(default)]
        reusable: bool,
        #[serde(default)]
        ephemeral: bool,
        #[serde(default)]
        tags: Vec<String>,
        expiration_secs: u64,
    },
    #[serde(rename = "preauthkeys/list")]
    PreauthkeysList {
        #[serde(default)]
        user: Option<String>,
    },
    #[serde(rename = "preauthkeys/expire")]
    PreauthkeysExpire { id: u64 },
    #[serde(rename = "nodes/list")]
    NodesList {},
    #[serde(rename = "nodes/expire")]
    NodesExpire { id: u64 },
    #[serde(rename = "nodes/delete")]
    NodesDelete { id: u64 },
    #[serde(rename = "nodes/tag")]
    NodesTag { id: u64, tags: Vec<String> },
    #[serde(rename = "nodes/rename")]
    NodesRename { id: u64, name: String },
    /// Approves a pending interactive login (the token of its URL) for `user`.
    #[serde(rename = "nodes/register")]
    NodesRegister { token: String, user: String },
    #[serde(rename = "policy/get")]
    PolicyGet {},
    #[serde(rename = "policy/set")]
    PolicySet { text: String },
    #[serde(rename = "apikeys/create")]
    ApikeysCreate { expiration_secs: u64 },
    #[serde(rename = "apikeys/list")]
    ApikeysList {},
    #[serde(rename = "apikeys/expire")]
    ApikeysExpire { id: u64 },
    /// Pending interactive logins and check holds.
    #[serde(rename = "auth/list")]
    AuthList {},
    /// Approves a check hold, or a pending login (which needs `user`).
    #[serde(rename = "auth/approve")]
    AuthApprove {
        token: String,
        #[serde(default)]
        user: Option<String>,
    },
    #[serde(rename = "auth/reject")]
    AuthReject { token: String },
    #[serde(rename = "audit")]
    Audit {
        #[serde(default)]
        limit: Option<usize>,
        #[serde(default)]
        actor: Option<String>,
        /// Entries whose action starts with this (`node-`, `ssh-check`).
        #[serde(default)]
        action: Option<String>,
        /// Entries whose detail contains this.
        #[serde(default)]
        contains: Option<String>,
    },
}

impl AdminRequest {
    /// The request's name (`users/create`), for logs.
    pub fn op(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op").and_then(|op| op.as_str()).map(str::to_string))
            .unwrap_or_default()
    }
}

/// The answer to one request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminReply {
    Ok(serde_json::Value),
    Error(String),
}

// ---- results ---------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserView {
    pub id: u64,
    pub name: String,
    pub nodes: usize,
    /// The group claim of the user's latest single sign-on (`eng` fills `group:eng`).
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeView {
    pub id: u64,
    pub name: String,
    pub user: String,
    pub tags: Vec<String>,
    pub addresses: Vec<String>,
    pub online: bool,
    /// Unix seconds of the last connection (now, when online); `None`: not since the
    /// server started.
    #[serde(default)]
    pub last_seen: Option<u64>,
    /// Unix seconds; `None`: never.
    pub key_expiry: Option<u64>,
    pub expired: bool,
    pub ephemeral: bool,
    pub ssh: bool,
    /// Hex.
    pub machine_key: String,
    pub node_key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthKeyView {
    pub id: u64,
    pub user: String,
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    pub expires: u64,
    pub used: bool,
    pub revoked: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiKeyView {
    pub id: u64,
    pub created: u64,
    pub expires: u64,
    pub revoked: bool,
}

/// A key shown once: a pre-auth key or an API key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatedKey {
    pub id: u64,
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingView {
    /// `login` or `check`.
    pub kind: String,
    pub token: String,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyView {
    /// The policy text in force.
    pub text: String,
    /// No policy was ever set: `text` is the built-in default.
    pub default: bool,
}

pub type AuditView = AuditEntry;

// ---- the socket's framing --------------------------------------------------------------

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes is larger than {MAX_FRAME}")]
    TooLarge(usize),
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The 4-byte prefix of a frame for `body`.
pub fn frame(body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len =
        u32::try_from(body.len()).ok().filter(|&l| l as usize <= MAX_FRAME).ok_or(FrameError::TooLarge(body.len()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// The length announced by a frame prefix, checked against [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}
