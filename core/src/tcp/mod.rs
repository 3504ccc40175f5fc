//! The node's userspace TCP: smoltcp over in-memory queues, for the services the node
//! serves itself (SSH on port 22, DNS over TCP) and for connections it opens (the SSH
//! client, simulated applications).
//!
//! smoltcp has no `accept()`: a port is served by a small pool of listening sockets, and a
//! socket that leaves `Listen` becomes a connection and is replaced. Each accepted
//! connection carries the [`PeerId`] whose WireGuard session delivered its SYN (recorded
//! when the SYN passes through [`TcpStack::handle_packet`]), never just an address.
//! Pending (half-open) connections per port are bounded, so a SYN flood cannot exhaust
//! memory: beyond the bound the port's listeners are not replenished and smoltcp answers
//! further SYNs with RST.
//!
//! Two fix-ups sit between smoltcp and the wire: pure ACKs leave with the highest sequence
//! number sent, not the one smoltcp rewinds to on a retransmission timeout, which the peer
//! would discard (`ack_seq`); and duplicate ACKs that SACK data beyond a hole reach smoltcp
//! with the window of the ACK before them, so that a peer whose window grows during a loss
//! (Linux) still triggers fast retransmit instead of a 1 s timeout (`dup_ack`).

mod ack_seq;
mod device;
mod dup_ack;
mod stack;

pub use stack::{ConnId, TcpConfig, TcpConfigError, TcpError, TcpEvent, TcpStack, TcpStats};

#[cfg(test)]
mod tests;
