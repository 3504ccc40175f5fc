//! Our client against our server in memory, and raw-packet clients against the server:
//! the whole protocol without sockets, deterministic.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ed25519_dalek::SigningKey;

use super::channel::{ChannelId, ChannelKind, ChannelRequest};
use super::client::{ClientConfig, ClientSession};
use super::connection::ConnectionEvent;
use super::event::SessionEvent;
use super::kex::{server_respond, ClientKex, KexError, KexMethod};
use super::kexinit::{
    KexInit, CIPHERS, KEX_CURVE25519, KEX_METHODS, KEX_MLKEM768X25519, KEX_SNTRUP761X25519, KEX_SNTRUP761X25519_OPENSSH,
};
use super::msg;
use super::packet::frame_plain_packet;
use super::server::{ServerConfig, ServerSession};
use super::transport::{Role, Transport, TransportConfig, TransportError, TransportEvent};
use super::wire::Writer;
use crate::time::Instant;

const HOST_KEY: [u8; 32] = [42; 32];

fn host_public() -> [u8; 32] {
    SigningKey::from_bytes(&HOST_KEY).verifying_key().to_bytes()
}

/// How the test server answers authentication.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Decision {
    Accept,
    Deny,
    Hold,
}

/// Either end of a connection, as the byte shuttle sees it.
trait Endpoint {
    fn poll_transmit(&mut self) -> Option<BytesMut>;
    fn handle_input(&mut self, now: Instant, bytes: &[u8]);
}

macro_rules! endpoint {
    ($($t:ty),*) => {$(
        impl Endpoint for $t {
            fn poll_transmit(&mut self) -> Option<BytesMut> {
                <$t>::poll_transmit(self)
            }
            fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
                <$t>::handle_input(self, now, bytes)
            }
        }
    )*};
}
endpoint!(ClientSession, ServerSession, Transport);

/// Deliver everything each side has queued to the other; whether anything moved.
fn exchange(client: &mut impl Endpoint, server: &mut impl Endpoint, now: Instant) -> bool {
    let mut moved = false;
    while let Some(bytes) = client.poll_transmit() {
        server.handle_input(now, &bytes);
        moved = true;
    }
    while let Some(bytes) = server.poll_transmit() {
        client.handle_input(now, &bytes);
        moved = true;
    }
    moved
}

/// The test server's application: decides logins, accepts channels and their requests.
fn answer(server: &mut ServerSession, now: Instant, event: &SessionEvent, decision: Decision) {
    match event {
        SessionEvent::AuthRequest { .. } => match decision {
            Decision::Accept => server.accept_auth(now),
            Decision::Deny => server.deny_auth(now, Some("not allowed by policy")),
            Decision::Hold => server.auth_banner(now, "visit https://login.example/abc"),
        },
        SessionEvent::Connection(ConnectionEvent::OpenRequest { channel, .. }) => {
            server.channels(now).unwrap_or_else(|| panic!("not authenticated")).accept(*channel)
        }
        SessionEvent::Connection(ConnectionEvent::Request { channel, want_reply: true, .. }) => {
            server.channels(now).unwrap_or_else(|| panic!("not authenticated")).reply(*channel, true)
        }
        _ => {}
    }
}

struct Pair {
    client: ClientSession,
    server: ServerSession,
    now: Instant,
    decision: Decision,
    client_events: Vec<SessionEvent>,
    server_events: Vec<SessionEvent>,
}

