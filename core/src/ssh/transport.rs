//! The SSH transport (RFC 4253) for both roles: identification exchange, KEXINIT,
//! mlkem768x25519-sha256, sntrup761x25519-sha512 or curve25519-sha256 (see [`super::kex`])
//! with an ssh-ed25519 host key, NEWKEYS (strict KEX: sequence numbers
//! reset at every NEWKEYS), packet protection, and rekeying started by either side after
//! [`TransportConfig::rekey_bytes`] or [`TransportConfig::rekey_interval`] per direction.
//!
//! Bytes in ([`Transport::handle_input`]), bytes out ([`Transport::poll_transmit`]),
//! messages for the layers above (authentication, connection) out through
//! [`Transport::poll_message`], and their messages in through [`Transport::send_packet`].
//! While a key exchange runs, the layers above keep sending: their packets are held until
//! our NEWKEYS is out, and the peer's are delivered until its KEXINIT arrives (after that,
//! until its NEWKEYS, only key-exchange messages are valid).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use thiserror::Error;

use super::cipher::{CipherError, PacketCipher, TAG_LEN};
use super::kex::{
    derive, exchange_hash, server_respond, ClientKex, HashInputs, KexError, KexMethod, SharedSecret, KEX_METHODS,
};
use super::kexinit::{
    negotiate, KexInit, NegotiateError, Negotiated, CIPHERS, EXT_INFO_CLIENT, EXT_INFO_SERVER, HOST_KEY_ED25519,
    STRICT_KEX_CLIENT, STRICT_KEX_SERVER,
};
use super::msg;
use super::packet::{frame_plain_packet, parse_plain, PacketError};
use super::version::{VersionError, VersionReader, OUR_IDENTIFICATION};
use super::wire::{peer_text, Reader, WireError, Writer};
use crate::rng::Rng;
use crate::time::Instant;

/// Why the connection ends.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    #[error("identification: {0}")]
    Version(#[from] VersionError),
    #[error("packet: {0}")]
    Packet(#[from] PacketError),
    #[error("decryption: {0}")]
    Cipher(#[from] CipherError),
    #[error("message: {0}")]
    Wire(#[from] WireError),
    #[error("negotiation: {0}")]
    Negotiate(#[from] NegotiateError),
    #[error("key exchange: {0}")]
    Kex(#[from] KexError),
    #[error("host key signature invalid")]
    BadSignature,
    #[error("host key does not match the expected key")]
    HostKeyMismatch,
    #[error("message {0} not allowed in this state")]
    Unexpected(u8),
    #[error("{0}")]
    Protocol(&'static str),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("peer disconnected: {0}")]
    PeerDisconnected(String),
    #[error("closed by the application: {0}")]
    Application(String),
}

impl TransportError {
    /// The DISCONNECT reason code (RFC 4253 section 11.1) for this error.
    pub fn reason_code(&self) -> u32 {
        match self {
            TransportError::Cipher(CipherError::Mac) => 5,
            TransportError::Negotiate(_) | TransportError::Kex(_) => 3,
            TransportError::BadSignature | TransportError::HostKeyMismatch => 9,
            TransportError::Version(_) => 8,
            TransportError::Application(_) | TransportError::Timeout(_) => 11,
            _ => 2,
        }
    }
}

/// Limits and choices of one connection.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Rekey after this many bytes in either direction (OpenSSH's default is about 1 GiB
    /// for these ciphers).
    pub rekey_bytes: u64,
    /// Rekey after this long.
    pub rekey_interval: Duration,
    /// Ciphers offered, preferred first (a subset of [`CIPHERS`]).
    pub ciphers: Vec<String>,
    /// Key exchange methods offered, preferred first (a subset of [`KEX_METHODS`]; other
    /// names are left out).
    pub kex: Vec<String>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            rekey_bytes: 1 << 30,
            rekey_interval: Duration::from_secs(3600),
            ciphers: CIPHERS.iter().map(|c| c.to_string()).collect(),
            kex: KEX_METHODS.iter().map(|c| c.to_string()).collect(),
        }
    }
}

/// Sent packets kept for reuse, at most (about 1 MiB of 32 KiB packets).
const SPARE_BUFFERS: usize = 32;
/// Buffers smaller than this are not worth keeping.
const SPARE_MIN: usize = 4096;

/// A key exchange must finish within this long once started.
pub const KEX_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes queued for a peer (sent or held) beyond which the peer is taken to have stopped
/// reading while it keeps provoking replies: the connection ends instead of growing.
pub const MAX_QUEUED: usize = 16 * 1024 * 1024;

/// Which side we are, and what that side needs.
pub enum Role {
    Server {
        host_key: SigningKey,
    },
    /// `host_key`: the server key we expect; `None` accepts any key and reports it in
    /// [`TransportEvent::Keyed`] for the application to check.
    Client {
        host_key: Option<[u8; 32]>,
    },
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Server { .. } => "Server",
            Role::Client { .. } => "Client",
        })
    }
}

