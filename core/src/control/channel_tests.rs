//! The control channel and the upgrade reader, end to end in memory.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::channel::{
    ChannelClient, ChannelConfig, ChannelError, ChannelServer, MAX_MESSAGE_LEN_CAP, MAX_RECORD_LEN,
    MAX_RECORD_PLAINTEXT, MESSAGE_HEADER_LEN, NOISE_PATTERN, PROLOGUE, PROTOCOL_VERSION, TAG_LEN,
};
use super::upgrade::{
    is_upgrade_request, upgrade_request, upgrade_response, UpgradeError, UpgradeReader, UpgradeStatus, MAX_HEADER_LEN,
};
use crate::rng::{test_rng, Rng};
use crate::wireguard::keys::{PrivateKey, PublicKey};
use crate::wireguard::noise;

fn machine_key() -> PrivateKey {
    PrivateKey::from_bytes([0x31; 32])
}

fn server_key() -> PrivateKey {
    PrivateKey::from_bytes([0x42; 32])
}

fn client_with(seed: u64, server: PublicKey, config: ChannelConfig) -> ChannelClient {
    ChannelClient::new(machine_key(), server, &mut test_rng(seed), config).unwrap_or_else(|e| panic!("{e}"))
}

fn server_with(seed: u64, config: ChannelConfig) -> ChannelServer {
    ChannelServer::new(server_key(), &mut test_rng(seed), config).unwrap_or_else(|e| panic!("{e}"))
}

fn pair(seed: u64) -> (ChannelClient, ChannelServer) {
    (
        client_with(seed, server_key().public_key(), ChannelConfig::default()),
        server_with(seed + 1000, ChannelConfig::default()),
    )
}

/// Both roles, for helpers that move bytes either way.
trait Side {
    fn input(&mut self, bytes: &[u8]) -> Result<(), ChannelError>;
    fn transmit(&mut self) -> Option<Bytes>;
    fn message(&mut self) -> Option<Bytes>;
}

macro_rules! side {
    ($t:ty) => {
        impl Side for $t {
            fn input(&mut self, bytes: &[u8]) -> Result<(), ChannelError> {
                self.handle_input(bytes)
            }
            fn transmit(&mut self) -> Option<Bytes> {
                self.poll_transmit()
            }
            fn message(&mut self) -> Option<Bytes> {
                self.poll_message()
            }
        }
    };
}
side!(ChannelClient);
side!(ChannelServer);

/// Everything `from` has to send.
fn drain(from: &mut impl Side) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = from.transmit() {
        out.extend_from_slice(&bytes);
    }
    out
}

fn messages(side: &mut impl Side) -> Vec<Bytes> {
    std::iter::from_fn(|| side.message()).collect()
}

/// Feed `bytes` in pieces of the sizes in `chunks` (cycled).
fn feed(to: &mut impl Side, bytes: &[u8], chunks: &[usize]) -> Result<(), ChannelError> {
    let mut at = 0;
    for &size in chunks.iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = at.saturating_add(size.max(1)).min(bytes.len());
        to.input(&bytes[at..end])?;
        at = end;
    }
    Ok(())
}

/// Run the handshake, all at once.
fn handshake(client: &mut ChannelClient, server: &mut ChannelServer) {
    let m1 = drain(client);
    server.handle_input(&m1).unwrap_or_else(|e| panic!("{e}"));
    let m2 = drain(server);
    client.handle_input(&m2).unwrap_or_else(|e| panic!("{e}"));
    assert!(client.is_established() && server.is_established());
}

fn established(seed: u64) -> (ChannelClient, ChannelServer) {
    let (mut client, mut server) = pair(seed);
    handshake(&mut client, &mut server);
    (client, server)
}

/// A payload whose bytes depend on its index and length.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8)).collect()
}

