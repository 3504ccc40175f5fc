//! The control protocol's secure channel: Noise IK over length-prefixed records, carrying
//! length-prefixed application messages (the wire format is in the [module doc](super)).
//!
//! [`ChannelClient`] is the node's side (the initiator, holding the machine key and the
//! pinned server key), [`ChannelServer`] the coordination server's (the responder). Both are
//! the same machine underneath, sans-IO: [`handle_input`](ChannelClient::handle_input)
//! takes bytes read from the connection in any chunking, [`poll_transmit`](ChannelClient::poll_transmit)
//! hands out bytes to write, [`poll_message`](ChannelClient::poll_message) received messages,
//! and [`send_message`](ChannelClient::send_message) seals one.
//!
//! Memory is bounded by the protocol, not by the peer: the receive side holds at most one
//! record (65 537 bytes with its prefix; a large record's buffer is freed once it has been
//! read, so an idle channel keeps at most 4 KiB) and the message being assembled, which grows only
//! as its bytes arrive (an announced length costs nothing until it is sent) and never past
//! the configured maximum. Each record completes at most one message, so a read of `n`
//! bytes queues at most `n / 19` messages for [`poll_message`](ChannelClient::poll_message),
//! which the driver drains after every input.
//!
//! Secrets: the static private key lives in the handshake's X25519 objects and is wiped with
//! them; the transport keys are wiped on drop (chacha20poly1305 does), and so is the copy the
//! split hands over. snow 0.10 itself does not wipe its chaining key and handshake hash (as
//! for WireGuard's handshakes, see `wireguard::noise`); the handshake state is dropped as
//! soon as the handshake ends.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Tag};
use snow::params::NoiseParams;
use snow::HandshakeState;
use thiserror::Error;
use zeroize::ZeroizeOnDrop;

use crate::rng::Rng;
use crate::wireguard::keys::{PrivateKey, PublicKey};
use crate::wireguard::noise;

/// The Noise protocol of the channel.
pub const NOISE_PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The Noise prologue: both sides mix it in, so a handshake of another protocol fails.
pub const PROLOGUE: &[u8] = b"meshcontrol v1";
/// The control protocol version, sent in both handshake payloads.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest record body (one Noise message).
pub const MAX_RECORD_LEN: usize = u16::MAX as usize;
/// Length of the AEAD tag that ends every transport record.
pub const TAG_LEN: usize = 16;
/// Most plaintext bytes in one transport record.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD_LEN - TAG_LEN;
/// The length prefix of an application message.
pub const MESSAGE_HEADER_LEN: usize = 4;
/// Default maximum application message: 8 MiB.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 8 << 20;
/// The hard cap on [`ChannelConfig::max_message_len`]: 64 MiB.
pub const MAX_MESSAGE_LEN_CAP: usize = 64 << 20;

/// Record prefix and overhead: the receive side holds no more than one record.
const RECORD_PREFIX_LEN: usize = 2;
/// Record buffers up to this capacity are kept between records; larger ones are freed.
const KEPT_RECORD_CAPACITY: usize = 4096;
/// IK message 1 with a 1-byte payload: e (32), s (32 + 16), payload (1 + 16).
const MESSAGE1_LEN: usize = 97;
/// IK message 2 with a 1-byte payload: e (32), payload (1 + 16).
const MESSAGE2_LEN: usize = 49;

/// Limits of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Largest application message sent or accepted, in bytes. Values above
    /// [`MAX_MESSAGE_LEN_CAP`] are taken as the cap.
    pub max_message_len: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self { max_message_len: DEFAULT_MAX_MESSAGE_LEN }
    }
}

