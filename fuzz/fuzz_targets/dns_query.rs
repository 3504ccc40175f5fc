//! Arbitrary bytes as a DNS query to MagicDNS. Must never panic; every response it makes
//! must parse as a DNS message with the query's id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::dns::{HostAddrs, MagicDns};

fuzz_target!(|data: &[u8]| {
    let mut dns = MagicDns::new("tail.mesh", vec!["100.64.0.0/10".parse().unwrap_or_else(|e| panic!("{e}"))]);
    dns.set_hosts([("alpha", HostAddrs { v4: Some([100, 64, 0, 1].into()), v6: None })]);
    if let Ok(reply) = dns.answer(data) {
        assert!(reply.len() >= 12);
        assert_eq!(reply[..2], data[..2]);
        assert!(reply[2] & 0x80 != 0, "QR set");
    }
});
