//! The local API's messages: one JSON object per line each way, a request at most
//! [`MAX_REQUEST`] bytes.

use serde::{Deserialize, Serialize};

/// The longest request line accepted (bytes, newline included).
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Connect to the coordination server and register.
    Up {
        /// `host:port`, optionally behind `http://`.
        login_server: String,
        auth_key: String,
        hostname: String,
        /// The server's public key, 64 hex digits (pinned).
        control_key: String,
    },
    /// Leave the control server (the data plane keeps its last netmap).
    Down,
    Status,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Response {
    pub fn ok() -> Self {
        Self { ok: true, ..Self::default() }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self { ok: false, error: Some(message.into()), status: None }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `stopped`, `connecting`, `running`, `rejected`.
    pub state: String,
    pub name: String,
    pub addresses: Vec<String>,
    pub public_key: String,
    pub login_server: Option<String>,
    pub last_error: Option<String>,
    /// Interactive registration: where to log in.
    pub login_url: Option<String>,
    pub peers: Vec<PeerStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub user: String,
    pub addresses: Vec<String>,
    pub public_key: String,
    pub endpoint: Option<String>,
    /// Seconds since the current session's handshake.
    pub last_handshake_secs: Option<u64>,
    pub online: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}
