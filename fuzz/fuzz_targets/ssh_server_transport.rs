//! Raw bytes from a client into the server session (fixed host key and RNG), split into
//! reads at fuzzer-chosen points. Must never panic, never authenticate without the
//! application's decision (this target never accepts), and stays closed once closed.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use mesh_core::rng::Rng;
use mesh_core::ssh::event::SessionEvent;
use mesh_core::ssh::server::{ServerConfig, ServerSession};
use mesh_core::time::Instant;

fuzz_target!(|data: &[u8]| {
    let mut server = ServerSession::new(
        SigningKey::from_bytes(&[42; 32]),
        ServerConfig::default(),
        Rng::new([1; 32]),
        Instant::ZERO,
    );
    let split = data.first().map_or(0, |&b| usize::from(b));
    let rest = data.get(1..).unwrap_or(&[]);
    let (a, b) = rest.split_at(split.min(rest.len()));
    for chunk in [a, b] {
        server.handle_input(Instant::ZERO, chunk);
        while server.poll_transmit().is_some() {}
        while let Some(event) = server.poll_event() {
            assert!(!matches!(event, SessionEvent::Authenticated { .. } | SessionEvent::Connection(_)));
        }
    }
    assert!(!server.is_authenticated());
    if server.is_closed() {
        server.handle_input(Instant::ZERO, b"SSH-2.0-again\r\n");
        assert!(server.poll_transmit().is_none(), "nothing is sent after close");
    }
});
