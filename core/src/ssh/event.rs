//! What an SSH session (either role) tells its application.

use super::connection::ConnectionEvent;
use super::kexinit::Negotiated;
use super::transport::TransportError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The first key exchange finished; `host_key` is the server's ssh-ed25519 key (a
    /// client checks it against what it knows if it did not pin one in its config).
    Keyed {
        host_key: [u8; 32],
        negotiated: Negotiated,
    },
    /// Server: the first USERAUTH_REQUEST arrived (whatever its method). Decide with
    /// `accept_auth`, `deny_auth`, or hold with `auth_banner` and decide later. Identity
    /// comes from WireGuard, never from the method.
    AuthRequest {
        user: String,
    },
    /// Client: a USERAUTH_BANNER to show the user (e.g. a URL to visit while held).
    Banner(String),
    /// Authentication succeeded: the connection protocol runs.
    Authenticated {
        user: String,
    },
    /// Client: the server refused every method we have.
    AuthFailed,
    /// A key exchange after the first finished.
    Rekeyed,
    Connection(ConnectionEvent),
    /// The session is over.
    Closed(TransportError),
}
