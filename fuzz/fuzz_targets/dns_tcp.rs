//! Arbitrary bytes as a DNS-over-TCP stream to MagicDNS, read in pieces whose sizes the
//! input also chooses: the framer must never panic, hold more than its bound, or hand out
//! a query longer than its length prefix allows; every answer goes out framed, whatever the
//! connection takes per write.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::dns::tcp::{TcpFramer, MAX_MESSAGE_LEN};
use mesh_core::dns::{HostAddrs, MagicDns};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else { return };
    let piece = usize::from(piece % 64) + 1;
    let mut dns = MagicDns::new("tail.mesh", vec!["100.64.0.0/10".parse().unwrap_or_else(|e| panic!("{e}"))]);
    dns.set_hosts([("alpha", HostAddrs { v4: Some([100, 64, 0, 1].into()), v6: None })]);
    let mut framer = TcpFramer::new();
    let mut at = 0;
    let mut sent = Vec::new();
    loop {
        // A connection that takes at most `piece` bytes per write.
        let n = framer.pending_output().len().min(piece);
        sent.extend_from_slice(&framer.pending_output()[..n]);
        framer.output_written(n);
        if let Some(query) = framer.poll_query() {
            assert!(query.len() <= MAX_MESSAGE_LEN);
            if let Ok(answer) = dns.answer(&query) {
                assert!(framer.queue_answer(&answer).is_ok());
            }
            continue;
        }
        if !framer.pending_output().is_empty() {
            continue;
        }
        if !framer.wants_input() || at >= stream.len() {
            break;
        }
        let end = (at + piece).min(stream.len());
        assert!(framer.handle_input(&stream[at..end]).is_ok(), "within the bound when read as asked");
        at = end;
    }
    // What went out is a sequence of whole framed messages.
    let mut rest = &sent[..];
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        assert!(tail.len() >= len);
        rest = &tail[len..];
    }
    assert!(rest.is_empty());
});