/// Why the channel failed, or why a call was refused.
///
/// Every error of the received stream and [`ChannelError::NonceExhausted`] are fatal: the
/// channel keeps the error and returns it from every later `handle_input` and
/// `send_message`, drops its keys and unsent output, and sends nothing more (messages that
/// verified before the error can still be polled). [`ChannelError::OutgoingTooLarge`] and
/// [`ChannelError::NotEstablished`] refuse one call and change nothing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChannelError {
    #[error("a record announced a length of 0")]
    ZeroLengthRecord,
    #[error("Noise handshake message {message} did not verify ({reason})")]
    Handshake { message: u8, reason: String },
    #[error("Noise handshake message {message} carries a {len}-byte payload, not a 1-byte version")]
    HandshakePayload { message: u8, len: usize },
    #[error("the peer speaks control protocol version {0}; this side speaks version {PROTOCOL_VERSION} only")]
    UnsupportedVersion(u8),
    #[error("the Noise handshake could not be set up: {0}")]
    Setup(String),
    #[error("a transport record of {len} bytes did not decrypt")]
    Decrypt { len: usize },
    #[error("a transport record carries no plaintext")]
    EmptyRecord,
    #[error("a transport record carries bytes past the end of its message")]
    RecordCrossesMessage,
    #[error("the peer announced a message of {len} bytes; the maximum is {max}")]
    IncomingTooLarge { len: usize, max: usize },
    #[error("a message of {len} bytes cannot be sent; the maximum is {max}")]
    OutgoingTooLarge { len: usize, max: usize },
    #[error("the channel is not established yet")]
    NotEstablished,
    #[error("the transport nonces are used up")]
    NonceExhausted,
    #[error("sealing a record failed")]
    Seal,
}

impl ChannelError {
    /// Whether the channel is dead after this error (every error but the two refusals of
    /// one `send_message`).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, ChannelError::OutgoingTooLarge { .. } | ChannelError::NotEstablished)
    }
}

/// The node's side of the channel: the Noise initiator.
pub struct ChannelClient {
    channel: Channel,
    server_key: PublicKey,
}

impl fmt::Debug for ChannelClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelClient").field("server_key", &self.server_key).field("channel", &self.channel).finish()
    }
}

impl ChannelClient {
    /// A channel to the server whose static key is `server_key` (pinned: the handshake
    /// fails with any other), authenticated by the node's `machine_key`. The ephemeral key
    /// comes from `rng`. Record 1 is ready in [`Self::poll_transmit`] at once.
    pub fn new(
        machine_key: PrivateKey,
        server_key: PublicKey,
        rng: &mut Rng,
        config: ChannelConfig,
    ) -> Result<Self, ChannelError> {
        let private = Arc::new(machine_key);
        let mut handshake = noise::builder(params()?, private.clone(), rng)
            .local_private_key(private.as_bytes())
            .and_then(|b| b.remote_public_key(&server_key.0))
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_initiator())
            .map_err(setup)?;
        let mut message = [0u8; MESSAGE1_LEN];
        // Fails for a low-order server key (its DH result is all zeros).
        let n = handshake.write_message(&[PROTOCOL_VERSION], &mut message).map_err(setup)?;
        let mut channel = Channel::new(Role::Client, handshake, config);
        channel.push_record(message.get(..n).unwrap_or_default());
        Ok(Self { channel, server_key })
    }

    /// Bytes read from the connection (after the upgrade), in any chunking. An error is
    /// fatal.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), ChannelError> {
        self.channel.handle_input(bytes)
    }

    /// Seal one application message. Before the handshake has finished it is queued and
    /// sent right after it, in order.
    pub fn send_message(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        self.channel.send_message(payload)
    }

    /// The next received application message.
    pub fn poll_message(&mut self) -> Option<Bytes> {
        self.channel.received.pop_front()
    }

    /// Bytes to write to the connection, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.channel.poll_transmit()
    }

    /// Whether the handshake has finished (and the channel has not failed).
    pub fn is_established(&self) -> bool {
        self.channel.is_established()
    }

    /// The error that killed the channel, if one did.
    pub fn error(&self) -> Option<&ChannelError> {
        self.channel.error()
    }

    /// The pinned server key.
    pub fn server_key(&self) -> PublicKey {
        self.server_key
    }
}

/// The coordination server's side of one channel: the Noise responder.
pub struct ChannelServer {
    channel: Channel,
}

