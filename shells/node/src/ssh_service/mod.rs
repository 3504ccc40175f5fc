//! What an SSH connection's channels do once the login is decided: session channels run
//! the session runtime's processes ([`crate::session`]), `direct-tcpip` and
//! `tcpip-forward` carry TCP connections, each as far as the policy allows.
//!
//! The [`ServerSession`](mesh_core::ssh::server::ServerSession) itself is owned elsewhere
//! (by the core `Node` in meshd, by a loopback socket in the test harness), so every call
//! takes it as an argument. The caller's mio loop watches the descriptors [`ChannelHost`]
//! registers, under tokens the caller hands out ([`Tokens`]), and reports their readiness
//! with [`ChannelHost::mark_ready`].
//!
//! Flow control is end to end: a child's output is read only while the channel window and
//! the caller's output budget have room, and client data is given back to the window only
//! once the child (or the forwarded socket) has taken it.

mod channels;
mod io;

pub use channels::{ChannelHost, ChannelPolicy};
pub use io::{ChannelTarget, Tokens};
