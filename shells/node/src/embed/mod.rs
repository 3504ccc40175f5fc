//! The embedded node (as Tailscale's tsnet is for Go): a program joins the tailnet from
//! inside itself, with no TUN and no root, and listens and connects over the mesh through
//! the core's userspace TCP stack.
//!
//! [`Mesh::start`] opens a state directory (keys persist, one user at a time), builds a
//! [`Runtime`](crate::runtime::Runtime) without TUN, joins through the daemon machinery
//! (`up`, netmaps, node rebuilds; no local API socket) and runs the loop on its own
//! thread. Application threads talk to the loop through a command channel and the loop's
//! waker ([`command`]); on the loop's side the [`driver`] routes the node's TCP events to
//! per-connection state ([`stream`], [`listener`]) with bounded buffers in both
//! directions, so a writer blocks when its buffer is full and nothing grows without bound.
//!
//! ```no_run
//! use std::io::{Read as _, Write as _};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = meshd::embed::Mesh::start(meshd::embed::EmbedConfig::new(
//!     "/var/lib/myapp/mesh", "http://control.example:8080", "the-auth-key", "myapp"))?;
//! mesh.wait_running(std::time::Duration::from_secs(30))?;
//! let listener = mesh.listen(8000)?;
//! let (mut stream, from) = listener.accept()?;
//! let mut line = [0u8; 64];
//! let n = stream.read(&mut line)?;
//! stream.write_all(&line[..n])?;
//! # Ok(()) }
//! ```

mod command;
mod config;
mod driver;
mod error;
mod listener;
mod mesh;
mod status;
mod stream;

pub use config::EmbedConfig;
pub use error::EmbedError;
pub use listener::Listener;
pub use mesh::Mesh;
pub use status::PeerIdentity;
pub use stream::MeshStream;

/// Bytes buffered per stream and direction between the application and the loop: a
/// writer blocks once this much waits to be taken by the TCP stack, and the loop stops
/// reading from the stack once this much waits for the application (the TCP window then
/// closes: back-pressure reaches the sender).
pub const STREAM_BUFFER: usize = 256 * 1024;

/// Accepted connections waiting per listener for [`Listener::accept`]; beyond it new ones
/// are reset (a kernel's backlog).
pub const ACCEPT_BACKLOG: usize = 128;