impl fmt::Debug for ChannelServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelServer").field("channel", &self.channel).finish()
    }
}

impl ChannelServer {
    /// A channel that waits for a node's record 1, answering with `server_key`. The
    /// ephemeral key comes from `rng`.
    pub fn new(server_key: PrivateKey, rng: &mut Rng, config: ChannelConfig) -> Result<Self, ChannelError> {
        let private = Arc::new(server_key);
        let handshake = noise::builder(params()?, private.clone(), rng)
            .local_private_key(private.as_bytes())
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_responder())
            .map_err(setup)?;
        Ok(Self { channel: Channel::new(Role::Server, handshake, config) })
    }

    /// Bytes read from the connection (after the upgrade), in any chunking. Message 1 is
    /// answered at once with message 2 (in [`Self::poll_transmit`]). An error is fatal.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), ChannelError> {
        self.channel.handle_input(bytes)
    }

    /// Seal one application message; [`ChannelError::NotEstablished`] before message 1 has
    /// been read.
    pub fn send_message(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        self.channel.send_message(payload)
    }

    /// The next received application message.
    pub fn poll_message(&mut self) -> Option<Bytes> {
        self.channel.received.pop_front()
    }

    /// Bytes to write to the connection, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.channel.poll_transmit()
    }

    /// Whether the handshake has finished (and the channel has not failed).
    pub fn is_established(&self) -> bool {
        self.channel.is_established()
    }

    /// The error that killed the channel, if one did.
    pub fn error(&self) -> Option<&ChannelError> {
        self.channel.error()
    }

    /// The node's machine key, once its message 1 has verified (kept if the channel
    /// failed later, for the log). Whether the server knows this key is for the server
    /// state machine to decide.
    pub fn remote_static(&self) -> Option<PublicKey> {
        self.channel.remote_static
    }
}

fn params() -> Result<NoiseParams, ChannelError> {
    NOISE_PATTERN.parse().map_err(setup)
}

fn setup(e: snow::Error) -> ChannelError {
    ChannelError::Setup(e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

enum State {
    Handshake(Box<HandshakeState>),
    Established(Transport),
    Failed(ChannelError),
}

/// The two directions' keys and nonces after the handshake. Wiped on drop
/// (chacha20poly1305 wipes its key).
#[derive(ZeroizeOnDrop)]
struct Transport {
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
    #[zeroize(skip)]
    send_nonce: u64,
    #[zeroize(skip)]
    recv_nonce: u64,
}

/// Noise's ChaChaPoly nonce: 4 zero bytes, then the counter in little-endian.
fn nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// An application message being received: its announced length and the payload so far.
struct Incoming {
    len: usize,
    payload: Vec<u8>,
}

/// The machine both roles share.
struct Channel {
    role: Role,
    state: State,
    max_message_len: usize,
    remote_static: Option<PublicKey>,
    /// The record being read: its 2-byte prefix, then its body (at most one record).
    record: BytesMut,
    /// The length prefix of the next message, while it is incomplete (it may straddle
    /// records).
    header: [u8; MESSAGE_HEADER_LEN],
    header_len: usize,
    incoming: Option<Incoming>,
    received: VecDeque<Bytes>,
    /// The client's messages sent before the handshake finished.
    queued: VecDeque<Bytes>,
    /// Sealed records not yet handed out.
    out: BytesMut,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Handshake(_) => "handshake",
            State::Established(_) => "established",
            State::Failed(_) => "failed",
        };
        f.debug_struct("Channel")
            .field("role", &self.role)
            .field("state", &state)
            .field("error", &self.error())
            .field("remote_static", &self.remote_static)
            .field("max_message_len", &self.max_message_len)
            .field("record_buffered", &self.record.len())
            .field("incoming", &self.incoming.as_ref().map(|m| (m.payload.len(), m.len)))
            .field("received", &self.received.len())
            .field("queued", &self.queued.len())
            .field("out", &self.out.len())
            .finish()
    }
}