/// What the layer above must know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// The first key exchange finished: keys are in use both ways.
    /// (The session id is [`Transport::session_id`].)
    Keyed { negotiated: Negotiated, host_key: [u8; 32] },
    /// A later key exchange finished.
    Rekeyed,
    /// The connection is over (an error, ours or the peer's DISCONNECT).
    Closed(TransportError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Version,
    Running,
    Closed,
}

/// One key exchange in progress.
struct Kex {
    ours: Bytes,
    theirs: Option<Bytes>,
    negotiated: Option<Negotiated>,
    /// The client's ephemeral keys, from its KEX_ECDH_INIT until the reply.
    ephemeral: Option<ClientKex>,
    /// The peer guessed the key exchange wrongly: its next kex packet is ignored.
    ignore_next: bool,
    sent_newkeys: bool,
    next_in: Option<PacketCipher>,
}

/// One connection's transport, either role.
pub struct Transport {
    role: Role,
    config: TransportConfig,
    rng: Rng,
    state: State,
    version: VersionReader,
    peer_id: Vec<u8>,
    kex: Option<Kex>,
    /// Strict KEX was negotiated in the first exchange (it holds for the connection).
    strict: bool,
    /// The peer's first NEWKEYS arrived: the first exchange is complete.
    keyed: bool,
    /// The first exchange's H: 32 or 64 bytes by its method, kept across rekeys whatever
    /// method they use.
    session_id: Option<Vec<u8>>,
    negotiated: Option<Negotiated>,
    peer_host_key: Option<[u8; 32]>,
    cipher_in: Option<PacketCipher>,
    cipher_out: Option<PacketCipher>,
    seq_in: u32,
    seq_out: u32,
    /// The packet being received.
    incoming: Incoming,
    out: VecDeque<BytesMut>,
    out_bytes: usize,
    /// Packets of the layers above waiting for our NEWKEYS.
    held: VecDeque<BytesMut>,
    held_bytes: usize,
    /// Buffers of packets already sent, for the next channel data to be written into.
    spare: Vec<BytesMut>,
    /// Service messages for the layers above, with the sequence number of their packet.
    inbox: VecDeque<(u32, Bytes)>,
    events: VecDeque<TransportEvent>,
    keyed_at: Instant,
    /// When the key exchange in progress started.
    kex_started: Instant,
    sent_since_kex: u64,
    received_since_kex: u64,
    rekeys: u64,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("keyed", &self.keyed)
            .finish_non_exhaustive()
    }
}

/// The packet being received: its first four bytes until its length is known, then a
/// buffer of exactly its size.
#[derive(Debug)]
enum Incoming {
    Head { bytes: [u8; 4], have: usize },
    Body { buf: BytesMut, total: usize },
}

/// A transport and the time of the input being handled (see [`Transport::sender`]).
#[derive(Debug)]
pub struct Sender<'a> {
    transport: &'a mut Transport,
    now: Instant,
}

