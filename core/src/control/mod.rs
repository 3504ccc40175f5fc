//! The node<->coordination-server control protocol: its transport, the HTTP Upgrade
//! ([`upgrade`]) and the secure channel on top of it ([`channel`]); the messages that
//! travel inside ([`messages`]); and the server's state machine ([`server`]: users,
//! nodes, pre-auth keys, the policy and every node's netmap, with durable changes as
//! outputs the shell commits before the replies that depend on them); and the node's
//! client machine ([`client`]: connect, register, stream and apply the map, reconnect).
//!
//! # The wire, from the TCP connect to the first application message
//!
//! One TCP port serves the server's HTTP pages and the control protocol.
//!
//! 1. **Upgrade.** The node sends [`upgrade::upgrade_request`]:
//!
//!    ```text
//!    POST /control HTTP/1.1
//!    Host: <host>
//!    Upgrade: meshcontrol-v1
//!    Connection: upgrade
//!    ```
//!
//!    and the server answers `HTTP/1.1 101 Switching Protocols` with `Upgrade:
//!    meshcontrol-v1` (and `Connection: upgrade`). From the first byte after the response's
//!    header block on, both directions carry the channel's records. Any other status ends the
//!    attempt: [`upgrade::UpgradeReader`] reports it with its code and reason. The response
//!    header is at most [`upgrade::MAX_HEADER_LEN`] (8 KiB). The node may write record 1
//!    right behind the request without waiting for the 101 (it saves a round trip): the
//!    server must hand bytes it read past the request header to the channel, as hyper's
//!    upgrade does. The server side's check of the request is [`upgrade::is_upgrade_request`].
//!
//! 2. **Records.** The byte stream after the upgrade is a sequence of records: a 2-byte
//!    big-endian length, then that many bytes (1..=65535) of one Noise message. A length of 0
//!    is an error.
//!
//! 3. **Handshake.** `Noise_IK_25519_ChaChaPoly_BLAKE2s`, prologue `meshcontrol v1`. The
//!    node is the initiator and its static key is its *machine key*; the server is the
//!    responder with the server key, which the node knows beforehand and pins (there is no
//!    trust on first use: a node without the right key cannot even produce a message 1 the
//!    server can read, and a message 2 from anyone else does not verify). Record 1
//!    (node to server) is IK message 1; its payload is one byte, the protocol version the node
//!    speaks ([`channel::PROTOCOL_VERSION`], 1). Record 2 (server to node) is message 2; its
//!    payload is the server's version byte. Each side refuses any other version, naming it
//!    ([`channel::ChannelError::UnsupportedVersion`]); a later version will define how to
//!    negotiate down. After message 1 the server knows the node's machine key
//!    ([`channel::ChannelServer::remote_static`]) and answers at once: whether it knows that
//!    key is the server state machine's decision, taken above the channel. A replayed
//!    message 1 gets a message 2, but without the node's ephemeral key nobody can use it.
//!
//! 4. **Transport.** Every later record is one Noise transport message (ChaCha20-Poly1305,
//!    nonce = 4 zero bytes || little-endian counter from 0, empty associated data, 16-byte
//!    tag), at most 65519 bytes of plaintext. The plaintext of the records in one direction
//!    is a sequence of application messages, each a 4-byte big-endian length and that many
//!    bytes of payload (0 up to a configured maximum: 8 MiB by default, never more than 64
//!    MiB, [`channel::ChannelConfig`]). A message takes as many records as it needs; a
//!    record carries at least one byte and never bytes of two messages (so a sender starts
//!    every message in a fresh record). The receiver refuses a length above its maximum as
//!    soon as it reads the 4 bytes, before it buffers any of the payload.
//!
//! There is no record type byte: after the handshake every record is decrypted as a
//! transport message, so a handshake record there (or any other forgery, truncation into
//! a record or replay) fails to decrypt. Every error in the received stream is fatal: the
//! channel stays failed and every later call returns the same error; bytes from the
//! network never cause a panic.
//!
//! # Sans-IO
//!
//! Both layers are pure byte transformers: bytes read from the connection go in through
//! `handle_input`, whatever their chunking, and bytes to write come out of
//! `poll_transmit`; received messages come out of `poll_message`. Neither has timers, so
//! unlike the core's state machines their calls take no `now` (like
//! [`crate::dns::tcp::TcpFramer`]): keepalives, timeouts and the messages themselves belong
//! to the control state machines above. The handshake's ephemeral key comes from the
//! core's [`crate::rng::Rng`], so a simulated run replays it exactly.

pub mod channel;
pub mod client;
pub mod messages;
pub mod server;
pub mod upgrade;

#[cfg(test)]
mod channel_tests;
#[cfg(test)]
mod tests;

pub use channel::{ChannelClient, ChannelConfig, ChannelError, ChannelServer};
pub use upgrade::{upgrade_request, UpgradeError, UpgradeReader, UpgradeStatus};
