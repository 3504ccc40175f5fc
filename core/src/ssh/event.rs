//! What an SSH session (either role) tells its application, including what its connection
//! protocol reports ([`ConnectionEvent`]).

use bytes::Bytes;

use super::channel::{ChannelId, ChannelKind, ChannelRequest, GlobalRequest};
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

/// What the connection protocol tells the application to act on (inside
/// [`SessionEvent::Connection`]). It lives here, beside the session events that carry it,
/// so the connection protocol can queue session events without the two modules importing
/// each other; [`super::connection`] re-exports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// The peer wants to open a channel:
    /// [`Connection::accept_channel`](super::connection::Connection::accept_channel) or
    /// [`Connection::refuse_channel`](super::connection::Connection::refuse_channel).
    OpenRequest {
        channel: ChannelId,
        kind: ChannelKind,
    },
    /// A channel we opened was confirmed.
    Opened {
        channel: ChannelId,
    },
    /// A channel we opened was refused (it no longer exists).
    OpenFailed {
        channel: ChannelId,
        reason: u32,
        description: String,
    },
    /// A channel request; when `want_reply`, answer with
    /// [`Connection::reply`](super::connection::Connection::reply) (in order).
    Request {
        channel: ChannelId,
        request: ChannelRequest,
        want_reply: bool,
    },
    /// The peer's answer to one of our requests that wanted a reply.
    RequestReply {
        channel: ChannelId,
        ok: bool,
    },
    Data {
        channel: ChannelId,
        data: Bytes,
    },
    ExtendedData {
        channel: ChannelId,
        code: u32,
        data: Bytes,
    },
    /// The peer's window grew after a write could not take everything.
    Writable {
        channel: ChannelId,
    },
    Eof {
        channel: ChannelId,
    },
    /// Both sides closed the channel; its id may be reused.
    Closed {
        channel: ChannelId,
    },
    /// A global request; when `want_reply`, answer with
    /// [`Connection::global_reply`](super::connection::Connection::global_reply).
    GlobalRequest {
        request: GlobalRequest,
        want_reply: bool,
    },
    /// The peer's answer to our global request (`port` when it chose one).
    GlobalReply {
        ok: bool,
        port: Option<u32>,
    },
}
