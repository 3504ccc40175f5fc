//! mesh-core: the pure state machines of the mesh.
//!
//! Nothing in this crate reads a clock, touches the OS's randomness or does IO. Every input
//! is a method call that carries `now` ([`time::Instant`]); every output is pulled with a
//! `poll_*` method. The same code runs under the mio shell (real time, real sockets) and
//! under the deterministic simulator (`mesh-sim`). See DESIGN.md, "The sans-IO contract".

pub mod control;
mod ct;
pub mod dns;
pub mod ip;
#[cfg(test)]
mod key_hygiene;
pub mod node;
pub mod rng;
pub mod ssh;
pub mod tcp;
pub mod time;
pub mod wireguard;
