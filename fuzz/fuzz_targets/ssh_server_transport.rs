//! Raw bytes from a client into the server transport (fixed host key and RNG), split into
//! reads at fuzzer-chosen points. Must never panic; once closed it stays closed.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use mesh_core::rng::Rng;
use mesh_core::ssh::transport::ServerTransport;

fuzz_target!(|data: &[u8]| {
    let mut server = ServerTransport::new(SigningKey::from_bytes(&[42; 32]), Rng::from_seed(1));
    let split = data.first().map_or(0, |&b| usize::from(b));
    let rest = data.get(1..).unwrap_or(&[]);
    let (a, b) = rest.split_at(split.min(rest.len()));
    for chunk in [a, b] {
        server.handle_input(chunk);
        while server.poll_transmit().is_some() {}
        while server.poll_event().is_some() {}
    }
    if server.is_closed() {
        server.handle_input(b"SSH-2.0-again\r\n");
        assert!(server.poll_transmit().is_none(), "nothing is sent after close");
    }
});