impl Channel {
    fn new(role: Role, handshake: HandshakeState, config: ChannelConfig) -> Self {
        Self {
            role,
            state: State::Handshake(Box::new(handshake)),
            max_message_len: config.max_message_len.min(MAX_MESSAGE_LEN_CAP),
            remote_static: None,
            record: BytesMut::new(),
            header: [0; MESSAGE_HEADER_LEN],
            header_len: 0,
            incoming: None,
            received: VecDeque::new(),
            queued: VecDeque::new(),
            out: BytesMut::new(),
        }
    }

    fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    fn error(&self) -> Option<&ChannelError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// Kill the channel: keep `error`, free the buffers, drop the keys.
    fn fail(&mut self, error: ChannelError) -> ChannelError {
        self.state = State::Failed(error.clone());
        self.record = BytesMut::new();
        self.incoming = None;
        self.queued.clear();
        self.out = BytesMut::new();
        error
    }

    /// Frame `body` as one record into the output.
    fn push_record(&mut self, body: &[u8]) {
        self.out.reserve(RECORD_PREFIX_LEN + body.len());
        self.out.put_u16(body.len() as u16);
        self.out.extend_from_slice(body);
    }

    fn handle_input(&mut self, mut bytes: &[u8]) -> Result<(), ChannelError> {
        if let Some(e) = self.error() {
            return Err(e.clone());
        }
        loop {
            let need = match self.record.get(..RECORD_PREFIX_LEN) {
                None => RECORD_PREFIX_LEN,
                Some(prefix) => {
                    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
                    if len == 0 {
                        return Err(self.fail(ChannelError::ZeroLengthRecord));
                    }
                    RECORD_PREFIX_LEN + len
                }
            };
            if self.record.len() == need && need > RECORD_PREFIX_LEN {
                let mut record = std::mem::take(&mut self.record);
                let result = self.handle_record(record.get_mut(RECORD_PREFIX_LEN..).unwrap_or_default());
                record.clear();
                // Keep a small buffer for the next record, not a big one: a server holds
                // thousands of mostly idle channels.
                if record.capacity() <= KEPT_RECORD_CAPACITY {
                    self.record = record;
                }
                if let Err(e) = result {
                    return Err(self.fail(e));
                }
                continue;
            }
            if bytes.is_empty() {
                return Ok(());
            }
            let take = (need - self.record.len()).min(bytes.len());
            let (now, later) = bytes.split_at(take);
            // Room for this record only (at most 65 537 bytes), kept for the next ones.
            self.record.reserve(need - self.record.len());
            self.record.extend_from_slice(now);
            bytes = later;
        }
    }

    /// One complete record body.
    fn handle_record(&mut self, body: &mut [u8]) -> Result<(), ChannelError> {
        match &mut self.state {
            State::Handshake(handshake) => match self.role {
                Role::Server => self.read_message1(body),
                Role::Client => {
                    let version = read_handshake(handshake, body, 2)?;
                    check_version(version)?;
                    self.establish()?;
                    while let Some(payload) = self.queued.pop_front() {
                        self.seal_message(&payload)?;
                    }
                    Ok(())
                }
            },
            State::Established(transport) => {
                let plaintext = open(transport, body)?;
                self.assemble(plaintext)
            }
            State::Failed(e) => Err(e.clone()),
        }
    }

    /// The server reads the node's message 1 and answers with message 2.
    fn read_message1(&mut self, body: &[u8]) -> Result<(), ChannelError> {
        let State::Handshake(handshake) = &mut self.state else { return Err(ChannelError::NotEstablished) };
        let version = read_handshake(handshake, body, 1)?;
        self.remote_static =
            handshake.get_remote_static().and_then(|key| <[u8; 32]>::try_from(key).ok()).map(PublicKey);
        check_version(version)?;
        let mut message = [0u8; MESSAGE2_LEN];
        let n = handshake.write_message(&[PROTOCOL_VERSION], &mut message).map_err(setup)?;
        self.push_record(message.get(..n).unwrap_or_default());
        self.establish()
    }