impl Pair {
    fn new(client: ClientConfig, server: ServerConfig, decision: Decision) -> Self {
        let now = Instant::from_micros(1_000_000);
        Self {
            client: ClientSession::new(client, crate::rng::test_rng(1), now),
            server: ServerSession::new(SigningKey::from_bytes(&HOST_KEY), server, crate::rng::test_rng(2), now),
            now,
            decision,
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    fn default_pair() -> Self {
        let client = ClientConfig { user: "alice".into(), host_key: Some(host_public()), ..Default::default() };
        Self::new(client, ServerConfig::default(), Decision::Accept)
    }

    /// Move bytes both ways until neither side has anything to say; the server's
    /// application answers auth requests and accepts channels and requests.
    fn run(&mut self) {
        loop {
            let mut moved = exchange(&mut self.client, &mut self.server, self.now);
            while let Some(event) = self.server.poll_event() {
                answer(&mut self.server, self.now, &event, self.decision);
                self.server_events.push(event);
                moved = true;
            }
            while let Some(event) = self.client.poll_event() {
                self.client_events.push(event);
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    fn open_session(&mut self) -> (ChannelId, ChannelId) {
        let id = self.client.channels(self.now).open(&ChannelKind::Session).unwrap_or_else(|| panic!("channel limit"));
        self.run();
        assert!(self.client_events.contains(&SessionEvent::Connection(ConnectionEvent::Opened { channel: id })));
        let server_id = self
            .server_events
            .iter()
            .rev()
            .find_map(|e| match e {
                SessionEvent::Connection(ConnectionEvent::OpenRequest { channel, .. }) => Some(*channel),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no open request"));
        (id, server_id)
    }
}

fn data_of(events: &[SessionEvent], channel: ChannelId) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if let SessionEvent::Connection(ConnectionEvent::Data { channel: c, data }) = e {
            if *c == channel {
                out.extend_from_slice(data);
            }
        }
    }
    out
}

#[test]
fn client_and_server_agree_authenticate_and_run_an_exec_channel() {
    for cipher in CIPHERS {
        let transport = TransportConfig { ciphers: vec![cipher.to_string()], ..Default::default() };
        let client =
            ClientConfig { user: "alice".into(), host_key: Some(host_public()), transport, ..Default::default() };
        let mut pair = Pair::new(client, ServerConfig::default(), Decision::Accept);
        pair.run();
        assert!(pair.client.is_authenticated() && pair.server.is_authenticated(), "{cipher}");
        assert!(pair
            .client_events
            .iter()
            .any(|e| matches!(e, SessionEvent::Keyed { negotiated, .. } if negotiated.cipher_s2c == cipher)));
        let (c, s) = pair.open_session();
        pair.client.channels(pair.now).request(c, &ChannelRequest::Exec(b"echo hi".to_vec()), true);
        pair.client.channels(pair.now).write(c, b"to the server");
        pair.client.channels(pair.now).eof(c);
        pair.run();
        assert!(pair.server_events.contains(&SessionEvent::Connection(ConnectionEvent::Request {
            channel: s,
            request: ChannelRequest::Exec(b"echo hi".to_vec()),
            want_reply: true,
        })));
        assert!(pair
            .client_events
            .contains(&SessionEvent::Connection(ConnectionEvent::RequestReply { channel: c, ok: true })));
        assert_eq!(data_of(&pair.server_events, s), b"to the server");
        pair.server.channels(pair.now).unwrap_or_else(|| panic!("not authenticated")).write(s, b"hi\n");
        pair.server.channels(pair.now).unwrap_or_else(|| panic!("not authenticated")).write_extended(
            s,
            1,
            b"warning\n",
        );
        pair.server.channels(pair.now).unwrap_or_else(|| panic!("not authenticated")).request(
            s,
            &ChannelRequest::ExitStatus(3),
            false,
        );
        pair.server.channels(pair.now).unwrap_or_else(|| panic!("not authenticated")).eof(s);
        pair.server.channels(pair.now).unwrap_or_else(|| panic!("not authenticated")).close(s);
        pair.run();
        assert_eq!(data_of(&pair.client_events, c), b"hi\n");
        let client_saw = |e: ConnectionEvent| pair.client_events.contains(&SessionEvent::Connection(e));
        assert!(client_saw(ConnectionEvent::ExtendedData { channel: c, code: 1, data: "warning\n".into() }));
        assert!(client_saw(ConnectionEvent::Request {
            channel: c,
            request: ChannelRequest::ExitStatus(3),
            want_reply: false
        }));
        assert!(client_saw(ConnectionEvent::Closed { channel: c }));
        assert!(pair.server_events.contains(&SessionEvent::Connection(ConnectionEvent::Closed { channel: s })));
    }
}

/// Push `total` bytes from the client through channel `c`, consuming at the server, while
/// the server pushes the same back; returns what each side received.
fn bulk_both_ways(pair: &mut Pair, c: ChannelId, s: ChannelId, total: usize) -> (Vec<u8>, Vec<u8>) {
    let pattern: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
    let (mut up, mut down) = (0, 0);
    let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
    let mut rounds = 0;
    while (up < total || down < total || at_server.len() < total || at_client.len() < total) && rounds < 100_000 {
        rounds += 1;
        up += pair.client.channels(pair.now).write(c, &pattern[up..(up + 50_000).min(total)]);
        down += pair
            .server
            .channels(pair.now)
            .unwrap_or_else(|| panic!("not authenticated"))
            .write(s, &pattern[down..(down + 50_000).min(total)]);
        pair.run();
        for e in pair.server_events.drain(..) {
            if let SessionEvent::Connection(ConnectionEvent::Data { data, .. }) = e {
                at_server.extend_from_slice(&data);
                pair.server.channels(pair.now).unwrap_or_else(|| panic!("not authenticated")).consume(s, data.len());
            }
        }
        for e in pair.client_events.drain(..) {
            if let SessionEvent::Connection(ConnectionEvent::Data { data, .. }) = e {
                at_client.extend_from_slice(&data);
                pair.client.channels(pair.now).consume(c, data.len());
            }
        }
    }
    assert!(at_server == pattern && at_client == pattern, "bulk transfer incomplete after {rounds} rounds");
    (at_server, at_client)
}

#[test]
fn rekeying_by_volume_keeps_channel_data_flowing_in_both_directions() {
    let transport = TransportConfig { rekey_bytes: 256 * 1024, ..Default::default() };
    let client = ClientConfig {
        user: "alice".into(),
        host_key: Some(host_public()),
        transport: transport.clone(),
        ..Default::default()
    };
    let server = ServerConfig { transport, ..Default::default() };
    let mut pair = Pair::new(client, server, Decision::Accept);
    pair.run();
    let (c, s) = pair.open_session();
    bulk_both_ways(&mut pair, c, s, 8 * 1024 * 1024);
    let (client_rekeys, server_rekeys) = (pair.client.transport().rekeys(), pair.server.transport().rekeys());
    assert!(client_rekeys >= 20 && client_rekeys == server_rekeys, "{client_rekeys} / {server_rekeys}");
    assert!(!pair.client.is_closed() && !pair.server.is_closed());
}

#[test]
fn rekeying_by_time_after_an_hour() {
    let mut pair = Pair::default_pair();
    pair.run();
    let (c, s) = pair.open_session();
    let deadline = pair.server.poll_timeout().unwrap_or_else(|| panic!("no rekey deadline"));
    assert!(deadline.saturating_duration_since(pair.now) <= Duration::from_secs(3600));
    pair.now += Duration::from_secs(3601);
    pair.server.handle_timeout(pair.now);
    pair.client.handle_timeout(pair.now);
    pair.run();
    assert_eq!(pair.server.transport().rekeys(), 1);
    assert_eq!(pair.client.transport().rekeys(), 1);
    bulk_both_ways(&mut pair, c, s, 100_000);
}

#[test]
fn denial_shows_the_banner_and_leaves_no_method() {
    let client = ClientConfig { user: "bob".into(), key: Some(SigningKey::from_bytes(&[5; 32])), ..Default::default() };
    let mut pair = Pair::new(client, ServerConfig::default(), Decision::Deny);
    pair.run();
    assert!(pair.client_events.contains(&SessionEvent::Banner("not allowed by policy".into())));
    assert!(pair.client_events.contains(&SessionEvent::AuthFailed));
    assert!(!pair.server.is_authenticated() && pair.client.is_closed());
}

#[test]
fn a_held_login_waits_for_the_decision_then_times_out() {
    let client = ClientConfig { user: "carol".into(), ..Default::default() };
    let mut pair = Pair::new(client, ServerConfig::default(), Decision::Hold);
    pair.run();
    assert!(pair.client_events.contains(&SessionEvent::Banner("visit https://login.example/abc".into())));
    assert!(!pair.client.is_authenticated() && !pair.client.is_closed());
    assert!(pair.server.channels(pair.now).is_none(), "no channel operation before the decision");
    pair.server.accept_auth(pair.now);
    assert!(pair.server.channels(pair.now).is_some());
    pair.run();
    assert!(pair.client.is_authenticated());

    let client = ClientConfig { user: "carol".into(), ..Default::default() };
    let mut pair = Pair::new(client, ServerConfig::default(), Decision::Hold);
    pair.run();
    let deadline = pair.server.poll_timeout().unwrap_or_else(|| panic!("no hold deadline"));
    assert_eq!(deadline.saturating_duration_since(pair.now), Duration::from_secs(1800));
    pair.now = deadline;
    pair.server.handle_timeout(pair.now);
    pair.run();
    assert!(pair.server.is_closed() && pair.client.is_closed());
}

#[test]
fn a_wrong_host_key_is_refused() {
    let client = ClientConfig { user: "alice".into(), host_key: Some([9; 32]), ..Default::default() };
    let mut pair = Pair::new(client, ServerConfig::default(), Decision::Accept);
    pair.run();
    assert!(pair.client_events.contains(&SessionEvent::Closed(TransportError::HostKeyMismatch)));
    assert!(!pair.server.is_authenticated());
}

#[test]
fn publickey_is_tried_after_none_and_the_server_decides_once() {
    // Our server decides on the first request, so a key is never needed against it; the
    // client's publickey path is exercised against OpenSSH's sshd in tests/.
    let client =
        ClientConfig { user: "alice".into(), key: Some(SigningKey::from_bytes(&[7; 32])), ..Default::default() };
    let mut pair = Pair::new(client, ServerConfig::default(), Decision::Accept);
    pair.run();
    assert!(pair.client.is_authenticated());
    let requests = pair.server_events.iter().filter(|e| matches!(e, SessionEvent::AuthRequest { .. })).count();
    assert_eq!(requests, 1);
}

/// A server fed by hand-made plaintext packets (before any key exchange).
fn plain_server(seed: u64) -> ServerSession {
    ServerSession::new(
        SigningKey::from_bytes(&HOST_KEY),
        ServerConfig::default(),
        crate::rng::test_rng(seed),
        Instant::ZERO,
    )
}

/// `message` laid out as the transport frames it in place: [`super::wire::PACKET_HEADER`]
/// bytes reserved, then the message.
fn packet(message: &[u8]) -> bytes::BytesMut {
    let mut w = Writer::new();
    w.raw(message);
    w.finish_packet()
}

/// The server after a client identification and `messages`, each framed in plaintext.
fn server_fed(messages: &[&[u8]]) -> ServerSession {
    let mut s = plain_server(2);
    let mut input = b"SSH-2.0-raw\r\n".to_vec();
    for (i, m) in messages.iter().enumerate() {
        let mut packet = packet(m);
        frame_plain_packet(&mut packet, &mut crate::rng::test_rng(i as u64 + 3));
        input.extend_from_slice(&packet);
    }
    s.handle_input(Instant::ZERO, &input);
    s
}

/// A raw-packet client: a real key exchange (our Transport in the client role), then
/// whatever messages a test wants to send.
struct Raw {
    client: Transport,
    server: ServerSession,
    now: Instant,
    server_events: Vec<SessionEvent>,
}

impl Raw {
    fn new(config: ServerConfig) -> Self {
        let now = Instant::from_micros(1);
        let client =
            Transport::new(Role::Client { host_key: None }, TransportConfig::default(), crate::rng::test_rng(3), now);
        let server = ServerSession::new(SigningKey::from_bytes(&HOST_KEY), config, crate::rng::test_rng(4), now);
        Self { client, server, now, server_events: Vec::new() }
    }

    /// Exchange bytes until quiet; the server accepts auth and channels.
    fn run(&mut self) {
        loop {
            let mut moved = exchange(&mut self.client, &mut self.server, self.now);
            while let Some(event) = self.server.poll_event() {
                answer(&mut self.server, self.now, &event, Decision::Accept);
                self.server_events.push(event);
                moved = true;
            }
            while self.client.poll_message().is_some() || self.client.poll_event().is_some() {
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }

    fn send(&mut self, payload: &[u8]) {
        self.client.send_packet(self.now, packet(payload));
        self.run();
    }

    fn service_request(&mut self) {
        let mut w = Writer::message(msg::SERVICE_REQUEST);
        w.string(b"ssh-userauth");
        self.send(&w.finish());
    }

    fn auth_request(&mut self, user: &str) {
        let mut w = Writer::message(msg::USERAUTH_REQUEST);
        w.string(user.as_bytes()).string(b"ssh-connection").string(b"none");
        self.send(&w.finish());
    }

    fn open_session(&mut self) {
        let mut w = Writer::message(msg::CHANNEL_OPEN);
        w.string(b"session").u32(0).u32(1 << 20).u32(32768);
        self.send(&w.finish());
    }

    fn closed_with(&self) -> Option<&TransportError> {
        self.server_events.iter().find_map(|e| match e {
            SessionEvent::Closed(error) => Some(error),
            _ => None,
        })
    }

    fn authenticated(&self) -> bool {
        self.server_events.iter().any(|e| matches!(e, SessionEvent::Authenticated { .. }))
    }
}

/// Pre-auth states a raw client can put the server in, by how far it goes first.
fn raw_in_state(state: usize) -> Raw {
    let mut raw = Raw::new(ServerConfig::default());
    raw.run(); // keyed
    if state >= 1 {
        raw.service_request();
    }
    if state >= 2 {
        // A request the server only holds (no decision yet): Deciding.
        let mut w = Writer::message(msg::USERAUTH_REQUEST);
        w.string(b"alice").string(b"ssh-connection").string(b"none");
        raw.client.send_packet(raw.now, packet(&w.finish()));
        while let Some(bytes) = raw.client.poll_transmit() {
            raw.server.handle_input(raw.now, &bytes);
        }
        while let Some(e) = raw.server.poll_event() {
            raw.server_events.push(e);
        }
    }
    if state >= 3 {
        // Denied: a failure with no methods left has been sent.
        raw.server.deny_auth(raw.now, Some("no"));
        raw.run();
    }
    raw
}

#[test]
fn every_message_number_in_every_keyed_pre_auth_state_is_handled_and_never_authenticates() {
    for state in 0..4 {
        for number in 0..=255u8 {
            let mut raw = raw_in_state(state);
            assert!(!raw.server.is_closed(), "state {state} setup");
            let mut payload = vec![number];
            payload.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
            raw.client.send_packet(raw.now, packet(&payload));
            while let Some(bytes) = raw.client.poll_transmit() {
                raw.server.handle_input(raw.now, &bytes);
            }
            while let Some(e) = raw.server.poll_event() {
                raw.server_events.push(e);
            }
            assert!(!raw.authenticated() && !raw.server.is_authenticated(), "state {state} message {number}");
            let harmless = matches!(number, msg::IGNORE | msg::DEBUG | msg::UNIMPLEMENTED | msg::KEXINIT)
                || (state == 2 && number == msg::USERAUTH_REQUEST);
            if !harmless {
                assert!(raw.server.is_closed(), "state {state}: message {number} did not disconnect");
            }
        }
    }
}

#[test]
fn userauth_success_or_channel_open_from_a_client_never_authenticates() {
    // CVE-2018-10933, right after KEXINIT and after the key exchange.
    for number in [msg::USERAUTH_SUCCESS, msg::CHANNEL_OPEN, msg::SERVICE_REQUEST, msg::NEWKEYS] {
        let mut s = server_fed(&[&KexInit::client([1; 16]).encode(), &[number]]);
        let events: Vec<SessionEvent> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(s.is_closed(), "{number}: {events:?}");
        assert!(!events.iter().any(|e| matches!(e, SessionEvent::Authenticated { .. } | SessionEvent::Keyed { .. })));
    }
    for number in [msg::USERAUTH_SUCCESS, msg::CHANNEL_OPEN, msg::CHANNEL_DATA, msg::GLOBAL_REQUEST] {
        let mut raw = raw_in_state(1);
        raw.send(&[number, 0, 0, 0, 0]);
        assert!(raw.server.is_closed() && !raw.authenticated(), "{number}");
    }
}

#[test]
fn every_message_but_kexinit_first_is_fatal() {
    for number in 0..=255u8 {
        if number == msg::KEXINIT {
            continue;
        }
        let s = server_fed(&[&[number, 0, 0, 0, 0]]);
        assert!(s.is_closed(), "message {number} before KEXINIT was accepted");
    }
}

#[test]
fn every_message_number_after_kexinit_and_before_newkeys_is_fatal() {
    for number in 0..=255u8 {
        let mut s = server_fed(&[&KexInit::client([1; 16]).encode(), &[number, 0, 0, 0, 0]]);
        let events: Vec<SessionEvent> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(s.is_closed(), "message {number} during the first key exchange was accepted");
        assert!(!events.iter().any(|e| matches!(e, SessionEvent::Keyed { .. } | SessionEvent::Authenticated { .. })));
    }
}

#[test]
fn sequence_numbers_restart_at_every_newkeys() {
    let mut raw = Raw::new(ServerConfig::default());
    raw.run();
    // Since its NEWKEYS the server sent only EXT_INFO, and the client nothing: without the
    // strict-KEX reset they would be at 4 (KEXINIT, ECDH reply, NEWKEYS, EXT_INFO) and 3.
    assert_eq!(raw.server.transport().sequence_numbers(), (0, 1));
    assert_eq!(raw.client.sequence_numbers(), (1, 0));
    raw.service_request();
    assert_eq!(raw.server.transport().sequence_numbers(), (1, 2));
    // A rekey resets them again.
    let mut raw = Raw::new(ServerConfig {
        transport: TransportConfig { rekey_bytes: 1, ..Default::default() },
        ..Default::default()
    });
    raw.run();
    raw.service_request();
    assert!(raw.server.transport().rekeys() >= 1);
    let (seq_in, seq_out) = raw.server.transport().sequence_numbers();
    assert!(seq_in < 4 && seq_out < 4, "{seq_in} {seq_out}");
}

#[test]
fn strict_kex_ignore_before_newkeys_disconnects() {
    let mut s = server_fed(&[&KexInit::client([1; 16]).encode(), &[msg::IGNORE, 0, 0, 0, 0]]);
    assert!(s.is_closed());
    let closed = std::iter::from_fn(|| s.poll_event())
        .any(|e| e == SessionEvent::Closed(TransportError::Unexpected(msg::IGNORE)));
    assert!(closed);
}

#[test]
fn a_hostile_packet_length_closes_without_buffering() {
    let mut s = plain_server(2);
    s.handle_input(Instant::ZERO, b"SSH-2.0-raw\r\n\xff\xff\xff\xff");
    assert!(s.is_closed());
    // And after keys are in use: the decrypted length is checked before waiting for more.
    let mut raw = raw_in_state(1);
    raw.server.handle_input(raw.now, &[0xff; 4]);
    assert!(raw.server.is_closed());
}

#[test]
fn window_overflow_unknown_channels_and_data_beyond_the_window_disconnect() {
    let cases: [(&str, &[&[u8]]); 4] = [
        (
            "double window adjust",
            &[
                &[msg::CHANNEL_WINDOW_ADJUST, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
                &[msg::CHANNEL_WINDOW_ADJUST, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            ],
        ),
        ("data on an unknown channel", &[&[msg::CHANNEL_DATA, 0, 0, 0, 9, 0, 0, 0, 1, b'x']]),
        ("eof on an unknown channel", &[&[msg::CHANNEL_EOF, 0, 0, 0, 5]]),
        ("length mismatch", &[&[msg::CHANNEL_DATA, 0, 0, 0, 0, 0, 0, 0, 9, b'x']]),
    ];
    for (what, messages) in cases {
        let mut raw = raw_in_state(1);
        raw.auth_request("alice");
        raw.open_session();
        assert!(raw.authenticated() && !raw.server.is_closed(), "{what}");
        for m in messages {
            raw.send(m);
        }
        assert!(raw.server.is_closed(), "{what} did not disconnect");
        assert!(matches!(raw.closed_with(), Some(TransportError::Protocol(_))), "{what}: {:?}", raw.closed_with());
    }
    // More data than the window granted.
    let mut raw = raw_in_state(1);
    raw.auth_request("alice");
    raw.open_session();
    let chunk = vec![0u8; 32 * 1024];
    for _ in 0..(2 * 1024 * 1024 / chunk.len()) {
        let mut w = Writer::message(msg::CHANNEL_DATA);
        w.u32(0).string(&chunk);
        raw.send(&w.finish());
    }
    assert!(!raw.server.is_closed(), "the whole window is usable");
    let mut w = Writer::message(msg::CHANNEL_DATA);
    w.u32(0).string(b"one byte too many");
    raw.send(&w.finish());
    assert!(raw.server.is_closed());
}

#[test]
fn data_before_the_channel_is_confirmed_is_refused() {
    // The server has not answered the open (the application is deciding).
    let mut raw = raw_in_state(1);
    raw.auth_request("alice");
    let mut w = Writer::message(msg::CHANNEL_OPEN);
    w.string(b"session").u32(0).u32(1 << 20).u32(32768);
    raw.client.send_packet(raw.now, packet(&w.finish()));
    let mut w = Writer::message(msg::CHANNEL_DATA);
    w.u32(0).string(b"early");
    raw.client.send_packet(raw.now, packet(&w.finish()));
    while let Some(bytes) = raw.client.poll_transmit() {
        raw.server.handle_input(raw.now, &bytes);
    }
    assert!(raw.server.is_closed());
}

#[test]
fn channel_limit_refuses_with_resource_shortage() {
    let mut raw = raw_in_state(1);
    raw.auth_request("alice");
    for i in 0..70u32 {
        let mut w = Writer::message(msg::CHANNEL_OPEN);
        w.string(b"session").u32(i).u32(1 << 20).u32(32768);
        raw.send(&w.finish());
    }
    let opened = raw
        .server_events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Connection(ConnectionEvent::OpenRequest { .. })))
        .count();
    assert_eq!(opened, 64);
    assert!(!raw.server.is_closed());
}

#[test]
fn every_flipped_byte_after_key_exchange_is_a_mac_error_and_a_disconnect() {
    let mut flipped_at = 0usize;
    for offset in 0..200usize {
        let mut pair = Pair::default_pair();
        pair.run();
        let (c, _) = pair.open_session();
        // Several packets, so the offsets cover headers, bodies and tags of more than one.
        pair.client.channels(pair.now).write(c, b"first packet");
        pair.client.channels(pair.now).write(c, &[7u8; 40]);
        pair.client.channels(pair.now).write(c, b"third");
        let mut wire = BytesMut::new();
        while let Some(bytes) = pair.client.poll_transmit() {
            wire.extend_from_slice(&bytes);
        }
        let at = offset % wire.len();
        wire[at] ^= 1 << (offset % 8);
        pair.server.handle_input(pair.now, &wire);
        // A flipped length bit may announce a longer packet: the server waits for that many
        // bytes (at most 256 KiB), and the traffic that follows brings them.
        for _ in 0..100 {
            if pair.server.is_closed() {
                break;
            }
            pair.client.channels(pair.now).write(c, &[1u8; 8192]);
            while let Some(bytes) = pair.client.poll_transmit() {
                pair.server.handle_input(pair.now, &bytes);
            }
        }
        let events: Vec<SessionEvent> = std::iter::from_fn(|| pair.server.poll_event()).collect();
        let mac_error = events.iter().any(|e| {
            matches!(
                e,
                SessionEvent::Closed(TransportError::Cipher(
                    super::cipher::CipherError::Mac | super::cipher::CipherError::Length(_)
                ))
            )
        });
        assert!(mac_error && pair.server.is_closed(), "flip at {at}: {events:?}");
        flipped_at += 1;
    }
    assert_eq!(flipped_at, 200);
}

#[test]
fn keepalives_and_unknown_global_requests_get_failure() {
    let mut raw = raw_in_state(1);
    raw.auth_request("alice");
    let mut w = Writer::message(msg::GLOBAL_REQUEST);
    w.string(b"keepalive@openssh.com").bool(true);
    raw.client.send_packet(raw.now, packet(&w.finish()));
    while let Some(bytes) = raw.client.poll_transmit() {
        raw.server.handle_input(raw.now, &bytes);
    }
    let mut replies = Vec::new();
    while let Some(bytes) = raw.server.poll_transmit() {
        raw.client.handle_input(raw.now, &bytes);
    }
    while let Some(m) = raw.client.poll_message() {
        replies.push(m[0]);
    }
    assert!(replies.contains(&msg::REQUEST_FAILURE), "{replies:?}");
    assert!(!raw.server.is_closed());
}

#[test]
fn idle_pre_auth_connections_are_cut_at_the_login_grace_time() {
    let mut sessions: Vec<ServerSession> = (0..1000)
        .map(|i| {
            let mut s = ServerSession::new(
                SigningKey::from_bytes(&HOST_KEY),
                ServerConfig::default(),
                crate::rng::test_rng(i),
                Instant::ZERO,
            );
            s.handle_input(Instant::ZERO, b"SSH-2.0-idle\r\n");
            s
        })
        .collect();
    let deadline = sessions[0].poll_timeout().unwrap_or_else(|| panic!("no grace deadline"));
    assert_eq!(deadline, Instant::ZERO + Duration::from_secs(120));
    for s in &mut sessions {
        s.handle_timeout(deadline);
    }
    assert!(sessions.iter().all(ServerSession::is_closed));
    let mut timeouts = 0;
    for s in &mut sessions {
        if std::iter::from_fn(|| s.poll_event()).any(|e| matches!(e, SessionEvent::Closed(TransportError::Timeout(_))))
        {
            timeouts += 1;
        }
    }
    assert_eq!(timeouts, 1000);
}

#[test]
fn transport_events_stop_after_close() {
    let mut t = Transport::new(
        Role::Client { host_key: None },
        TransportConfig::default(),
        crate::rng::test_rng(1),
        Instant::ZERO,
    );
    while t.poll_transmit().is_some() {}
    t.handle_input(Instant::ZERO, b"SSH-2.0-x\r\n\0\0\0\0");
    assert!(t.is_closed());
    assert!(matches!(t.poll_event(), Some(TransportEvent::Closed(_))));
    t.handle_input(Instant::ZERO, b"more");
    assert!(t.poll_event().is_none());
}

#[test]
fn remote_forwarding_and_agent_channels_flow_from_server_to_client() {
    use super::channel::GlobalRequest;
    let mut pair = Pair::default_pair();
    pair.run();
    let (c, s) = pair.open_session();
    // ssh -R: the client asks the server to listen; the application answers with the port.
    pair.client
        .channels(pair.now)
        .global_request(&GlobalRequest::TcpipForward { address: "localhost".into(), port: 0 }, true);
    pair.client.channels(pair.now).global_request(&GlobalRequest::Other("keepalive@openssh.com".into()), true);
    pair.run();
    assert!(pair.server_events.contains(&SessionEvent::Connection(ConnectionEvent::GlobalRequest {
        request: GlobalRequest::TcpipForward { address: "localhost".into(), port: 0 },
        want_reply: true,
    })));
    // The keepalive was answered in order: after the forward, which waits for the app.
    assert!(!pair
        .client_events
        .iter()
        .any(|e| matches!(e, SessionEvent::Connection(ConnectionEvent::GlobalReply { .. }))));
    pair.server.channels(pair.now).unwrap_or_else(|| panic!("not authenticated")).global_reply(true, Some(40022));
    pair.run();
    let replies: Vec<&SessionEvent> = pair
        .client_events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Connection(ConnectionEvent::GlobalReply { .. })))
        .collect();
    assert_eq!(
        replies,
        [
            &SessionEvent::Connection(ConnectionEvent::GlobalReply { ok: true, port: Some(40022) }),
            &SessionEvent::Connection(ConnectionEvent::GlobalReply { ok: false, port: None })
        ]
    );
    // A connection arrives on the forwarded port: the server opens forwarded-tcpip.
    let kind = ChannelKind::ForwardedTcpip {
        address: "localhost".into(),
        port: 40022,
        originator: "127.0.0.1".into(),
        originator_port: 5555,
    };
    let forwarded = pair
        .server
        .channels(pair.now)
        .unwrap_or_else(|| panic!("not authenticated"))
        .open(&kind)
        .unwrap_or_else(|| panic!("limit"));
    // Agent forwarding: the client asks, the server opens auth-agent@openssh.com.
    pair.client.channels(pair.now).request(c, &ChannelRequest::AuthAgent, true);
    pair.run();
    assert!(pair.server_events.contains(&SessionEvent::Connection(ConnectionEvent::Request {
        channel: s,
        request: ChannelRequest::AuthAgent,
        want_reply: true
    })));
    let agent = pair
        .server
        .channels(pair.now)
        .unwrap_or_else(|| panic!("not authenticated"))
        .open(&ChannelKind::AuthAgent)
        .unwrap_or_else(|| panic!("limit"));
    pair.run();
    let offered: Vec<ChannelKind> = pair
        .client_events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Connection(ConnectionEvent::OpenRequest { kind, .. }) => Some(kind.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(offered, vec![kind, ChannelKind::AuthAgent]);
    for e in pair.client_events.clone() {
        if let SessionEvent::Connection(ConnectionEvent::OpenRequest { channel, .. }) = e {
            pair.client.channels(pair.now).accept(channel);
        }
    }
    pair.run();
    for id in [forwarded, agent] {
        assert!(pair.server_events.contains(&SessionEvent::Connection(ConnectionEvent::Opened { channel: id })));
    }
    // A client may not open forwarded-tcpip to the server, nor the server a session.
    let refused = pair.client.channels(pair.now).open(&ChannelKind::ForwardedTcpip {
        address: "x".into(),
        port: 1,
        originator: "y".into(),
        originator_port: 2,
    });
    pair.run();
    let refused = refused.unwrap_or_else(|| panic!("limit"));
    assert!(pair.client_events.iter().any(|e| matches!(e,
        SessionEvent::Connection(ConnectionEvent::OpenFailed { channel, reason: 1, .. }) if *channel == refused)));
}

#[test]
fn a_client_ext_info_after_newkeys_is_accepted_once() {
    // OpenSSH >= 9.6 sends EXT_INFO right after its first NEWKEYS when the server offers
    // ext-info-s.
    let mut raw = raw_in_state(0);
    let mut w = Writer::message(msg::EXT_INFO);
    w.u32(1).string(b"ext-info-in-auth@openssh.com").string(b"0");
    let ext_info = w.finish();
    raw.send(&ext_info);
    assert!(!raw.server.is_closed());
    raw.service_request();
    raw.auth_request("alice");
    assert!(raw.authenticated() && !raw.server.is_closed());
    // A second one is not a thing a client sends.
    let mut raw = raw_in_state(0);
    raw.send(&ext_info);
    raw.send(&ext_info);
    assert!(raw.server.is_closed());
}

#[test]
fn pipelined_requests_are_answered_in_order_unknown_ones_included() {
    let mut raw = raw_in_state(1);
    raw.auth_request("alice");
    raw.open_session();
    let mut exec = Writer::message(msg::CHANNEL_REQUEST);
    exec.u32(0).string(b"exec").bool(true).string(b"true");
    let mut x11 = Writer::message(msg::CHANNEL_REQUEST);
    x11.u32(0).string(b"x11-req").bool(true).bool(false).string(b"MIT-MAGIC-COOKIE-1").string(b"00").u32(0);
    let mut eow = Writer::message(msg::CHANNEL_REQUEST);
    eow.u32(0).string(b"eow@openssh.com").bool(true);
    // All three in one read, before the application has answered the first.
    raw.client.send_packet(raw.now, packet(&exec.finish()));
    raw.client.send_packet(raw.now, packet(&x11.finish()));
    raw.client.send_packet(raw.now, packet(&eow.finish()));
    while let Some(bytes) = raw.client.poll_transmit() {
        raw.server.handle_input(raw.now, &bytes);
    }
    let replies = |raw: &mut Raw| {
        while let Some(bytes) = raw.server.poll_transmit() {
            raw.client.handle_input(raw.now, &bytes);
        }
        let mut numbers = Vec::new();
        while let Some(m) = raw.client.poll_message() {
            numbers.push(m[0]);
        }
        numbers
    };
    // Nothing goes out before the exec is answered: the unknown ones wait their turn.
    assert_eq!(replies(&mut raw), Vec::<u8>::new());
    while let Some(event) = raw.server.poll_event() {
        answer(&mut raw.server, raw.now, &event, Decision::Accept);
    }
    assert_eq!(replies(&mut raw), vec![msg::CHANNEL_SUCCESS, msg::CHANNEL_FAILURE, msg::CHANNEL_FAILURE]);
    assert!(!raw.server.is_closed());
}

#[test]
fn a_key_exchange_that_never_finishes_times_out() {
    let mut t = Transport::new(
        Role::Client { host_key: None },
        TransportConfig::default(),
        crate::rng::test_rng(1),
        Instant::ZERO,
    );
    let deadline = t.poll_timeout().unwrap_or_else(|| panic!("no kex deadline"));
    assert_eq!(deadline, Instant::ZERO + super::transport::KEX_TIMEOUT);
    t.handle_timeout(deadline);
    assert!(t.is_closed());
    assert_eq!(t.poll_event(), Some(TransportEvent::Closed(TransportError::Timeout("key exchange"))));
}

#[test]
fn a_peer_that_provokes_replies_but_never_reads_is_cut_off() {
    let mut raw = raw_in_state(1);
    raw.auth_request("alice");
    while raw.server.poll_transmit().is_some() {}
    let mut w = Writer::message(msg::GLOBAL_REQUEST);
    w.string(b"keepalive@openssh.com").bool(true);
    let keepalive = w.finish();
    let mut sent = 0;
    while !raw.server.is_closed() && sent < 2_000_000 {
        for _ in 0..10_000 {
            raw.client.send_packet(raw.now, packet(&keepalive));
        }
        sent += 10_000;
        while let Some(bytes) = raw.client.poll_transmit() {
            raw.server.handle_input(raw.now, &bytes);
        }
        // The server's replies are never taken off its queue.
    }
    assert!(raw.server.is_closed(), "still open after {sent} unanswered keepalives");
    assert!(raw.server.pending_transmit() <= super::transport::MAX_QUEUED + 64 * 1024);
}

#[test]
fn unknown_messages_after_authentication_get_unimplemented_not_a_disconnect() {
    let mut raw = Raw::new(ServerConfig::default());
    raw.run();
    raw.service_request();
    raw.auth_request("alice");
    assert!(raw.authenticated());
    for number in [101u8, 128, 192, 255] {
        let (_, sent_before) = raw.server.transport().sequence_numbers();
        let (_, seq) = raw.client.sequence_numbers();
        raw.send(&[number, 1, 2, 3]);
        assert!(raw.closed_with().is_none(), "message {number} ended the session: {:?}", raw.closed_with());
        let (_, sent_after) = raw.server.transport().sequence_numbers();
        assert_eq!(sent_after, sent_before.wrapping_add(1), "one UNIMPLEMENTED for message {number} (seq {seq})");
    }
    // The connection protocol still works after them.
    raw.open_session();
    assert!(raw.server_events.iter().any(|e| matches!(
        e,
        SessionEvent::Connection(ConnectionEvent::OpenRequest { kind: ChannelKind::Session, .. })
    )));
}

#[test]
fn a_peers_disconnect_reason_is_escaped() {
    let mut raw = Raw::new(ServerConfig::default());
    raw.run();
    let mut w = Writer::message(msg::DISCONNECT);
    w.u32(11).string(b"bye\nJan 01 00:00:00 host sshd: Accepted for root\x1b[2J").string(b"");
    raw.send(&w.finish());
    match raw.closed_with() {
        Some(TransportError::PeerDisconnected(text)) => {
            assert!(!text.contains('\n') && !text.contains('\x1b'), "{text:?}");
            assert!(text.starts_with("bye\\n"));
        }
        other => panic!("{other:?}"),
    }
}

/// Channel data is handed up without a copy, as a slice of its packet: it must hold that
/// packet's memory only, not a receive buffer shared with the packets around it (held
/// data would pin whole buffers, far beyond what the windows allow).
#[test]
fn received_channel_data_holds_its_own_packet_only() {
    let mut pair = Pair::default_pair();
    pair.run();
    let (c, _s) = pair.open_session();
    pair.server_events.clear();
    for _ in 0..8 {
        assert_eq!(pair.client.channels(pair.now).write(c, &[7u8; 30_000]), 30_000);
    }
    // Everything arrives in one read, as it does from a TCP stack.
    let mut wire = Vec::new();
    while let Some(bytes) = pair.client.poll_transmit() {
        wire.extend_from_slice(&bytes);
    }
    pair.server.handle_input(pair.now, &wire);
    let mut data = Vec::new();
    while let Some(event) = pair.server.poll_event() {
        if let SessionEvent::Connection(ConnectionEvent::Data { data: d, .. }) = event {
            data.push(d);
        }
    }
    assert_eq!(data.iter().map(Bytes::len).sum::<usize>(), 240_000);
    for (i, d) in data.iter().enumerate() {
        assert!(d.len() >= 4096, "large data is not copied");
        assert!(d.is_unique(), "chunk {i} shares its memory with other packets or the receive buffer");
    }
}

/// A sent packet handed back carries the next channel data: the data path stops allocating
/// a buffer per packet once a few are in circulation.
#[test]
fn recycled_packets_carry_the_next_channel_data() {
    let mut pair = Pair::default_pair();
    pair.run();
    let (c, s) = pair.open_session();
    let mut seen = Vec::new();
    let mut reused = 0;
    for round in 0..20 {
        assert_eq!(pair.client.channels(pair.now).write(c, &[round as u8; 20_000]), 20_000);
        while let Some(packet) = pair.client.poll_transmit() {
            let at = packet.as_ptr() as usize;
            if seen.contains(&at) {
                reused += 1;
            }
            seen.push(at);
            pair.server.handle_input(pair.now, &packet);
            pair.client.recycle(packet);
        }
        pair.run();
        for e in pair.server_events.drain(..) {
            if let SessionEvent::Connection(ConnectionEvent::Data { data, .. }) = e {
                assert!(data.iter().all(|&b| b == round as u8), "recycled buffers carry only the new data");
                pair.server.channels(pair.now).unwrap_or_else(|| panic!("not authenticated")).consume(s, data.len());
            }
        }
    }
    assert!(reused >= 15, "sent packets' buffers reused: {reused} of {}", seen.len());
}

#[test]
fn a_writer_that_sizes_writes_by_the_window_hears_when_it_opens_again() {
    let client = ClientConfig { user: "alice".into(), host_key: Some(host_public()), ..Default::default() };
    let mut pair = Pair::new(client, ServerConfig::default(), Decision::Accept);
    pair.run();
    let (c, s) = pair.open_session();
    pair.server_events.clear();
    // Write exactly what the window takes (never a write cut short), then ask again: 0.
    let room = pair.server.channels(pair.now).map_or(0, |mut ch| ch.writable(s));
    assert!(room > 0);
    let data = vec![7u8; room];
    assert_eq!(pair.server.channels(pair.now).map_or(0, |mut ch| ch.write(s, &data)), room);
    assert_eq!(pair.server.channels(pair.now).map_or(1, |mut ch| ch.writable(s)), 0);
    pair.run();
    // The client takes the data and gives the window back: the server is told.
    let received: usize = pair
        .client_events
        .drain(..)
        .filter_map(|e| match e {
            SessionEvent::Connection(ConnectionEvent::Data { data, .. }) => Some(data.len()),
            _ => None,
        })
        .sum();
    assert_eq!(received, room);
    pair.client.channels(pair.now).consume(c, received);
    pair.run();
    assert!(
        pair.server_events.contains(&SessionEvent::Connection(ConnectionEvent::Writable { channel: s })),
        "{:?}",
        pair.server_events
    );
}

// --- Post-quantum hybrid key exchange (issue 13) ---

/// A client offering only `kex`, against the default server.
fn pair_with_kex(kex: &[&str]) -> Pair {
    let transport = TransportConfig { kex: kex.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let client = ClientConfig { user: "alice".into(), host_key: Some(host_public()), transport, ..Default::default() };
    Pair::new(client, ServerConfig::default(), Decision::Accept)
}

fn negotiated_kex(events: &[SessionEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        SessionEvent::Keyed { negotiated, .. } => Some(negotiated.kex.clone()),
        _ => None,
    })
}

#[test]
fn the_default_client_and_server_agree_on_mlkem768x25519() {
    let mut pair = Pair::default_pair();
    pair.run();
    assert!(pair.client.is_authenticated());
    assert_eq!(negotiated_kex(&pair.client_events).as_deref(), Some(KEX_MLKEM768X25519));
    assert_eq!(pair.server.transport().session_id().map(<[u8]>::len), Some(32));
}

#[test]
fn every_method_logs_in_moves_data_and_rekeys_keeping_the_session_id() {
    for name in KEX_METHODS {
        let mut pair = pair_with_kex(&[name]);
        pair.run();
        assert!(pair.client.is_authenticated() && pair.server.is_authenticated(), "{name}");
        assert_eq!(negotiated_kex(&pair.client_events).as_deref(), Some(name));
        assert_eq!(negotiated_kex(&pair.server_events).as_deref(), Some(name));
        let id = pair.client.transport().session_id().map(<[u8]>::to_vec);
        let expected_len = KexMethod::from_name(name).map(|m| m.hash().output_len());
        assert_eq!(id.as_ref().map(Vec::len), expected_len, "{name}");
        assert_eq!(id.as_deref(), pair.server.transport().session_id());
        let (c, s) = pair.open_session();
        bulk_both_ways(&mut pair, c, s, 100_000);
        for round in 1..=2 {
            pair.now += Duration::from_secs(3601);
            pair.server.handle_timeout(pair.now);
            pair.client.handle_timeout(pair.now);
            pair.run();
            assert_eq!((pair.client.transport().rekeys(), pair.server.transport().rekeys()), (round, round), "{name}");
            assert_eq!(pair.client.transport().session_id().map(<[u8]>::to_vec), id, "{name}: session id changed");
            assert_eq!(pair.server.transport().session_id().map(<[u8]>::to_vec), id);
            bulk_both_ways(&mut pair, c, s, 50_000);
        }
    }
}

#[test]
fn a_rekey_with_another_method_keeps_the_first_exchanges_session_id() {
    for (first, second) in [
        (KEX_SNTRUP761X25519, KEX_CURVE25519),
        (KEX_CURVE25519, KEX_SNTRUP761X25519_OPENSSH),
        (KEX_MLKEM768X25519, KEX_SNTRUP761X25519),
        (KEX_SNTRUP761X25519, KEX_MLKEM768X25519),
    ] {
        let now = Instant::from_micros(1);
        let transport = TransportConfig { kex: vec![first.into()], ..Default::default() };
        let mut raw = Raw::new(ServerConfig::default());
        raw.client = Transport::new(Role::Client { host_key: None }, transport, crate::rng::test_rng(3), now);
        raw.run();
        assert!(raw.client.is_keyed(), "{first}");
        let id = raw.client.session_id().map(<[u8]>::to_vec);
        let first_len = KexMethod::from_name(first).map(|m| m.hash().output_len());
        assert_eq!(id.as_ref().map(Vec::len), first_len);
        raw.client.set_kex_methods(&[second]);
        raw.now += Duration::from_secs(3601);
        raw.client.handle_timeout(raw.now);
        raw.run();
        assert_eq!(raw.client.rekeys(), 1, "{first} then {second}");
        assert_eq!(raw.client.negotiated().map(|n| n.kex.as_str()), Some(second));
        assert_eq!(raw.server.transport().negotiated().map(|n| n.kex.as_str()), Some(second));
        assert_eq!(raw.client.session_id().map(<[u8]>::to_vec), id);
        assert_eq!(raw.server.transport().session_id().map(<[u8]>::to_vec), id);
        // The new keys agree: the login goes on under them.
        raw.service_request();
        raw.auth_request("alice");
        assert!(raw.authenticated() && !raw.server.is_closed(), "{first} then {second}: {:?}", raw.closed_with());
    }
}

/// The server after a client KEXINIT offering `kex` first, and a KEX_ECDH_INIT of `q_c`:
/// the error it closed with.
fn server_given_init(kex: &str, q_c: &[u8]) -> Option<TransportError> {
    let mut init = KexInit::client([1; 16]);
    init.kex.insert(0, kex.to_string());
    let mut w = Writer::message(msg::KEX_ECDH_INIT);
    w.string(q_c);
    let mut s = server_fed(&[&init.encode(), &w.finish()]);
    assert!(s.is_closed(), "{kex}: a bad init of {} bytes was accepted", q_c.len());
    std::iter::from_fn(|| s.poll_event()).find_map(|e| match e {
        SessionEvent::Closed(error) => Some(error),
        _ => None,
    })
}

#[test]
fn bad_hybrid_inits_disconnect_cleanly() {
    let mut rng = crate::rng::test_rng(40);
    for name in [KEX_MLKEM768X25519, KEX_SNTRUP761X25519, KEX_SNTRUP761X25519_OPENSSH, KEX_CURVE25519] {
        let method = KexMethod::from_name(name).unwrap_or_else(|| panic!("{name}"));
        let good = ClientKex::start(method, &mut rng).public().to_vec();
        let n = good.len();
        for len in [0, 32, 1190, 1216, n - 1, n + 1].into_iter().filter(|&l| l != n) {
            let error = server_given_init(name, &vec![9u8; len]);
            assert!(matches!(error, Some(TransportError::Kex(KexError::BadLength { .. }))), "{name} {len}: {error:?}");
        }
        let mut zero_x25519 = good.clone();
        zero_x25519[n - 32..].fill(0);
        assert_eq!(server_given_init(name, &zero_x25519), Some(TransportError::Kex(KexError::ZeroSecret)), "{name}");
    }
    let mut bad_key = ClientKex::start(KexMethod::MlKem768X25519Sha256, &mut rng).public().to_vec();
    bad_key[..2].copy_from_slice(&[0xff, 0xff]);
    let error = server_given_init(KEX_MLKEM768X25519, &bad_key);
    assert_eq!(error, Some(TransportError::Kex(KexError::InvalidMlKemKey)));
    assert_eq!(error.map(|e| e.reason_code()), Some(3), "KEY_EXCHANGE_FAILED");
}

#[test]
fn a_reply_for_another_method_disconnects_the_client_cleanly() {
    let mut rng = crate::rng::test_rng(41);
    let host_key = SigningKey::from_bytes(&HOST_KEY);
    for (ours, theirs) in [
        (KEX_MLKEM768X25519, KexMethod::Curve25519Sha256),
        (KEX_MLKEM768X25519, KexMethod::Sntrup761X25519Sha512),
        (KEX_SNTRUP761X25519, KexMethod::MlKem768X25519Sha256),
        (KEX_CURVE25519, KexMethod::MlKem768X25519Sha256),
    ] {
        let transport = TransportConfig { kex: vec![ours.into()], ..Default::default() };
        let mut client =
            Transport::new(Role::Client { host_key: None }, transport, crate::rng::test_rng(5), Instant::ZERO);
        // A server reply made for `theirs`, signed properly over some hash.
        let other = ClientKex::start(theirs, &mut rng);
        let (q_s, _) = server_respond(theirs, other.public(), &mut rng).unwrap_or_else(|e| panic!("{e}"));
        let mut reply = Writer::message(msg::KEX_ECDH_REPLY);
        let signature = ed25519_dalek::Signer::sign(&host_key, &[0u8; 32]);
        reply
            .string(&super::transport::host_key_blob(&host_key))
            .string(&q_s)
            .string(&super::transport::ed25519_signature_blob(&signature));
        let mut input = b"SSH-2.0-raw\r\n".to_vec();
        for (i, m) in [KexInit::server([2; 16]).encode().to_vec(), reply.finish().to_vec()].iter().enumerate() {
            let mut p = packet(m);
            frame_plain_packet(&mut p, &mut crate::rng::test_rng(i as u64 + 7));
            input.extend_from_slice(&p);
        }
        client.handle_input(Instant::ZERO, &input);
        assert!(client.is_closed(), "{ours} accepted a {theirs:?} reply");
        let error = std::iter::from_fn(|| client.poll_event()).find_map(|e| match e {
            TransportEvent::Closed(error) => Some(error),
            _ => None,
        });
        assert!(matches!(error, Some(TransportError::Kex(KexError::BadLength { .. }))), "{ours}: {error:?}");
    }
}
