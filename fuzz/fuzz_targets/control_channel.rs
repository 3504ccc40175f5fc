//! The control channel from both ends, and the upgrade reader in front of it. The input's
//! first byte picks the mode, the second the read size (1..=256 bytes per `handle_input`):
//!
//! - server: arbitrary bytes to a fresh `ChannelServer` (a seed holds a real record 1 and
//!   records sealed with the keys that handshake gives, so mutations reach the transport);
//! - client: a `ChannelClient` after a real handshake with a real server, driven by
//!   operations: the server sends a message, raw bytes are injected, the server's records
//!   arrive with one bit flipped, the client sends a message;
//! - upgrade: arbitrary bytes to an `UpgradeReader`, whose leftover goes to a fresh client
//!   (a seed holds the 101 and the fixture server's real answer to that client).
//!
//! Must never panic; a failed channel stays failed with the same error and sends nothing;
//! no message comes out that its peer did not send, in order; nothing is buffered past the
//! bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::control::channel::ChannelError;
use mesh_core::control::upgrade::MAX_HEADER_LEN;
use mesh_core::control::{ChannelClient, UpgradeReader, UpgradeStatus};

#[path = "control_fixture.rs"]
mod fixture;

use fixture::*;

fuzz_target!(|data: &[u8]| {
    let [mode, piece, rest @ ..] = data else { return };
    let piece = usize::from(*piece) + 1;
    match *mode % 3 {
        MODE_SERVER => server_side(rest, piece),
        MODE_CLIENT => client_side(rest, piece),
        _ => upgrade(rest, piece),
    }
});

/// Feed `bytes` in reads of `piece` bytes; the first error, which must then stick.
fn feed(input: &mut dyn FnMut(&[u8]) -> Result<(), ChannelError>, bytes: &[u8], piece: usize) -> Option<ChannelError> {
    let mut failed: Option<ChannelError> = None;
    for chunk in bytes.chunks(piece) {
        let result = input(chunk);
        match (&failed, result) {
            (None, Ok(())) => {}
            (None, Err(e)) => {
                assert!(e.is_fatal(), "{e}");
                failed = Some(e);
            }
            (Some(first), result) => assert_eq!(result.as_ref(), Err(first), "the first error stays"),
        }
    }
    failed
}

fn server_side(data: &[u8], piece: usize) {
    let mut server = server();
    let failed = feed(&mut |b| server.handle_input(b), data, piece);
    let out = drain(|| server.poll_transmit());
    // The server only ever answers message 1, with message 2 (2 + 49 bytes).
    assert!(out.is_empty() || out.len() == 51, "{} bytes out", out.len());
    if server.is_established() {
        assert_eq!(out.len(), 51);
        assert!(server.remote_static().is_some() && failed.is_none());
        assert!(server.send_message(b"welcome").is_ok());
    } else {
        assert!(server.send_message(b"welcome").is_err());
        assert!(server.poll_transmit().is_none());
    }
    if let Some(e) = &failed {
        assert_eq!(server.error(), Some(e));
        assert_eq!(server.handle_input(b"\x00\x01x").as_ref(), Err(e));
    }
    while let Some(m) = server.poll_message() {
        assert!(m.len() <= mesh_core::control::channel::DEFAULT_MAX_MESSAGE_LEN);
    }
}

/// Take `n` bytes off the front of `data`.
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (now, later) = data.split_at(n.min(data.len()));
    *data = later;
    now
}

/// Most payload bytes one client-mode input may have sealed, so inputs stay fast.
const SEAL_BUDGET: usize = 1 << 20;

/// A big-endian `u16` argument (missing bytes are zeros).
fn arg16(data: &mut &[u8]) -> usize {
    let arg = take(data, 2);
    usize::from(u16::from_be_bytes([arg.first().copied().unwrap_or(0), arg.get(1).copied().unwrap_or(0)]))
}

