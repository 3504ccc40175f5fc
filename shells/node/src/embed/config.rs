//! What an embedded node is started with.

use std::path::PathBuf;
use std::time::Duration;

/// How to start a [`super::Mesh`].
#[derive(Clone, Debug)]
pub struct EmbedConfig {
    /// Keys (machine, node) and the saved login live here (created 0700, locked while the
    /// node runs). Reused on the next start: same identity, no auth key needed.
    pub state_dir: PathBuf,
    /// The coordination server (`host:port`, optionally behind `http://`).
    pub login_server: String,
    /// A pre-auth key; empty: interactive login (the node waits for it).
    pub auth_key: String,
    /// The name the node asks for.
    pub hostname: String,
    /// The server's public key (64 hex digits). `None`: fetched from `URL/key` over plain
    /// HTTP, which trusts the network path (tests and trusted networks only).
    pub control_key: Option<String>,
    /// WireGuard's UDP port (0: any free one).
    pub listen_port: u16,
    /// How long [`super::Mesh::connect`] waits for the handshake.
    pub connect_timeout: Duration,
}

impl EmbedConfig {
    pub fn new(
        state_dir: impl Into<PathBuf>,
        login_server: impl Into<String>,
        auth_key: impl Into<String>,
        hostname: impl Into<String>,
    ) -> Self {
        Self {
            state_dir: state_dir.into(),
            login_server: login_server.into(),
            auth_key: auth_key.into(),
            hostname: hostname.into(),
            control_key: None,
            listen_port: 0,
            connect_timeout: Duration::from_secs(10),
        }
    }
}
