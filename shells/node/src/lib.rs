//! `meshd`: the mesh node daemon.
//!
//! For now this is the session runtime only: what a node does once an SSH channel asks for a
//! shell, a command or a subsystem. The event loop (TUN + UDP) and the `meshd` / `meshctl`
//! binaries come later and drive [`session::Session`] from a mio loop.

pub mod session;