fn client_side(mut data: &[u8], piece: usize) {
    let (mut client, mut server, _) = established();
    let mut sent = Vec::new();
    let mut delivered = 0;
    let mut failed: Option<ChannelError> = None;
    let mut sealed = 0;
    while let Some((&op, rest)) = data.split_first() {
        data = rest;
        if sealed > SEAL_BUDGET {
            break;
        }
        let mut to_client = Vec::new();
        match op % 4 {
            OP_SERVER_SENDS | OP_SERVER_SENDS_FLIPPED => {
                // Up to 128 KiB: past the client's maximum.
                let len = arg16(&mut data) * 2;
                sealed += len;
                let message = payload(sent.len(), len);
                assert!(server.send_message(&message).is_ok());
                sent.push(message);
                to_client = drain(|| server.poll_transmit());
                if op % 4 == OP_SERVER_SENDS_FLIPPED {
                    let at = arg16(&mut data) % to_client.len();
                    let bit = 1u8 << (take(&mut data, 1).first().copied().unwrap_or(0) % 8);
                    to_client[at] ^= bit;
                }
            }
            OP_RAW_BYTES => {
                let n = take(&mut data, 1).first().copied().map_or(0, usize::from);
                to_client = take(&mut data, n).to_vec();
            }
            _ => {
                let len = arg16(&mut data) * 2;
                sealed += len;
                let message = payload(1000, len);
                match client.send_message(&message) {
                    Ok(()) => {
                        let up = drain(|| client.poll_transmit());
                        server.handle_input(&up).unwrap_or_else(|e| panic!("the server refused a real message: {e}"));
                        assert_eq!(server.poll_message().as_deref(), Some(&message[..]));
                        assert!(server.poll_message().is_none());
                    }
                    Err(e) if len > CLIENT_MAX_MESSAGE => assert!(!e.is_fatal() || failed.is_some()),
                    Err(e) => assert_eq!(Some(&e), failed.as_ref(), "only a failed client refuses"),
                }
            }
        }
        let now_failed = feed(&mut |b| client.handle_input(b), &to_client, piece);
        match (&failed, now_failed) {
            (None, e) => failed = e,
            (Some(first), Some(e)) => assert_eq!(&e, first),
            (Some(_), None) => assert!(to_client.is_empty(), "a failed client took input"),
        }
        while let Some(m) = client.poll_message() {
            assert!(delivered < sent.len(), "a message nobody sent");
            assert_eq!(&m[..], &sent[delivered][..], "message {delivered} changed");
            assert!(m.len() <= CLIENT_MAX_MESSAGE);
            delivered += 1;
        }
        if failed.is_some() {
            assert!(!client.is_established() && client.poll_transmit().is_none());
        }
    }
}

fn upgrade(data: &[u8], piece: usize) {
    let mut reader = UpgradeReader::new();
    let mut client: Option<ChannelClient> = None;
    let mut rest = Vec::new();
    let mut fed = 0;
    let mut failed = None;
    for chunk in data.chunks(piece) {
        fed += chunk.len();
        match (reader.handle_input(chunk), &failed) {
            (Ok(UpgradeStatus::Pending), None) => {
                assert!(client.is_none() && fed <= MAX_HEADER_LEN, "pending after {fed} bytes")
            }
            (Ok(UpgradeStatus::Switched { rest: r }), None) => {
                rest.extend_from_slice(&r);
                let client = client.get_or_insert_with(|| {
                    let mut c = fixture::client();
                    let _ = drain(|| c.poll_transmit());
                    c
                });
                let _ = client.handle_input(&r);
            }
            (Err(e), None) => failed = Some(e),
            (result, Some(first)) => assert_eq!(result.as_ref(), Err(first), "the first error stays"),
        }
    }
    if client.is_some() {
        let header = fed - rest.len();
        assert!(header <= MAX_HEADER_LEN);
        assert_eq!(&data[header..], &rest[..]);
    }
    if let Some(mut client) = client {
        while client.poll_message().is_some() {}
    }
}
