//! The connection state machine after authentication: a sequence of connection-protocol
//! messages from the peer (each prefixed by a 2-byte length) interleaved with application
//! actions (accept, write, consume, reply, close) chosen by the fuzzer. Must never panic;
//! an error ends the run as a disconnect would.
#![no_main]

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use mesh_core::rng::Rng;
use mesh_core::ssh::connection::{Connection, ConnectionConfig, ConnectionEvent, Side};
use mesh_core::ssh::transport::{Role, Transport, TransportConfig};
use mesh_core::time::Instant;

fuzz_target!(|data: &[u8]| {
    let role = Role::Server { host_key: SigningKey::from_bytes(&[42; 32]) };
    let mut transport = Transport::new(role, TransportConfig::default(), Rng::new([1; 32]), Instant::ZERO);
    let config = ConnectionConfig { window: 4096, max_packet: 1024, max_channels: 4 };
    let mut connection = Connection::new(Side::Server, config);
    let mut rest = data;
    while rest.len() >= 3 {
        let action = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])) % 2048;
        rest = &rest[3..];
        let body = &rest[..len.min(rest.len())];
        rest = &rest[body.len()..];
        if action & 0x80 == 0 {
            if body.is_empty() {
                continue;
            }
            if connection.handle_message(&mut transport.sender(Instant::ZERO), &Bytes::copy_from_slice(body)).is_err() {
                return;
            }
        } else {
            let ids = connection.channel_ids();
            let Some(&id) = ids.get(usize::from(action) % ids.len().max(1)) else { continue };
            match action % 6 {
                0 => connection.accept_channel(&mut transport.sender(Instant::ZERO), id),
                1 => {
                    connection.write(&mut transport.sender(Instant::ZERO), id, body);
                }
                2 => connection.consume(&mut transport.sender(Instant::ZERO), id, body.len() * 7),
                3 => connection.reply(&mut transport.sender(Instant::ZERO), id, action & 1 == 0),
                4 => connection.eof(&mut transport.sender(Instant::ZERO), id),
                _ => connection.close(&mut transport.sender(Instant::ZERO), id),
            }
        }
        while let Some(event) = connection.poll_event() {
            if let ConnectionEvent::Data { data, .. } = event {
                assert!(data.len() <= 1024);
            }
        }
        while transport.poll_transmit().is_some() {}
    }
});
