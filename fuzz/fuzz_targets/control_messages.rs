//! Arbitrary bytes as control messages, both directions: decoded as a node's message and
//! handed to a server (registered and unregistered connections), and decoded as a
//! server's message. Must never panic; whatever decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::control::messages::{decode, encode, NodeMessage, ServerMessage};
use mesh_core::control::server::{ConnId, ControlServer, ServerConfig, State};
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::PublicKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode::<ServerMessage>(data) {
        assert_eq!(decode::<ServerMessage>(&encode(&message)).ok(), Some(message));
    }
    let Ok(message) = decode::<NodeMessage>(data) else { return };
    assert_eq!(decode::<NodeMessage>(&encode(&message)).ok(), Some(message.clone()));
    let unix = UnixTime(std::time::Duration::from_secs(1_800_000_000));
    let Ok(mut server) = ControlServer::new(ServerConfig::default(), [1; 32], State::default(), unix) else { return };
    let now = Instant::from_micros(1);
    server.handle_connect(now, ConnId(1), PublicKey([1; 32]));
    server.handle_message(now, ConnId(1), message.clone());
    server.handle_message(now, ConnId(1), message);
    server.handle_disconnect(now, ConnId(1));
    while server.poll_output().is_some() {}
});