#[test]
fn a_handshake_then_messages_both_ways() {
    let (mut client, mut server) = pair(1);
    assert!(!client.is_established() && !server.is_established());
    let m1 = drain(&mut client);
    assert_eq!(m1.len(), 2 + 97, "record 1 is IK message 1 with a 1-byte payload");
    assert_eq!(u16::from_be_bytes([m1[0], m1[1]]), 97);
    server.handle_input(&m1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.remote_static(), Some(machine_key().public_key()), "the server learns the machine key");
    assert!(server.is_established());
    let m2 = drain(&mut server);
    assert_eq!(m2.len(), 2 + 49);
    client.handle_input(&m2).unwrap_or_else(|e| panic!("{e}"));
    assert!(client.is_established());
    assert_eq!(client.server_key(), server_key().public_key());

    client.send_message(b"hello server").unwrap_or_else(|e| panic!("{e}"));
    client.send_message(b"").unwrap_or_else(|e| panic!("{e}"));
    let bytes = drain(&mut client);
    assert_eq!(bytes.len(), (2 + 4 + 12 + TAG_LEN) + (2 + 4 + TAG_LEN));
    server.handle_input(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(messages(&mut server), vec![Bytes::from_static(b"hello server"), Bytes::new()]);
    server.send_message(b"hello node").unwrap_or_else(|e| panic!("{e}"));
    let bytes = drain(&mut server);
    client.handle_input(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(messages(&mut client), vec![Bytes::from_static(b"hello node")]);
    assert!(client.error().is_none() && server.error().is_none());
}

/// Message sizes worth testing: empty, small, exactly one record, one byte more, many
/// records, up to 1 MiB.
fn message_len() -> impl Strategy<Value = usize> {
    let one_record = MAX_RECORD_PLAINTEXT - MESSAGE_HEADER_LEN;
    prop_oneof![
        Just(0usize),
        1usize..300,
        Just(one_record),
        Just(one_record + 1),
        (one_record - 3)..(one_record + 5),
        2 * MAX_RECORD_PLAINTEXT - 8..2 * MAX_RECORD_PLAINTEXT,
        1usize..(1 << 20) + 1,
        Just(1usize << 20),
    ]
}

/// Read sizes: single bytes, around the record sizes, and everything at once.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    let size = prop_oneof![
        1usize..4,
        1usize..100,
        Just(2),
        Just(2 + MAX_RECORD_LEN),
        Just(2 + MAX_RECORD_LEN + 1),
        1usize..200_000,
        Just(usize::MAX),
    ];
    proptest::collection::vec(size, 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the read boundaries and message sizes, both sides get every message whole
    /// and in order; the client's early messages wait for the handshake.
    #[test]
    fn every_chunking_delivers_every_message(
        to_server in proptest::collection::vec(message_len(), 0..4),
        to_client in proptest::collection::vec(message_len(), 0..4),
        early in 0usize..4,
        client_chunks in chunk_sizes(),
        server_chunks in chunk_sizes(),
        seed in 0u64..1000,
    ) {
        let (mut client, mut server) = pair(seed);
        let to_server: Vec<Vec<u8>> = to_server.iter().enumerate().map(|(i, &len)| payload(i, len)).collect();
        let to_client: Vec<Vec<u8>> = to_client.iter().enumerate().map(|(i, &len)| payload(i + 100, len)).collect();
        let early = early.min(to_server.len());
        for m in &to_server[..early] {
            client.send_message(m).unwrap_or_else(|e| panic!("{e}"));
        }
        // Record 1 only: queued messages wait for message 2.
        let m1 = drain(&mut client);
        prop_assert_eq!(m1.len(), 2 + 97);
        feed(&mut server, &m1, &server_chunks).unwrap_or_else(|e| panic!("{e}"));
        prop_assert!(server.is_established());
        for m in &to_client {
            server.send_message(m).unwrap_or_else(|e| panic!("{e}"));
        }
        // Message 2 and the server's messages in one stream.
        let stream = drain(&mut server);
        feed(&mut client, &stream, &client_chunks).unwrap_or_else(|e| panic!("{e}"));
        prop_assert!(client.is_established());
        for m in &to_server[early..] {
            client.send_message(m).unwrap_or_else(|e| panic!("{e}"));
        }
        let stream = drain(&mut client);
        feed(&mut server, &stream, &server_chunks).unwrap_or_else(|e| panic!("{e}"));
        let got = messages(&mut server);
        prop_assert_eq!(got.len(), to_server.len());
        for (got, want) in got.iter().zip(&to_server) {
            prop_assert!(got[..] == want[..], "a {}-byte message came out as {} bytes", want.len(), got.len());
        }
        let got = messages(&mut client);
        prop_assert_eq!(got.len(), to_client.len());
        for (got, want) in got.iter().zip(&to_client) {
            prop_assert!(got[..] == want[..], "a {}-byte message came out as {} bytes", want.len(), got.len());
        }
        prop_assert!(client.error().is_none() && server.error().is_none());
    }
}

#[test]
fn messages_take_as_many_records_as_they_need() {
    let (mut client, mut server) = established(2);
    let one_record = MAX_RECORD_PLAINTEXT - MESSAGE_HEADER_LEN;
    for (len, records) in [(0, 1), (one_record, 1), (one_record + 1, 2), (one_record + 1 + MAX_RECORD_PLAINTEXT, 3)] {
        client.send_message(&payload(0, len)).unwrap_or_else(|e| panic!("{e}"));
        let bytes = drain(&mut client);
        assert_eq!(bytes.len(), MESSAGE_HEADER_LEN + len + records * (2 + TAG_LEN), "{len} bytes in {records} records");
        // Every record but the last is full.
        let first = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        assert_eq!(first, if records > 1 { MAX_RECORD_LEN } else { MESSAGE_HEADER_LEN + len + TAG_LEN });
        server.handle_input(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(messages(&mut server), vec![Bytes::from(payload(0, len))]);
    }
}

#[test]
fn the_largest_message_goes_through_and_one_byte_more_is_refused() {
    let config = ChannelConfig { max_message_len: 100_000 };
    let mut client = client_with(3, server_key().public_key(), config);
    let mut server = server_with(4, config);
    handshake(&mut client, &mut server);
    client.send_message(&payload(1, 100_000)).unwrap_or_else(|e| panic!("{e}"));
    let refused = client.send_message(&payload(1, 100_001));
    assert_eq!(refused, Err(ChannelError::OutgoingTooLarge { len: 100_001, max: 100_000 }));
    assert!(client.is_established(), "a refused send does not kill the channel");
    let bytes = drain(&mut client);
    server.handle_input(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(messages(&mut server), vec![Bytes::from(payload(1, 100_000))]);
    // A configured maximum above the cap is the cap.
    let mut big = client_with(5, server_key().public_key(), ChannelConfig { max_message_len: usize::MAX });
    let too_big = vec![0u8; MAX_MESSAGE_LEN_CAP + 1];
    assert_eq!(
        big.send_message(&too_big),
        Err(ChannelError::OutgoingTooLarge { len: MAX_MESSAGE_LEN_CAP + 1, max: MAX_MESSAGE_LEN_CAP })
    );
}

#[test]
fn an_oversize_length_is_refused_before_its_payload_is_buffered() {
    let mut client = client_with(6, server_key().public_key(), ChannelConfig { max_message_len: MAX_MESSAGE_LEN_CAP });
    let mut server = server_with(7, ChannelConfig { max_message_len: 1024 });
    handshake(&mut client, &mut server);
    client.send_message(&payload(0, 1 << 20)).unwrap_or_else(|e| panic!("{e}"));
    let bytes = drain(&mut client);
    // Only the first 6 bytes of the first record's plaintext... the header is inside the
    // first record, so that record is all the server needs.
    let first = 2 + MAX_RECORD_LEN;
    let result = server.handle_input(&bytes[..first]);
    assert_eq!(result, Err(ChannelError::IncomingTooLarge { len: 1 << 20, max: 1024 }));
    assert!(format!("{server:?}").contains("incoming: None"), "nothing of the payload was kept: {server:?}");
    // The error stays.
    assert_eq!(server.handle_input(&bytes[first..]), result);
    assert_eq!(server.send_message(b"x"), result);
    assert!(server.poll_transmit().is_none() && server.poll_message().is_none() && !server.is_established());
}

#[test]
fn a_forged_oversize_length_is_refused_on_its_own() {
    let (mut client, mut server) = established(8);
    client.seal_raw_record(&u32::MAX.to_be_bytes());
    let bytes = drain(&mut client);
    let max = ChannelConfig::default().max_message_len;
    assert_eq!(server.handle_input(&bytes), Err(ChannelError::IncomingTooLarge { len: u32::MAX as usize, max }));
}

#[test]
fn framing_the_api_never_sends_is_refused_or_accepted_by_the_rules() {
    // A length prefix split across records is fine; so is a message whose last record ends it.
    let (mut client, mut server) = established(9);
    for piece in [&[0u8, 0][..], &[0, 3], b"a", b"bc"] {
        client.seal_raw_record(piece);
    }
    server.handle_input(&drain(&mut client)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(messages(&mut server), vec![Bytes::from_static(b"abc")]);

    // A record with the end of one message and the start of the next.
    let (mut client, mut server) = established(10);
    client.seal_raw_record(&[0, 0, 0, 1, b'a', 0, 0, 0, 1, b'b']);
    assert_eq!(server.handle_input(&drain(&mut client)), Err(ChannelError::RecordCrossesMessage));

    // Two empty messages in one record are two messages in one record.
    let (mut client, mut server) = established(11);
    client.seal_raw_record(&[0; 8]);
    assert_eq!(server.handle_input(&drain(&mut client)), Err(ChannelError::RecordCrossesMessage));

    // A transport record with no plaintext.
    let (mut client, mut server) = established(12);
    client.seal_raw_record(&[]);
    assert_eq!(server.handle_input(&drain(&mut client)), Err(ChannelError::EmptyRecord));

    // The same rules hold towards the client.
    let (mut client, mut server) = established(13);
    server.seal_raw_record(&[0, 0, 0, 2, b'h']);
    server.seal_raw_record(&[b'i', 0]);
    assert_eq!(client.handle_input(&drain(&mut server)), Err(ChannelError::RecordCrossesMessage));
}

#[test]
fn a_zero_record_length_is_an_error_before_and_after_the_handshake() {
    let (_, mut server) = pair(14);
    assert_eq!(server.handle_input(&[0, 0]), Err(ChannelError::ZeroLengthRecord));
    let (mut client, mut server) = established(15);
    // One byte of the prefix is no error yet.
    client.handle_input(&[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(client.handle_input(&[0, 1, 2]), Err(ChannelError::ZeroLengthRecord));
    assert_eq!(client.send_message(b"x"), Err(ChannelError::ZeroLengthRecord));
    assert!(!client.is_established());
    assert_eq!(server.handle_input(&[0, 0, 7]), Err(ChannelError::ZeroLengthRecord));
}

#[test]
fn the_client_queues_messages_until_the_handshake_and_the_server_refuses_them() {
    let (mut client, mut server) = pair(16);
    client.send_message(b"first").unwrap_or_else(|e| panic!("{e}"));
    client.send_message(b"second").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(drain(&mut client).len(), 2 + 97, "only record 1 before message 2");
    assert_eq!(server.send_message(b"too early"), Err(ChannelError::NotEstablished));
    assert!(server.error().is_none(), "a refused send does not kill the channel");
    assert!(server.poll_transmit().is_none());

    // Feed the server the handshake again (from a client of the same seed).
    let (mut twin, _) = pair(16);
    server.handle_input(&drain(&mut twin)).unwrap_or_else(|e| panic!("{e}"));
    server.send_message(b"now").unwrap_or_else(|e| panic!("{e}"));
    client.handle_input(&drain(&mut server)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(messages(&mut client), vec![Bytes::from_static(b"now")]);
    server.handle_input(&drain(&mut client)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(messages(&mut server), vec![Bytes::from_static(b"first"), Bytes::from_static(b"second")]);
}

#[test]
fn anything_but_message_1_first_fails_the_handshake() {
    // A transport record from another channel as record 1.
    let (mut client, _) = established(17);
    client.send_message(b"not a handshake").unwrap_or_else(|e| panic!("{e}"));
    let transport = drain(&mut client);
    let (_, mut server) = pair(18);
    assert!(matches!(server.handle_input(&transport), Err(ChannelError::Handshake { message: 1, .. })));
    assert!(server.remote_static().is_none() && server.poll_transmit().is_none());

    // A well-formed message 1 for a finished handshake, replayed.
    let (mut client, mut server) = pair(19);
    let m1 = drain(&mut client);
    server.handle_input(&m1).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(server.handle_input(&m1), Err(ChannelError::Decrypt { len: 97 })));

    // Message 2 replayed to the client after the handshake.
    let (mut client, mut server) = pair(20);
    server.handle_input(&drain(&mut client)).unwrap_or_else(|e| panic!("{e}"));
    let m2 = drain(&mut server);
    client.handle_input(&m2).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(client.handle_input(&m2), Err(ChannelError::Decrypt { len: 49 })));

    // A server's transport record where the client waits for message 2.
    let (mut client, mut server) = pair(21);
    let (_, mut other) = established(22);
    other.send_message(b"hi").unwrap_or_else(|e| panic!("{e}"));
    let _ = drain(&mut server);
    assert!(matches!(client.handle_input(&drain(&mut other)), Err(ChannelError::Handshake { message: 2, .. })));
}

#[test]
fn a_wrong_server_key_fails_the_handshake_cleanly() {
    let impostor = PrivateKey::from_bytes([0x77; 32]).public_key();
    let mut client = client_with(23, impostor, ChannelConfig::default());
    let (_, mut server) = pair(24);
    let m1 = drain(&mut client);
    let result = server.handle_input(&m1);
    assert!(matches!(result, Err(ChannelError::Handshake { message: 1, .. })), "{result:?}");
    assert!(server.poll_transmit().is_none() && server.remote_static().is_none());
    assert_eq!(server.handle_input(b"more"), result, "the error stays");
    assert!(!client.is_established() && client.error().is_none(), "the client just waits (the server hangs up)");

    // A message 2 made for another node's handshake does not verify either.
    let (mut alice, mut server) = pair(25);
    server.handle_input(&drain(&mut alice)).unwrap_or_else(|e| panic!("{e}"));
    let m2 = drain(&mut server);
    let (mut bob, _) = pair(26);
    let _ = drain(&mut bob);
    assert!(matches!(bob.handle_input(&m2), Err(ChannelError::Handshake { message: 2, .. })));
    assert!(!bob.is_established());
    // The client refuses to build on a low-order server key.
    let low_order = ChannelClient::new(machine_key(), PublicKey([0; 32]), &mut test_rng(1), ChannelConfig::default());
    assert!(matches!(low_order, Err(ChannelError::Setup(_))), "{low_order:?}");
}

/// A hand-built initiator towards the server key, for payloads our client never sends.
fn raw_message1(payload: &[u8]) -> Vec<u8> {
    let private = Arc::new(machine_key());
    let params = NOISE_PATTERN.parse().unwrap_or_else(|e| panic!("{e}"));
    let server = server_key().public_key();
    let mut hs = noise::builder(params, private.clone(), &mut test_rng(99))
        .local_private_key(private.as_bytes())
        .and_then(|b| b.remote_public_key(&server.0))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_initiator())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut message = vec![0u8; 200];
    let n = hs.write_message(payload, &mut message).unwrap_or_else(|e| panic!("{e}"));
    let mut record = (n as u16).to_be_bytes().to_vec();
    record.extend_from_slice(&message[..n]);
    record
}

#[test]
fn versions_are_checked_both_ways() {
    let (_, mut server) = pair(27);
    assert_eq!(server.handle_input(&raw_message1(&[2])), Err(ChannelError::UnsupportedVersion(2)));
    assert_eq!(server.remote_static(), Some(machine_key().public_key()), "the key is known for the log");
    assert!(server.poll_transmit().is_none(), "no message 2 for an unknown version");
    let (_, mut server) = pair(28);
    assert_eq!(server.handle_input(&raw_message1(&[])), Err(ChannelError::HandshakePayload { message: 1, len: 0 }));
    let (_, mut server) = pair(29);
    let two = raw_message1(&[PROTOCOL_VERSION, 0]);
    assert_eq!(server.handle_input(&two), Err(ChannelError::HandshakePayload { message: 1, len: 2 }));
    let (_, mut server) = pair(30);
    server.handle_input(&raw_message1(&[PROTOCOL_VERSION])).unwrap_or_else(|e| panic!("{e}"));

    // A responder that answers with version 7.
    let mut client = client_with(31, server_key().public_key(), ChannelConfig::default());
    let m1 = drain(&mut client);
    let private = Arc::new(server_key());
    let params = NOISE_PATTERN.parse().unwrap_or_else(|e| panic!("{e}"));
    let mut hs = noise::builder(params, private.clone(), &mut test_rng(98))
        .local_private_key(private.as_bytes())
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 200];
    hs.read_message(&m1[2..], &mut buf).unwrap_or_else(|e| panic!("{e}"));
    let n = hs.write_message(&[7], &mut buf).unwrap_or_else(|e| panic!("{e}"));
    let mut m2 = (n as u16).to_be_bytes().to_vec();
    m2.extend_from_slice(&buf[..n]);
    assert_eq!(client.handle_input(&m2), Err(ChannelError::UnsupportedVersion(7)));
    assert!(!client.is_established());
    let shown = ChannelError::UnsupportedVersion(7).to_string();
    assert!(shown.contains("version 7") && shown.contains("version 1"), "{shown}");
}

/// The server's view of a stream: messages delivered and whether it failed.
fn deliver(to: &mut impl Side, bytes: &[u8]) -> (Vec<Bytes>, bool) {
    let failed = to.input(bytes).is_err();
    (messages(to), failed)
}

#[test]
fn a_flipped_byte_anywhere_is_an_error_or_a_wait_never_a_wrong_message() {
    let originals: Vec<Vec<u8>> = vec![b"one".to_vec(), Vec::new(), payload(3, 70_000), b"four".to_vec()];
    // Node to server: record 1 and the node's messages, as one stream.
    let (mut client, _) = pair(32);
    for m in &originals {
        client.send_message(m).unwrap_or_else(|e| panic!("{e}"));
    }
    let m1 = drain(&mut client);
    let mut server = server_with(1032, ChannelConfig::default());
    server.handle_input(&m1).unwrap_or_else(|e| panic!("{e}"));
    client.handle_input(&drain(&mut server)).unwrap_or_else(|e| panic!("{e}"));
    let mut up = m1.clone();
    up.extend_from_slice(&drain(&mut client));
    // Server to node: message 2 and the server's messages.
    let mut server = server_with(1032, ChannelConfig::default());
    server.handle_input(&m1).unwrap_or_else(|e| panic!("{e}"));
    for m in &originals {
        server.send_message(m).unwrap_or_else(|e| panic!("{e}"));
    }
    let down = drain(&mut server);

    // Every byte, except most of the big message's body (sampled), where the flips only
    // test the same tag again.
    let positions = |len: usize| (0..len).filter(move |i| *i < 400 || *i + 400 > len || i % 997 == 0);
    for at in positions(up.len()) {
        let mut stream = up.clone();
        stream[at] ^= 1 << (at % 8);
        let mut server = server_with(1032, ChannelConfig::default());
        let (got, failed) = deliver(&mut server, &stream);
        assert!(got.iter().zip(&originals).all(|(g, o)| g[..] == o[..]), "flip at {at}: a changed message came out");
        assert!(failed || got.len() < originals.len(), "flip at {at} went unnoticed");
    }
    for at in positions(down.len()) {
        let mut stream = down.clone();
        stream[at] ^= 1 << (at % 8);
        let (mut client, _) = pair(32);
        let _ = drain(&mut client);
        let (got, failed) = deliver(&mut client, &stream);
        assert!(got.iter().zip(&originals).all(|(g, o)| g[..] == o[..]), "flip at {at}: a changed message came out");
        assert!(failed || got.len() < originals.len(), "flip at {at} went unnoticed");
    }
}

#[test]
fn a_truncated_stream_waits_without_output_or_error() {
    let (mut client, mut server) = pair(33);
    let m1 = drain(&mut client);
    server.handle_input(&m1[..m1.len() - 1]).unwrap_or_else(|e| panic!("{e}"));
    assert!(server.poll_transmit().is_none() && server.remote_static().is_none() && !server.is_established());
    server.handle_input(&m1[m1.len() - 1..]).unwrap_or_else(|e| panic!("{e}"));
    assert!(server.is_established());
    client.handle_input(&drain(&mut server)).unwrap_or_else(|e| panic!("{e}"));
    client.send_message(&payload(0, 200_000)).unwrap_or_else(|e| panic!("{e}"));
    let bytes = drain(&mut client);
    for cut in [1, 2, 3, 2 + MAX_RECORD_LEN, bytes.len() - 1] {
        let (mut client, mut server) = established(34);
        client.send_message(&payload(0, 200_000)).unwrap_or_else(|e| panic!("{e}"));
        let bytes = drain(&mut client);
        server.handle_input(&bytes[..cut]).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(server.poll_message().is_none() && server.poll_transmit().is_none() && server.error().is_none());
        server.handle_input(&bytes[cut..]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(messages(&mut server), vec![Bytes::from(payload(0, 200_000))]);
    }
    assert!(!bytes.is_empty());
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let run = |seed: u64| {
        let (mut client, mut server) = pair(seed);
        client.send_message(b"early").unwrap_or_else(|e| panic!("{e}"));
        let m1 = drain(&mut client);
        server.handle_input(&m1).unwrap_or_else(|e| panic!("{e}"));
        server.send_message(b"welcome").unwrap_or_else(|e| panic!("{e}"));
        let down = drain(&mut server);
        client.handle_input(&down).unwrap_or_else(|e| panic!("{e}"));
        let up = drain(&mut client);
        (m1, down, up)
    };
    assert_eq!(run(35), run(35));
    let (a, b) = (run(35), run(36));
    assert_ne!(a.0, b.0, "another seed, another ephemeral key");
    assert_ne!(a.1, b.1);
}

#[test]
fn an_rng_is_drawn_from_not_replayed() {
    // Two channels from one generator get different ephemeral keys.
    let mut rng = Rng::new([9; 32]);
    let server = server_key().public_key();
    let mut a = ChannelClient::new(machine_key(), server, &mut rng, ChannelConfig::default());
    let mut b = ChannelClient::new(machine_key(), server, &mut rng, ChannelConfig::default());
    let (Ok(a), Ok(b)) = (a.as_mut(), b.as_mut()) else { panic!("clients") };
    assert_ne!(drain(a), drain(b));
}

#[test]
fn transport_keys_are_wiped_and_channels_hide_them() {
    use crate::key_hygiene::assert_redacted;
    let (mut client, mut server) = established(37);
    client.send_message(b"x").unwrap_or_else(|e| panic!("{e}"));
    server.handle_input(&drain(&mut client)).unwrap_or_else(|e| panic!("{e}"));
    for shown in [format!("{client:?}"), format!("{server:?}")] {
        assert!(shown.contains("established"), "{shown}");
    }
    assert_redacted("ChannelClient", &client, &[0x31; 32]);
    assert_redacted("ChannelServer", &server, &[0x42; 32]);
}

// The upgrade.

const SWITCHED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: meshcontrol-v1\r\nConnection: upgrade\r\n\r\n";

#[test]
fn the_request_is_what_the_server_expects() {
    let request = upgrade_request("control.example:8443");
    assert_eq!(
        request,
        b"POST /control HTTP/1.1\r\nHost: control.example:8443\r\nUpgrade: meshcontrol-v1\r\nConnection: upgrade\r\n\r\n"
    );
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut parsed = httparse::Request::new(&mut headers);
    assert_eq!(parsed.parse(&request), Ok(httparse::Status::Complete(request.len())));
    let (method, path) = (parsed.method.unwrap_or_default(), parsed.path.unwrap_or_default());
    assert!(is_upgrade_request(method, path, parsed.headers.iter().map(|h| (h.name, h.value))));
    assert_eq!(upgrade_response(), SWITCHED);
    // No header injection through the host.
    let injected = upgrade_request("evil\r\nX-Admin: yes");
    assert!(String::from_utf8_lossy(&injected).contains("Host: evilX-Admin:yes\r\n"));
}

#[test]
fn the_server_recognises_only_the_upgrade() {
    let good = [("Host", &b"x"[..]), ("upgrade", b"meshcontrol-v1"), ("Connection", b"keep-alive, Upgrade")];
    assert!(is_upgrade_request("POST", "/control", good));
    assert!(is_upgrade_request(
        "POST",
        "/control",
        [("UPGRADE", &b" MeshControl-V1 "[..]), ("connection", b"upgrade")]
    ));
    assert!(!is_upgrade_request("GET", "/control", good));
    assert!(!is_upgrade_request("POST", "/control/", good));
    assert!(!is_upgrade_request("POST", "/control", [("Upgrade", &b"websocket"[..]), ("Connection", b"upgrade")]));
    assert!(!is_upgrade_request("POST", "/control", [("Upgrade", &b"meshcontrol-v1"[..])]));
    assert!(!is_upgrade_request("POST", "/control", [("Connection", &b"upgrade"[..])]));
}

#[test]
fn the_reader_switches_and_hands_over_the_rest() {
    let mut reader = UpgradeReader::new();
    let mut input = SWITCHED.to_vec();
    input.extend_from_slice(b"\x00\x31noise");
    assert_eq!(reader.handle_input(&input), Ok(UpgradeStatus::Switched { rest: Bytes::from_static(b"\x00\x31noise") }));
    // Later bytes are the channel's.
    assert_eq!(reader.handle_input(b"more"), Ok(UpgradeStatus::Switched { rest: Bytes::from_static(b"more") }));

    // Byte by byte, and at every split point.
    for split in 0..=input.len() {
        let mut reader = UpgradeReader::new();
        let mut rest = Vec::new();
        let mut switched = false;
        let pieces: Vec<&[u8]> =
            if split == 0 { input.chunks(1).collect() } else { vec![&input[..split], &input[split..]] };
        for piece in pieces {
            match reader.handle_input(piece).unwrap_or_else(|e| panic!("{e}")) {
                UpgradeStatus::Pending => assert!(!switched),
                UpgradeStatus::Switched { rest: r } => {
                    switched = true;
                    rest.extend_from_slice(&r);
                }
            }
        }
        assert!(switched, "split {split}");
        assert_eq!(rest, b"\x00\x31noise", "split {split}");
    }
    // A header alone switches with nothing left over; a bare LF ending is accepted too.
    let mut reader = UpgradeReader::new();
    assert_eq!(
        reader.handle_input(b"HTTP/1.1 101 Switching Protocols\nupgrade: MESHCONTROL-V1\n\n"),
        Ok(UpgradeStatus::Switched { rest: Bytes::new() })
    );
}

#[test]
fn the_reader_refuses_other_answers() {
    let status = |input: &[u8]| UpgradeReader::new().handle_input(input);
    assert_eq!(
        status(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        Err(UpgradeError::Status { code: 404, reason: "Not Found".into() })
    );
    let e = status(b"HTTP/1.1 426 Upgrade Required\r\n\r\n").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("426") && e.contains("Upgrade Required"), "{e}");
    assert_eq!(status(b"HTTP/1.1 200 OK\r\n\r\nbody"), Err(UpgradeError::Status { code: 200, reason: "OK".into() }));
    assert_eq!(
        status(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n"),
        Err(UpgradeError::MissingUpgrade)
    );
    assert_eq!(
        status(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
        Err(UpgradeError::WrongUpgrade("websocket".into()))
    );
    assert!(matches!(
        status(b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: meshcontrol-v1\r\n\r\n"),
        Err(UpgradeError::Malformed(_))
    ));
    for garbage in [
        &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
        b"\x00\x61\x01\x02",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 101 X\r\nbad header\r\n\r\n",
    ] {
        assert!(matches!(status(garbage), Err(UpgradeError::Malformed(_))), "{:?}", String::from_utf8_lossy(garbage));
    }
    // A partial status line is only pending.
    assert_eq!(status(b"HTTP/1.1 10"), Ok(UpgradeStatus::Pending));
    // A long reason is cut for the error.
    let mut long = b"HTTP/1.1 500 ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 5000));
    long.extend_from_slice(b"\r\n\r\n");
    let Err(UpgradeError::Status { code: 500, reason }) = status(&long) else { panic!("a 500") };
    assert_eq!(reason.len(), 256);
}

#[test]
fn the_reader_bounds_the_header_and_keeps_its_error() {
    let mut reader = UpgradeReader::new();
    assert_eq!(reader.handle_input(b"HTTP/1.1 101 Switching Protocols\r\n"), Ok(UpgradeStatus::Pending));
    // Lines of 200 bytes: the bound is reached before the 64-header limit.
    let mut filler = b"X-Filler: ".to_vec();
    filler.resize(198, b'a');
    filler.extend_from_slice(b"\r\n");
    let filler = &filler[..];
    let mut result = Ok(UpgradeStatus::Pending);
    let mut fed = 34;
    while result == Ok(UpgradeStatus::Pending) {
        result = reader.handle_input(filler);
        fed += filler.len();
        assert!(fed < MAX_HEADER_LEN + 2 * filler.len(), "still pending after {fed} bytes");
    }
    assert_eq!(result, Err(UpgradeError::HeaderTooLarge));
    assert_eq!(reader.handle_input(b"\r\n"), Err(UpgradeError::HeaderTooLarge), "the error stays");
    // A complete header over the bound in one read is refused too.
    let mut big = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: meshcontrol-v1\r\n".to_vec();
    while big.len() <= MAX_HEADER_LEN {
        big.extend_from_slice(filler);
    }
    big.extend_from_slice(b"\r\n");
    assert_eq!(UpgradeReader::new().handle_input(&big), Err(UpgradeError::HeaderTooLarge));
    // Just under the bound is fine, with a large read behind it.
    let mut fits = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: meshcontrol-v1\r\n".to_vec();
    while fits.len() + filler.len() + 2 <= MAX_HEADER_LEN {
        fits.extend_from_slice(filler);
    }
    fits.extend_from_slice(b"\r\n");
    let header = fits.len();
    fits.extend(std::iter::repeat_n(7u8, 100_000));
    assert_eq!(
        UpgradeReader::new().handle_input(&fits),
        Ok(UpgradeStatus::Switched { rest: Bytes::from(vec![7u8; 100_000]) }),
        "a {header}-byte header"
    );
}

#[test]
fn upgrade_then_channel_in_one_stream() {
    // The server writes its 101 and message 2 in one go; the node reads them in odd pieces.
    let (mut client, mut server) = pair(38);
    let mut up = upgrade_request("control.example");
    up.extend_from_slice(&drain(&mut client));
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(n)) = request.parse(&up) else { panic!("a request") };
    server.handle_input(&up[n..]).unwrap_or_else(|e| panic!("{e}"));
    server.send_message(b"netmap").unwrap_or_else(|e| panic!("{e}"));
    let mut down = upgrade_response();
    down.extend_from_slice(&drain(&mut server));
    let mut reader = UpgradeReader::new();
    for piece in down.chunks(7) {
        match reader.handle_input(piece).unwrap_or_else(|e| panic!("{e}")) {
            UpgradeStatus::Pending => assert!(!client.is_established()),
            UpgradeStatus::Switched { rest } => client.handle_input(&rest).unwrap_or_else(|e| panic!("{e}")),
        }
    }
    assert_eq!(messages(&mut client), vec![Bytes::from_static(b"netmap")]);
}
