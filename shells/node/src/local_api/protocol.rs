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
        /// Serve SSH on the mesh addresses (and publish the host key).
        #[serde(default)]
        ssh: bool,
        /// Tags to register with (`tag:x`); the server checks that the key may.
        #[serde(default)]
        advertise_tags: Vec<String>,
        /// Point the system resolver at MagicDNS for the tailnet's domain.
        #[serde(default)]
        accept_dns: bool,
        /// The login server's socket address as the caller resolved it, so the daemon's
        /// loop never waits for a resolver; without it the daemon resolves the name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_addr: Option<String>,
    },
    /// Leave the tailnet: the control connection closes, the tunnels and the resolver
    /// configuration go; the registration is kept (a restart stays down, `up` resumes
    /// without an auth key).
    Down,
    /// `down`, and forget the registration and the prefs: the next `up` needs a key or a
    /// login.
    Logout,
    Status,
    /// Send one ICMP echo through the tunnel to a mesh address; the answer carries its
    /// id for [`Request::PingResult`].
    Ping {
        address: String,
    },
    PingResult {
        id: u64,
    },
    /// The event loop's and the node's counters.
    Metrics,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingReport>,
    /// `meshctl debug metrics`: the loop's counters and the core's, as a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
}

impl Response {
    pub fn ok() -> Self {
        Self { ok: true, ..Self::default() }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self { ok: false, error: Some(message.into()), ..Self::default() }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `stopped`, `connecting`, `running`, `rejected`.
    pub state: String,
    pub name: String,
    /// `<name>.<dns_domain>` once the netmap is known.
    #[serde(default)]
    pub fqdn: String,
    #[serde(default)]
    pub dns_domain: String,
    pub addresses: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub public_key: String,
    /// SSH is served on the mesh addresses.
    #[serde(default)]
    pub ssh: bool,
    /// The system resolver points at MagicDNS.
    #[serde(default)]
    pub dns_configured: bool,
    pub login_server: Option<String>,
    pub last_error: Option<String>,
    /// Interactive registration: where to log in.
    pub login_url: Option<String>,
    pub peers: Vec<PeerStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    #[serde(default)]
    pub fqdn: String,
    pub user: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// OpenSSH public key lines (`ssh-ed25519 AAAA...`) when the peer serves SSH.
    #[serde(default)]
    pub ssh_host_keys: Vec<String>,
    pub addresses: Vec<String>,
    pub public_key: String,
    pub endpoint: Option<String>,
    /// Seconds since the current session's handshake.
    pub last_handshake_secs: Option<u64>,
    pub online: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Where one `ping` stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReport {
    pub id: u64,
    /// The peer the address belongs to.
    pub peer: String,
    pub address: String,
    /// The peer's WireGuard endpoint: the path the echo took (direct UDP).
    pub endpoint: Option<String>,
    /// Microseconds from the request leaving to the reply arriving.
    pub rtt_us: Option<u64>,
    /// No reply came in time.
    pub timed_out: bool,
}