impl Sender<'_> {
    pub fn send_packet(&mut self, packet: BytesMut) {
        self.transport.send_packet(self.now, packet);
    }

    /// A writer for a message of about `capacity` bytes, in a recycled buffer when the
    /// transport has one ([`Transport::recycle`]).
    pub fn packet(&mut self, msg: u8, capacity: usize) -> Writer {
        match self.transport.spare.pop() {
            Some(buf) => Writer::packet_in(buf, msg, capacity),
            None => Writer::packet(msg, capacity),
        }
    }
}

/// The ssh-ed25519 public key blob.
pub fn host_key_blob(key: &SigningKey) -> Vec<u8> {
    ed25519_blob(key.verifying_key().as_bytes())
}

/// The ssh-ed25519 public key blob of a raw public key.
pub fn ed25519_blob(public: &[u8; 32]) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(HOST_KEY_ED25519.as_bytes()).string(public);
    w.finish().to_vec()
}

/// The raw key of an ssh-ed25519 public key blob.
pub fn parse_ed25519_blob(blob: &[u8]) -> Result<[u8; 32], TransportError> {
    let mut r = Reader::new(blob);
    if r.string()? != HOST_KEY_ED25519.as_bytes() {
        return Err(TransportError::Protocol("host key is not ssh-ed25519"));
    }
    let key = r.string()?.try_into().map_err(|_| TransportError::Protocol("ssh-ed25519 key is not 32 bytes"))?;
    r.finish()?;
    Ok(key)
}

/// An ssh-ed25519 signature blob.
pub fn ed25519_signature_blob(signature: &Signature) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(HOST_KEY_ED25519.as_bytes()).string(&signature.to_bytes());
    w.finish().to_vec()
}

impl Transport {
    /// A connection that sends our identification and KEXINIT at once.
    pub fn new(role: Role, config: TransportConfig, rng: Rng, now: Instant) -> Self {
        let client = matches!(role, Role::Client { .. });
        let mut t = Self {
            role,
            config,
            rng,
            state: State::Version,
            version: VersionReader::new(client),
            peer_id: Vec::new(),
            kex: None,
            strict: false,
            keyed: false,
            session_id: None,
            negotiated: None,
            peer_host_key: None,
            cipher_in: None,
            cipher_out: None,
            seq_in: 0,
            seq_out: 0,
            incoming: Incoming::Head { bytes: [0; 4], have: 0 },
            spare: Vec::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            inbox: VecDeque::new(),
            events: VecDeque::new(),
            keyed_at: now,
            kex_started: now,
            sent_since_kex: 0,
            received_since_kex: 0,
            rekeys: 0,
        };
        t.push_out(BytesMut::from(format!("{OUR_IDENTIFICATION}\r\n").as_bytes()));
        t.start_kex(now);
        t
    }

    pub fn is_server(&self) -> bool {
        matches!(self.role, Role::Server { .. })
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The first key exchange is complete.
    pub fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// The first exchange's H (32 bytes, or 64 after sntrup761x25519-sha512).
    pub fn session_id(&self) -> Option<&[u8]> {
        self.session_id.as_deref()
    }

    /// The key exchange methods offered from the next KEXINIT of ours on (tests switch
    /// methods between a first exchange and a rekey).
    #[cfg(test)]
    pub(crate) fn set_kex_methods(&mut self, kex: &[&str]) {
        self.config.kex = kex.iter().map(|s| s.to_string()).collect();
    }

    /// The algorithms of the current keys.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// (received, sent) packet sequence numbers: the next ones to be used.
    pub fn sequence_numbers(&self) -> (u32, u32) {
        (self.seq_in, self.seq_out)
    }

    /// Key exchanges completed after the first.
    pub fn rekeys(&self) -> u64 {
        self.rekeys
    }

    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        let packet = self.out.pop_front()?;
        self.out_bytes -= packet.len();
        Some(packet)
    }

    /// Hand back a packet from [`Self::poll_transmit`] once its bytes are written (the
    /// caller copied them into its socket): its buffer carries the next channel data.
    pub fn recycle(&mut self, packet: BytesMut) {
        if self.spare.len() < SPARE_BUFFERS && packet.capacity() >= SPARE_MIN {
            self.spare.push(packet);
        }
    }