    /// Trade the finished handshake for transport keys.
    fn establish(&mut self) -> Result<(), ChannelError> {
        let State::Handshake(handshake) = &mut self.state else { return Err(ChannelError::NotEstablished) };
        if !handshake.is_handshake_finished() {
            return Err(ChannelError::Setup("the handshake did not finish".into()));
        }
        let (initiator_to_responder, responder_to_initiator) = noise::split(handshake);
        let (send, recv) = match self.role {
            Role::Client => (initiator_to_responder, responder_to_initiator),
            Role::Server => (responder_to_initiator, initiator_to_responder),
        };
        self.state = State::Established(Transport {
            send: ChaCha20Poly1305::new((&*send).into()),
            recv: ChaCha20Poly1305::new((&*recv).into()),
            send_nonce: 0,
            recv_nonce: 0,
        });
        Ok(())
    }

    /// Take one record's plaintext into the message being assembled.
    fn assemble(&mut self, mut plaintext: &[u8]) -> Result<(), ChannelError> {
        if plaintext.is_empty() {
            return Err(ChannelError::EmptyRecord);
        }
        while !plaintext.is_empty() {
            let complete = match &mut self.incoming {
                None => {
                    let take = (MESSAGE_HEADER_LEN - self.header_len).min(plaintext.len());
                    let (now, later) = plaintext.split_at(take);
                    self.header[self.header_len..self.header_len + take].copy_from_slice(now);
                    self.header_len += take;
                    plaintext = later;
                    if self.header_len < MESSAGE_HEADER_LEN {
                        return Ok(());
                    }
                    self.header_len = 0;
                    let len = u32::from_be_bytes(self.header) as usize;
                    if len > self.max_message_len {
                        return Err(ChannelError::IncomingTooLarge { len, max: self.max_message_len });
                    }
                    if len == 0 {
                        self.received.push_back(Bytes::new());
                        true
                    } else {
                        self.incoming = Some(Incoming { len, payload: Vec::new() });
                        false
                    }
                }
                Some(incoming) => {
                    let take = (incoming.len - incoming.payload.len()).min(plaintext.len());
                    let (now, later) = plaintext.split_at(take);
                    let have = incoming.payload.len() + take;
                    if have > incoming.payload.capacity() {
                        // Grow with what arrives, doubling, never past the announced length.
                        let target = have.max(incoming.payload.capacity() * 2).min(incoming.len);
                        incoming.payload.reserve_exact(target - incoming.payload.len());
                    }
                    incoming.payload.extend_from_slice(now);
                    plaintext = later;
                    if incoming.payload.len() == incoming.len {
                        let payload = std::mem::take(&mut incoming.payload);
                        self.received.push_back(Bytes::from(payload));
                        self.incoming = None;
                        true
                    } else {
                        false
                    }
                }
            };
            if complete && !plaintext.is_empty() {
                return Err(ChannelError::RecordCrossesMessage);
            }
        }
        Ok(())
    }

    fn send_message(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        if let Some(e) = self.error() {
            return Err(e.clone());
        }
        if payload.len() > self.max_message_len {
            return Err(ChannelError::OutgoingTooLarge { len: payload.len(), max: self.max_message_len });
        }
        match (&self.state, self.role) {
            (State::Established(_), _) => self.seal_message(payload).map_err(|e| self.fail(e)),
            (_, Role::Client) => {
                self.queued.push_back(Bytes::copy_from_slice(payload));
                Ok(())
            }
            (_, Role::Server) => Err(ChannelError::NotEstablished),
        }
    }

