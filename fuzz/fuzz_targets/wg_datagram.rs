//! Arbitrary datagrams (a sequence of them, with time steps) into a WireGuard device:
//! the wire-message parser and every handler behind it. Must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mesh_core::time::Instant;
use std::net::SocketAddr;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut wg = common::device();
    let mut now = Instant::from_micros(1_000_000);
    let from = SocketAddr::from(common::PEER_ADDR);
    // Input: [len_hi, len_lo, step_ms, bytes...]*
    let mut rest = data;
    while rest.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 3);
        now += std::time::Duration::from_millis(u64::from(rest[2]) * 40);
        let datagram = BytesMut::from(&rest[3..3 + len]);
        rest = &rest[3 + len..];
        let _ = wg.handle_datagram(now, from, datagram);
        wg.handle_timeout(now);
        while wg.poll_transmit().is_some() {}
        while wg.poll_received().is_some() {}
        while wg.poll_event().is_some() {}
    }
});
