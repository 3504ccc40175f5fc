//! SSH in the simulator: our client against our server, over the composed data plane.
//!
//! A node that serves SSH in its core ([`crate::NodeConfig::with_ssh`]: the core runs a
//! [`mesh_core::ssh::server::ServerSession`] with the node's host key for every connection
//! it accepts on port 22) can run the *SSH server app* ([`crate::World::serve_ssh`]).
//! Authentication is decided as `meshd` decides it, by identity: the `PeerId` the core
//! bound the session to (the WireGuard peer that carried the SYN) is resolved to a node
//! through the netmap, and the login is accepted only if that node is in the app's allow
//! set; without the app every login is denied. There are no processes in the simulator, so session channels run simulated
//! commands ([`programs`]): `exit N`, `cat`, `sink`, `source N SEED`.
//!
//! The *SSH client app* ([`crate::World::open_ssh`]) opens a TCP connection through its
//! node's core to the server's mesh address, runs a
//! [`mesh_core::ssh::client::ClientSession`] with the server's host key pinned (host keys
//! travel with the netmap, so there is never an unknown-host prompt), and runs a script of
//! [`SshCommand`]s one channel after the other, verifying what comes back without
//! buffering it ([`SshCommandResult`]). When the script is done it disconnects.
//!
//! On the server the core moves the bytes; on the client they go through a pipe
//! (`pipe.rs`) that respects back-pressure both ways, as the core does: session output goes to `tcp_send` only as far as the send
//! buffer takes it (the rest waits for `TcpEvent::Writable`), applications stop writing
//! channel data while the session's output queue is full, and received channel data is
//! `consume`d only when the application has really taken it, so SSH flow control bounds
//! what a slow side holds. The sessions' deadlines (login grace, time-based rekey) join
//! their node's timer: the world wakes the node at the earliest of the core's and the
//! sessions' deadlines and runs both.
//!
//! Everything random (host keys, the sessions' RNGs) is forked from the world's seeded RNG
//! in a fixed order, and every container is ordered, so an SSH run is as deterministic as
//! the rest of the world: the ciphertext of every SSH packet reaches the trace hash through
//! the WireGuard datagrams that carry it.

mod client;
mod connections;
mod driving;
mod pipe;
pub mod programs;
mod records;
mod server;

pub use records::{
    SshClientConfig, SshClientId, SshClientRecord, SshCommand, SshCommandResult, SshExpect, SshServerRecord,
    CAPTURE_LEN,
};

pub(crate) use connections::SshNodeApps;
pub(crate) use driving::{ssh_deadline, NodeCtx, SshApps};
