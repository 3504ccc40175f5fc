// Shared fixture of the control_channel target and its corpus seeds: fixed keys and
// randomness, so a node's record 1 and the server's answers are the same on every run.
#![allow(dead_code)]

use mesh_core::control::{ChannelClient, ChannelConfig, ChannelServer};
use mesh_core::rng::Rng;
use mesh_core::wireguard::PrivateKey;

/// The client's maximum message: smaller than the server's, so the server can send one too
/// large for it.
pub const CLIENT_MAX_MESSAGE: usize = 100_000;

pub fn machine_key() -> PrivateKey {
    PrivateKey::from_bytes([0x33; 32])
}

pub fn server_key() -> PrivateKey {
    PrivateKey::from_bytes([0x44; 32])
}

pub fn client() -> ChannelClient {
    let config = ChannelConfig { max_message_len: CLIENT_MAX_MESSAGE };
    ChannelClient::new(machine_key(), server_key().public_key(), &mut Rng::new([2; 32]), config)
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn server() -> ChannelServer {
    ChannelServer::new(server_key(), &mut Rng::new([3; 32]), ChannelConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Everything `next` yields, concatenated (for `poll_transmit`).
pub fn drain(mut next: impl FnMut() -> Option<bytes::Bytes>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = next() {
        out.extend_from_slice(&bytes);
    }
    out
}

/// The fixture's client and server after a real handshake, and the server's message 2.
pub fn established() -> (ChannelClient, ChannelServer, Vec<u8>) {
    let (mut client, mut server) = (client(), server());
    let m1 = drain(|| client.poll_transmit());
    server.handle_input(&m1).unwrap_or_else(|e| panic!("{e}"));
    let m2 = drain(|| server.poll_transmit());
    client.handle_input(&m2).unwrap_or_else(|e| panic!("{e}"));
    assert!(client.is_established() && server.is_established());
    (client, server, m2)
}

/// The content of the `i`-th fuzzed message of `len` bytes.
pub fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j as u8) ^ (i as u8)).collect()
}

/// Operations of the client-side mode, one byte each followed by its arguments.
pub const OP_SERVER_SENDS: u8 = 0;
pub const OP_RAW_BYTES: u8 = 1;
pub const OP_SERVER_SENDS_FLIPPED: u8 = 2;
pub const OP_CLIENT_SENDS: u8 = 3;

/// Modes (the input's first byte).
pub const MODE_SERVER: u8 = 0;
pub const MODE_CLIENT: u8 = 1;
pub const MODE_UPGRADE: u8 = 2;
