//! `meshd`: the mesh node daemon.
//!
//! - [`runtime`]: the event loop (mio, one thread) that drives the core's `Node` on a real
//!   TUN device and real UDP sockets.
//! - [`embed`]: the node inside an application (as tsnet), no TUN and no root: listen
//!   and connect over the mesh through the core's TCP stack.
//! - [`control_key`]: the coordination server's key over plain HTTP (tests, trusted
//!   networks).
//! - [`wg_config`]: `meshd --wg-config FILE`, a wg-quick file turned into a runtime, so
//!   plain WireGuard peers can talk to meshd without a coordination server.
//! - [`state_dir`]: `meshd --state-dir DIR`: the lock and the persisted keys.
//! - [`prefs`]: what `up` asked for, so a restarted daemon reconnects by itself.
//! - [`local_api`]: the Unix-socket API `meshctl` talks to.
//! - [`session`]: what a node does once an SSH channel asks for a shell, a command or a
//!   subsystem.

pub mod control_key;
pub mod embed;
pub mod local_api;
pub mod prefs;
pub mod runtime;
pub mod session;
pub mod ssh_service;
pub mod state_dir;
pub mod system_dns;
pub mod wg_config;
