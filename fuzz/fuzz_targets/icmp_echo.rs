//! Arbitrary bytes as a packet bound for the TUN while `meshctl ping` waits: the echo-reply
//! recogniser must never panic, and the cheap pre-check never rejects a packet the full
//! parse accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::ip::echo::{echo_reply, may_be_echo_reply};

fuzz_target!(|data: &[u8]| {
    let maybe = may_be_echo_reply(data);
    if let Some(reply) = echo_reply(data) {
        // IPv4 options shift the ICMP header; the pre-check reads the header length.
        assert!(maybe, "pre-check rejected a reply from {}", reply.from);
    }
});
