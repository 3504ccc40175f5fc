//! The responder path past mac1: the fuzzer controls the body of an initiation (sender
//! index, ephemeral, encrypted static and timestamp), and the target stamps a valid mac1 so
//! that every input reaches the Noise handshake. Must never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mesh_core::time::Instant;
use mesh_core::wireguard::cookie::CookieStamper;
use mesh_core::wireguard::messages::{INITIATION_LEN, MSG_INITIATION};
use std::net::SocketAddr;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut wg = common::device();
    let now = Instant::from_micros(1_000_000);
    let mut stamper = CookieStamper::new(&common::device_key().public_key());
    let mut msg = [0u8; INITIATION_LEN];
    msg[0] = MSG_INITIATION;
    let n = data.len().min(INITIATION_LEN - 4 - 32);
    msg[4..4 + n].copy_from_slice(&data[..n]);
    stamper.stamp(now, &mut msg);
    let _ = wg.handle_datagram(now, SocketAddr::from(common::PEER_ADDR), BytesMut::from(&msg[..]));
    while wg.poll_transmit().is_some() {}
});