    /// Seal one message (at most the maximum) into as many records as it takes.
    fn seal_message(&mut self, payload: &[u8]) -> Result<(), ChannelError> {
        let State::Established(transport) = &mut self.state else { return Err(ChannelError::NotEstablished) };
        let plaintext_len = MESSAGE_HEADER_LEN + payload.len();
        let records = plaintext_len.div_ceil(MAX_RECORD_PLAINTEXT);
        // Nonce 2^64 - 1 is reserved (Noise, section 5.1).
        if transport.send_nonce.checked_add(records as u64).is_none() {
            return Err(ChannelError::NonceExhausted);
        }
        self.out.reserve(plaintext_len + records * (RECORD_PREFIX_LEN + TAG_LEN));
        let mut header = Some((payload.len() as u32).to_be_bytes());
        let mut rest = payload;
        loop {
            let room = MAX_RECORD_PLAINTEXT - header.map_or(0, |h| h.len());
            let (chunk, later) = rest.split_at(rest.len().min(room));
            let record_plaintext = chunk.len() + header.map_or(0, |h| h.len());
            self.out.put_u16((record_plaintext + TAG_LEN) as u16);
            let start = self.out.len();
            if let Some(h) = header.take() {
                self.out.extend_from_slice(&h);
            }
            self.out.extend_from_slice(chunk);
            let counter = transport.send_nonce;
            transport.send_nonce += 1;
            let tag = transport
                .send
                .encrypt_in_place_detached(&nonce(counter), &[], self.out.get_mut(start..).unwrap_or_default())
                // Fails only for plaintexts beyond 256 GiB; ours are at most 64 KiB.
                .map_err(|_| ChannelError::Seal)?;
            self.out.extend_from_slice(&tag);
            rest = later;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    #[cfg(test)]
    fn seal_raw_record(&mut self, plaintext: &[u8]) {
        let State::Established(transport) = &mut self.state else { panic!("not established") };
        let mut body = plaintext.to_vec();
        let tag = transport.send.encrypt_in_place_detached(&nonce(transport.send_nonce), &[], &mut body);
        let tag = tag.unwrap_or_else(|e| panic!("{e}"));
        transport.send_nonce += 1;
        body.extend_from_slice(&tag);
        self.push_record(&body);
    }
}

/// Read one handshake message; its payload must be the 1-byte version.
fn read_handshake(handshake: &mut HandshakeState, body: &[u8], message: u8) -> Result<u8, ChannelError> {
    let mut payload = vec![0u8; body.len()];
    let n = handshake
        .read_message(body, &mut payload)
        .map_err(|e| ChannelError::Handshake { message, reason: e.to_string() })?;
    match payload.get(..n) {
        Some(&[version]) => Ok(version),
        _ => Err(ChannelError::HandshakePayload { message, len: n }),
    }
}

fn check_version(version: u8) -> Result<(), ChannelError> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ChannelError::UnsupportedVersion(version))
    }
}

/// Decrypt one transport record in place; its plaintext on success.
fn open<'a>(transport: &mut Transport, body: &'a mut [u8]) -> Result<&'a [u8], ChannelError> {
    let len = body.len();
    let Some(tag_at) = len.checked_sub(TAG_LEN) else { return Err(ChannelError::Decrypt { len }) };
    let counter = transport.recv_nonce;
    if counter == u64::MAX {
        return Err(ChannelError::NonceExhausted);
    }
    let (plaintext, tag) = body.split_at_mut(tag_at);
    let tag = Tag::clone_from_slice(tag);
    transport
        .recv
        .decrypt_in_place_detached(&nonce(counter), &[], plaintext, &tag)
        .map_err(|_| ChannelError::Decrypt { len })?;
    transport.recv_nonce += 1;
    Ok(plaintext)
}

#[cfg(test)]
impl ChannelClient {
    /// Seal `plaintext` as one record as it is, to forge framing the API never produces.
    pub(super) fn seal_raw_record(&mut self, plaintext: &[u8]) {
        self.channel.seal_raw_record(plaintext)
    }
}

#[cfg(test)]
impl ChannelServer {
    /// Seal `plaintext` as one record as it is, to forge framing the API never produces.
    pub(super) fn seal_raw_record(&mut self, plaintext: &[u8]) {
        self.channel.seal_raw_record(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hygiene::assert_zod;

    #[test]
    fn transport_keys_are_wiped_on_drop() {
        assert_zod::<Transport>();
    }
}
