//! The node <-> coordination server protocol: its messages and the server's state machine.
//!
//! - [`messages`]: what travels, both directions, versioned and bounded.
//! - [`server`]: users, nodes, pre-auth keys, the policy and every node's netmap; durable
//!   changes are outputs the shell commits before the replies that depend on them.

pub mod messages;
pub mod server;
#[cfg(test)]
mod tests;