    /// Bytes waiting for [`Self::poll_transmit`], including packets held while a key
    /// exchange runs (the application stops producing channel data while this is large:
    /// backpressure from the socket, and no unbounded queue during a rekey).
    pub fn pending_transmit(&self) -> usize {
        self.out_bytes + self.held_bytes
    }

    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        self.events.pop_front()
    }

    /// The next message for the layers above (authentication and connection), whole.
    pub fn poll_message(&mut self) -> Option<Bytes> {
        self.inbox.pop_front().map(|(_, payload)| payload)
    }

    /// [`Self::poll_message`] with the sequence number of the message's packet (what an
    /// SSH_MSG_UNIMPLEMENTED names).
    pub fn poll_numbered_message(&mut self) -> Option<(u32, Bytes)> {
        self.inbox.pop_front()
    }

    /// Answer a message the layers above do not recognize (RFC 4253 section 11.4).
    pub fn send_unimplemented(&mut self, now: Instant, seq: u32) {
        let mut w = Writer::packet(msg::UNIMPLEMENTED, 4);
        w.u32(seq);
        self.send_packet(now, w.finish_packet());
    }

    /// When [`Self::handle_timeout`] wants to run: the time-based rekey.
    /// When [`Self::handle_timeout`] wants to run: the time-based rekey, or the end of the
    /// time a key exchange in progress may take.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Running && self.state != State::Version {
            return None;
        }
        if self.kex.is_some() {
            return Some(self.kex_started + KEX_TIMEOUT);
        }
        self.keyed.then(|| self.keyed_at + self.config.rekey_interval)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.kex.is_some() && now >= self.kex_started + KEX_TIMEOUT {
            self.close(TransportError::Timeout("key exchange"));
            return;
        }
        self.maybe_rekey(now);
    }

    /// Bytes from the peer.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        match self.consume(now, bytes) {
            Ok(()) if self.pending_transmit() > MAX_QUEUED => {
                self.close(TransportError::Protocol("peer stopped reading"));
            }
            // The volume limit counts received bytes too: a side that only receives starts
            // the rekey itself instead of waiting for its next send.
            Ok(()) => self.maybe_rekey(now),
            Err(error) => self.close(error),
        }
    }

    /// End the connection: DISCONNECT with the error's reason code, then nothing more.
    pub fn close(&mut self, error: TransportError) {
        if self.state == State::Closed {
            return;
        }
        tracing::debug!(%error, "ssh transport closing");
        let mut w = Writer::packet(msg::DISCONNECT, 64);
        w.u32(error.reason_code()).string(error.to_string().as_bytes()).string(b"");
        let packet = w.finish_packet();
        self.seal_and_queue(packet);
        self.state = State::Closed;
        self.inbox.clear();
        self.held.clear();
        self.held_bytes = 0;
        self.events.push_back(TransportEvent::Closed(error));
    }

    /// A message from the layers above, in a buffer from [`Writer::packet`] (the header
    /// bytes reserved). Held while our key exchange is in flight. `now` decides whether
    /// the time to rekey has come.
    pub fn send_packet(&mut self, now: Instant, packet: BytesMut) {
        if self.state == State::Closed {
            return;
        }
        if self.kex.as_ref().is_some_and(|k| !k.sent_newkeys) || !self.keyed && self.cipher_out.is_none() {
            self.held_bytes += packet.len();
            self.held.push_back(packet);
            return;
        }
        self.seal_and_queue(packet);
        self.maybe_rekey(now);
    }

    /// The transport as the layers above send through it while they handle an input at
    /// `now` (so every message they send carries the time).
    pub fn sender(&mut self, now: Instant) -> Sender<'_> {
        Sender { transport: self, now }
    }

    fn push_out(&mut self, bytes: BytesMut) {
        self.out_bytes += bytes.len();
        self.out.push_back(bytes);
    }

    fn seal_and_queue(&mut self, mut packet: BytesMut) {
        match &mut self.cipher_out {
            None => frame_plain_packet(&mut packet, &mut self.rng),
            Some(cipher) => cipher.seal_packet(self.seq_out, &mut packet, &mut self.rng),
        }
        self.seq_out = self.seq_out.wrapping_add(1);
        self.sent_since_kex += packet.len() as u64;
        self.push_out(packet);
    }

    /// A transport message of ours (key exchange, disconnect, ext-info): never held.
    fn send_now(&mut self, w: Writer) {
        self.seal_and_queue(w.finish_packet());
    }

    fn consume(&mut self, now: Instant, mut bytes: &[u8]) -> Result<(), TransportError> {
        if self.state == State::Version {
            match self.version.feed(bytes)? {
                None => return Ok(()),
                Some((id, used)) => {
                    self.peer_id = id.into_bytes();
                    self.state = State::Running;
                    bytes = &bytes[used..];
                }
            }
        }
        while !bytes.is_empty() && self.state != State::Closed {
            let Some(packet) = self.assemble(&mut bytes)? else { continue };
            let (seq, payload) = self.open_packet(packet)?;
            self.dispatch(now, seq, payload)?;
        }
        Ok(())
    }

    /// Take bytes of the packet being received from `bytes`; the whole packet once it is
    /// complete. Each packet gets a buffer of exactly its size, allocated once its length
    /// is known (and checked): the bytes are copied once, from the input, and whatever the
    /// layers above keep of a payload (channel data is handed up without a copy) holds
    /// that packet's memory and no more.
    fn assemble(&mut self, bytes: &mut &[u8]) -> Result<Option<BytesMut>, TransportError> {
        match &mut self.incoming {
            Incoming::Head { bytes: head, have } => {
                let n = (4 - *have).min(bytes.len());
                head[*have..*have + n].copy_from_slice(&bytes[..n]);
                *have += n;
                *bytes = &bytes[n..];
                if *have < 4 {
                    return Ok(None);
                }
                let head = *head;
                let total = match &self.cipher_in {
                    None => {
                        // Four bytes are never a whole packet: this checks the length
                        // (bounds and alignment) and asks for the rest.
                        parse_plain(&head)?;
                        4 + u32::from_be_bytes(head) as usize
                    }
                    Some(cipher) => 4 + cipher.open_length(self.seq_in, head)? + TAG_LEN,
                };
                let mut buf = BytesMut::with_capacity(total);
                buf.extend_from_slice(&head);
                self.incoming = Incoming::Body { buf, total };
                Ok(None)
            }
            Incoming::Body { buf, total } => {
                let n = (*total - buf.len()).min(bytes.len());
                buf.extend_from_slice(&bytes[..n]);
                *bytes = &bytes[n..];
                if buf.len() < *total {
                    return Ok(None);
                }
                let packet = std::mem::take(buf);
                self.incoming = Incoming::Head { bytes: [0; 4], have: 0 };
                Ok(Some(packet))
            }
        }
    }

    /// A whole received packet: its sequence number and payload, decrypted in place.
    fn open_packet(&mut self, mut packet: BytesMut) -> Result<(u32, Bytes), TransportError> {
        let range = match &mut self.cipher_in {
            None => parse_plain(&packet)?.map(|(range, _)| range).ok_or(WireError::Truncated)?,
            Some(cipher) => {
                let len = packet.len() - 4 - TAG_LEN;
                cipher.open_with_length(self.seq_in, &mut packet, len)?
            }
        };
        let seq = self.seq_in;
        self.seq_in = self.seq_in.wrapping_add(1);
        self.received_since_kex += packet.len() as u64;
        packet.truncate(range.end);
        let _ = packet.split_to(range.start);
        if packet.is_empty() {
            return Err(WireError::Truncated.into());
        }
        Ok((seq, packet.freeze()))
    }

    /// Whether non-kex messages from the peer are refused now: during the first exchange,
    /// and during a later one once the peer's KEXINIT has arrived.
    fn peer_in_kex(&self) -> bool {
        !self.keyed || self.kex.as_ref().is_some_and(|k| k.theirs.is_some())
    }

    fn dispatch(&mut self, now: Instant, seq: u32, payload: Bytes) -> Result<(), TransportError> {
        let number = payload[0];
        match number {
            msg::DISCONNECT => {
                let mut r = Reader::new(&payload[1..]);
                let _code = r.u32().unwrap_or(0);
                let text = r.string().map(|s| peer_text(s, 256, false)).unwrap_or_default();
                Err(TransportError::PeerDisconnected(text))
            }
            // Terrapin: nothing but the key exchange during a strict first exchange, and
            // KEXINIT must be the peer's first packet whatever was negotiated.
            msg::IGNORE | msg::DEBUG | msg::UNIMPLEMENTED
                if (!self.keyed && (self.strict || self.kex.as_ref().is_some_and(|k| k.theirs.is_none()))) =>
            {
                Err(TransportError::Unexpected(number))
            }
            msg::IGNORE | msg::DEBUG | msg::UNIMPLEMENTED => Ok(()),
            msg::KEXINIT => self.handle_kexinit(now, payload),
            msg::NEWKEYS => self.handle_newkeys(now, &payload),
            30..=49 => self.handle_kex_method(&payload),
            // A service message: for the layers above, unless a key exchange forbids it.
            _ if self.peer_in_kex() => Err(TransportError::Unexpected(number)),
            _ => {
                self.inbox.push_back((seq, payload));
                Ok(())
            }
        }
    }

    fn our_kexinit(&mut self) -> KexInit {
        let cookie = self.rng.gen_bytes();
        let methods: Vec<&str> =
            self.config.kex.iter().map(String::as_str).filter(|n| KexMethod::from_name(n).is_some()).collect();
        let pseudo =
            if self.is_server() { [EXT_INFO_SERVER, STRICT_KEX_SERVER] } else { [EXT_INFO_CLIENT, STRICT_KEX_CLIENT] };
        let mut k = KexInit::ours(cookie, &methods, pseudo);
        if self.session_id.is_some() {
            // ext-info and strict-KEX signals belong to the first exchange only.
            k.kex.retain(|n| !n.starts_with("ext-info") && !n.starts_with("kex-strict"));
        }
        k.cipher_c2s.clone_from(&self.config.ciphers);
        k.cipher_s2c.clone_from(&self.config.ciphers);
        k
    }

    /// Send our KEXINIT (first exchange, a rekey we start, or one the peer started).
    fn start_kex(&mut self, now: Instant) {
        self.kex_started = now;
        let ours = self.our_kexinit().encode().freeze();
        let mut w = Writer::packet(msg::KEXINIT, ours.len());
        w.raw(&ours[1..]);
        self.send_now(w);
        self.kex = Some(Kex {
            ours,
            theirs: None,
            negotiated: None,
            ephemeral: None,
            ignore_next: false,
            sent_newkeys: false,
            next_in: None,
        });
    }

    fn maybe_rekey(&mut self, now: Instant) {
        let due = self.sent_since_kex >= self.config.rekey_bytes
            || self.received_since_kex >= self.config.rekey_bytes
            || now >= self.keyed_at + self.config.rekey_interval;
        if self.keyed && self.kex.is_none() && self.state == State::Running && due {
            tracing::debug!(sent = self.sent_since_kex, received = self.received_since_kex, "ssh rekey");
            self.start_kex(now);
        }
    }

    fn handle_kexinit(&mut self, now: Instant, payload: Bytes) -> Result<(), TransportError> {
        let theirs = KexInit::decode(&payload)?;
        if self.kex.is_none() {
            self.start_kex(now);
        }
        let server = self.is_server();
        let kex = self.kex.as_mut().ok_or(TransportError::Unexpected(msg::KEXINIT))?;
        if kex.theirs.is_some() {
            return Err(TransportError::Unexpected(msg::KEXINIT));
        }
        let ours = KexInit::decode(&kex.ours)?;
        let negotiated = if server { negotiate(&theirs, &ours)? } else { negotiate(&ours, &theirs)? };
        kex.ignore_next = server && negotiated.ignore_first_kex_packet;
        kex.theirs = Some(payload);
        if self.session_id.is_none() {
            self.strict = negotiated.strict_kex;
        }
        let method = KexMethod::from_name(&negotiated.kex).ok_or(KexError::Unsupported)?;
        kex.negotiated = Some(negotiated);
        if !server {
            let ephemeral = ClientKex::start(method, &mut self.rng);
            let mut w = Writer::packet(msg::KEX_ECDH_INIT, 8 + method.client_public_len());
            w.string(ephemeral.public());
            if let Some(kex) = self.kex.as_mut() {
                kex.ephemeral = Some(ephemeral);
            }
            self.send_now(w);
        }
        Ok(())
    }

    fn handle_kex_method(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        let number = payload[0];
        let Some(kex) = self.kex.as_mut().filter(|k| k.theirs.is_some() && !k.sent_newkeys) else {
            return Err(TransportError::Unexpected(number));
        };
        if kex.ignore_next {
            kex.ignore_next = false;
            return Ok(());
        }
        match (self.is_server(), number) {
            (true, msg::KEX_ECDH_INIT) => self.handle_ecdh_init(payload),
            (false, msg::KEX_ECDH_REPLY) => self.handle_ecdh_reply(payload),
            _ => Err(TransportError::Unexpected(number)),
        }
    }

    /// The method negotiated for the exchange in progress.
    fn kex_method(&self) -> Result<KexMethod, TransportError> {
        let negotiated = self.kex.as_ref().and_then(|k| k.negotiated.as_ref());
        let name = negotiated.ok_or(TransportError::Unexpected(msg::KEX_ECDH_INIT))?;
        Ok(KexMethod::from_name(&name.kex).ok_or(KexError::Unsupported)?)
    }

    fn handle_ecdh_init(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        let mut r = Reader::new(&payload[1..]);
        let client_public = r.string()?;
        r.finish()?;
        let method = self.kex_method()?;
        // Borrowed, not cloned: no stray copy of the host key.
        let Role::Server { host_key } = &self.role else { return Err(TransportError::Unexpected(payload[0])) };
        let (server_public, shared) = server_respond(method, client_public, &mut self.rng)?;
        let host_blob = host_key_blob(host_key);
        let kex = self.kex.as_ref().ok_or(TransportError::Unexpected(payload[0]))?;
        let h = exchange_hash(&HashInputs {
            client_id: &self.peer_id,
            server_id: OUR_IDENTIFICATION.as_bytes(),
            client_kexinit: kex.theirs.as_deref().unwrap_or_default(),
            server_kexinit: &kex.ours,
            host_key: &host_blob,
            client_public,
            server_public: &server_public,
            shared: &shared,
        });
        let signature = host_key.sign(&h);
        let our_host_key = host_key.verifying_key().to_bytes();
        let mut reply = Writer::packet(msg::KEX_ECDH_REPLY, 200 + server_public.len());
        reply.string(&host_blob).string(&server_public).string(&ed25519_signature_blob(&signature));
        self.send_now(reply);
        self.peer_host_key = Some(our_host_key);
        self.send_newkeys(&shared, &h)
    }

    fn handle_ecdh_reply(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        let mut r = Reader::new(&payload[1..]);
        let host_blob = r.string()?;
        let server_public = r.string()?;
        let signature_blob = r.string()?;
        r.finish()?;
        let host_key = parse_ed25519_blob(host_blob)?;
        let Role::Client { host_key: expected } = &self.role else {
            return Err(TransportError::Unexpected(payload[0]));
        };
        let expected = self.peer_host_key.or(*expected);
        if expected.is_some_and(|k| k != host_key) {
            return Err(TransportError::HostKeyMismatch);
        }
        let kex = self.kex.as_mut().ok_or(TransportError::Unexpected(payload[0]))?;
        let ephemeral = kex.ephemeral.take().ok_or(TransportError::Unexpected(payload[0]))?;
        let shared = ephemeral.finish(server_public)?;
        let h = exchange_hash(&HashInputs {
            client_id: OUR_IDENTIFICATION.as_bytes(),
            server_id: &self.peer_id,
            client_kexinit: &kex.ours,
            server_kexinit: kex.theirs.as_deref().unwrap_or_default(),
            host_key: host_blob,
            client_public: ephemeral.public(),
            server_public,
            shared: &shared,
        });
        let mut r = Reader::new(signature_blob);
        if r.string()? != HOST_KEY_ED25519.as_bytes() {
            return Err(TransportError::BadSignature);
        }
        let signature = Signature::from_slice(r.string()?).map_err(|_| TransportError::BadSignature)?;
        r.finish()?;
        let verifying = VerifyingKey::from_bytes(&host_key).map_err(|_| TransportError::BadSignature)?;
        verifying.verify(&h, &signature).map_err(|_| TransportError::BadSignature)?;
        self.peer_host_key = Some(host_key);
        self.send_newkeys(&shared, &h)
    }

    /// Derive both directions' keys, send NEWKEYS and switch our outgoing keys; the
    /// incoming ones wait for the peer's NEWKEYS.
    /// The keys are derived under the current method's hash over the ORIGINAL session id
    /// (RFC 4253 section 7.2), whatever its length.
    fn send_newkeys(&mut self, shared: &SharedSecret, h: &[u8]) -> Result<(), TransportError> {
        let session_id = self.session_id.get_or_insert_with(|| h.to_vec()).clone();
        let server = self.is_server();
        let kex = self.kex.as_mut().ok_or(TransportError::Unexpected(msg::NEWKEYS))?;
        let negotiated = kex.negotiated.clone().ok_or(TransportError::Unexpected(msg::NEWKEYS))?;
        let keys = |letter_iv: u8, letter_key: u8, name: &str| -> Result<PacketCipher, TransportError> {
            let (klen, ivlen) = PacketCipher::key_sizes(name).ok_or(CipherError::Unknown)?;
            let iv = derive(shared, h, letter_iv, &session_id, ivlen);
            let key = derive(shared, h, letter_key, &session_id, klen);
            Ok(PacketCipher::new(name, &key, &iv)?)
        };
        let c2s = keys(b'A', b'C', &negotiated.cipher_c2s)?;
        let s2c = keys(b'B', b'D', &negotiated.cipher_s2c)?;
        let (incoming, outgoing) = if server { (c2s, s2c) } else { (s2c, c2s) };
        kex.next_in = Some(incoming);
        kex.sent_newkeys = true;
        self.send_now(Writer::packet(msg::NEWKEYS, 0));
        self.cipher_out = Some(outgoing);
        if self.strict {
            self.seq_out = 0;
        }
        self.sent_since_kex = 0;
        // RFC 8308: right after our first NEWKEYS, tell a client that asked which signature
        // algorithms we accept for user keys.
        if server && negotiated.client_wants_ext_info && session_id == h {
            let mut w = Writer::packet(msg::EXT_INFO, 40);
            w.u32(1).string(b"server-sig-algs").string(HOST_KEY_ED25519.as_bytes());
            self.send_now(w);
        }
        self.held_bytes = 0;
        while let Some(packet) = self.held.pop_front() {
            self.seal_and_queue(packet);
        }
        Ok(())
    }

    fn handle_newkeys(&mut self, now: Instant, payload: &[u8]) -> Result<(), TransportError> {
        Reader::new(&payload[1..]).finish()?;
        let Some(mut kex) = self.kex.take().filter(|k| k.sent_newkeys) else {
            return Err(TransportError::Unexpected(msg::NEWKEYS));
        };
        self.cipher_in = kex.next_in.take();
        if self.strict {
            self.seq_in = 0;
        }
        self.received_since_kex = 0;
        self.keyed_at = now;
        let negotiated = kex.negotiated.take();
        if self.keyed {
            self.rekeys += 1;
            self.negotiated = negotiated;
            self.events.push_back(TransportEvent::Rekeyed);
            return Ok(());
        }
        self.keyed = true;
        self.negotiated = negotiated.clone();
        if let (Some(negotiated), Some(host_key)) = (negotiated, self.peer_host_key) {
            self.events.push_back(TransportEvent::Keyed { negotiated, host_key });
        }
        Ok(())
    }
}
