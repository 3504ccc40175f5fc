//! The server side of the SSH transport (RFC 4253) up to an encrypted, keyed connection:
//! identification exchange, KEXINIT, curve25519-sha256 with an ssh-ed25519 host key,
//! NEWKEYS (with strict KEX: sequence numbers reset), SERVICE_REQUEST for `ssh-userauth`,
//! and authentication decided by the application on the first USERAUTH_REQUEST. Bytes in ([`ServerTransport::handle_input`]), bytes out
//! ([`ServerTransport::poll_transmit`]), events ([`ServerTransport::poll_event`]).
//!
//! Each state accepts only the messages valid in it; anything else disconnects. This is the
//! first slice of issue 4: channels build on it.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};
use ed25519_dalek::{Signer, SigningKey};
use thiserror::Error;

use super::cipher::{CipherError, PacketCipher, TAG_LEN};
use super::kex::{derive, exchange_hash, Curve25519, HashInputs, KexError};
use super::kexinit::{negotiate, KexInit, NegotiateError, Negotiated, HOST_KEY_ED25519};
use super::msg;
use super::packet::{frame_plain, parse_plain, PacketError};
use super::version::{VersionError, VersionReader, OUR_IDENTIFICATION};
use super::wire::{Reader, WireError, Writer};
use crate::rng::Rng;

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
    #[error("message {0} not allowed in this state")]
    Unexpected(u8),
    #[error("peer disconnected")]
    PeerDisconnected,
}

/// What the layer above must know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// Keys are in use both ways; `session_id` identifies the session.
    Keyed { session_id: [u8; 32], negotiated: Negotiated },
    /// The client asked for `ssh-userauth` and got SERVICE_ACCEPT.
    UserauthRequested,
    /// The first USERAUTH_REQUEST arrived (whatever its method): decide with
    /// [`ServerTransport::accept_auth`], [`ServerTransport::deny_auth`] or hold with
    /// [`ServerTransport::auth_banner`]. Identity comes from WireGuard, not from the method.
    AuthRequest { user: String },
    /// USERAUTH_SUCCESS was sent: the connection protocol may start.
    Authenticated { user: String },
    /// The connection is over (an error, or the peer's DISCONNECT).
    Closed(TransportError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Version,
    AwaitKexInit,
    AwaitEcdhInit,
    AwaitNewKeys,
    AwaitServiceRequest,
    /// SERVICE_ACCEPT sent; no USERAUTH_REQUEST yet.
    AwaitAuthRequest,
    /// The application is deciding about `user` (the client waits for our answer).
    Deciding,
    /// Denied: every further request gets a failure, and a few of them end the connection.
    Denied,
    Authenticated,
    Closed,
}

/// Failures answered before the connection is closed.
const MAX_AUTH_ATTEMPTS: u32 = 3;

/// One server connection's transport.
pub struct ServerTransport {
    state: State,
    rng: Rng,
    host_key: SigningKey,
    version: VersionReader,
    client_id: Vec<u8>,
    our_kexinit: BytesMut,
    client_kexinit: Vec<u8>,
    negotiated: Option<Negotiated>,
    session_id: Option<[u8; 32]>,
    /// Keys for the client-to-server direction, installed when its NEWKEYS arrives.
    next_in: Option<PacketCipher>,
    cipher_in: Option<PacketCipher>,
    cipher_out: Option<PacketCipher>,
    seq_in: u32,
    seq_out: u32,
    inbuf: BytesMut,
    out: VecDeque<BytesMut>,
    events: VecDeque<TransportEvent>,
    /// The user of the first USERAUTH_REQUEST; changing it later is refused.
    auth_user: Option<String>,
    auth_failures: u32,
}

impl std::fmt::Debug for ServerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTransport").field("state", &self.state).finish_non_exhaustive()
    }
}

/// The ssh-ed25519 public key blob.
pub fn host_key_blob(key: &SigningKey) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(HOST_KEY_ED25519.as_bytes()).string(key.verifying_key().as_bytes());
    w.finish().to_vec()
}

impl ServerTransport {
    /// A connection that sends our identification and KEXINIT at once.
    pub fn new(host_key: SigningKey, mut rng: Rng) -> Self {
        let our_kexinit = KexInit::server(rng.gen_bytes()).encode();
        let mut t = Self {
            state: State::Version,
            rng,
            host_key,
            version: VersionReader::new(false),
            client_id: Vec::new(),
            our_kexinit,
            client_kexinit: Vec::new(),
            negotiated: None,
            session_id: None,
            next_in: None,
            cipher_in: None,
            cipher_out: None,
            seq_in: 0,
            seq_out: 0,
            inbuf: BytesMut::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            auth_user: None,
            auth_failures: 0,
        };
        t.out.push_back(BytesMut::from(format!("{OUR_IDENTIFICATION}\r\n").as_bytes()));
        let kexinit = t.our_kexinit.clone();
        t.send(&kexinit);
        t
    }

    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.out.pop_front()
    }

    /// Whether bytes are waiting for [`Self::poll_transmit`].
    pub fn poll_transmit_pending(&self) -> bool {
        !self.out.is_empty()
    }

    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        self.events.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes from the client.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        if let Err(error) = self.consume(bytes) {
            self.close(error);
        }
    }

    fn close(&mut self, error: TransportError) {
        if self.state != State::Closed {
            let mut w = Writer::message(msg::DISCONNECT);
            w.u32(2).string(error.to_string().as_bytes()).string(b"");
            let payload = w.finish();
            self.send(&payload);
            self.state = State::Closed;
            self.events.push_back(TransportEvent::Closed(error));
        }
    }

    fn consume(&mut self, mut bytes: &[u8]) -> Result<(), TransportError> {
        if self.state == State::Version {
            match self.version.feed(bytes)? {
                None => return Ok(()),
                Some((id, used)) => {
                    self.client_id = id.into_bytes();
                    self.state = State::AwaitKexInit;
                    bytes = &bytes[used..];
                }
            }
        }
        self.inbuf.extend_from_slice(bytes);
        while let Some(payload) = self.next_packet()? {
            self.dispatch(&payload)?;
            if self.state == State::Closed {
                break;
            }
        }
        Ok(())
    }

    /// The next complete packet's payload, decrypted, or `None` until more bytes arrive.
    fn next_packet(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        let payload = match &mut self.cipher_in {
            None => {
                let Some((range, used)) = parse_plain(&self.inbuf)? else { return Ok(None) };
                let payload = self.inbuf[range].to_vec();
                self.inbuf.advance(used);
                payload
            }
            Some(cipher) => {
                let Some(first4) = self.inbuf.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
                    return Ok(None);
                };
                let len = cipher.open_length(self.seq_in, first4)?;
                let total = 4 + len + TAG_LEN;
                if self.inbuf.len() < total {
                    return Ok(None);
                }
                let mut packet = self.inbuf.split_to(total);
                let range = cipher.open(self.seq_in, &mut packet)?;
                packet[range].to_vec()
            }
        };
        self.seq_in = self.seq_in.wrapping_add(1);
        Ok(Some(payload))
    }

    fn send(&mut self, payload: &[u8]) {
        let packet = match &mut self.cipher_out {
            None => frame_plain(payload, &mut self.rng),
            Some(cipher) => cipher.seal(self.seq_out, payload, &mut self.rng),
        };
        self.seq_out = self.seq_out.wrapping_add(1);
        self.out.push_back(packet);
    }

    fn strict(&self) -> bool {
        self.negotiated.as_ref().is_some_and(|n| n.strict_kex)
    }

    fn dispatch(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        let number = *payload.first().ok_or(WireError::Truncated)?;
        // Before the first NEWKEYS with strict KEX, only key-exchange messages are allowed
        // (Terrapin); otherwise IGNORE/DEBUG are always harmless and DISCONNECT ends it.
        let first_kex = self.session_id.is_none() || self.state == State::AwaitNewKeys && self.cipher_in.is_none();
        match number {
            msg::DISCONNECT => return Err(TransportError::PeerDisconnected),
            msg::IGNORE | msg::DEBUG if !(first_kex && self.strict()) && self.state != State::AwaitKexInit => {
                return Ok(())
            }
            _ => {}
        }
        match (self.state, number) {
            (State::AwaitKexInit, msg::KEXINIT) => {
                let client = KexInit::decode(payload)?;
                let server = KexInit::decode(&self.our_kexinit)?;
                let negotiated = negotiate(&client, &server)?;
                self.client_kexinit = payload.to_vec();
                self.negotiated = Some(negotiated);
                self.state = State::AwaitEcdhInit;
                Ok(())
            }
            (State::AwaitEcdhInit, msg::KEX_ECDH_INIT) => self.handle_ecdh_init(payload),
            (State::AwaitNewKeys, msg::NEWKEYS) => {
                Reader::new(&payload[1..]).finish()?;
                self.cipher_in = self.next_in.take();
                if self.strict() {
                    self.seq_in = 0;
                }
                self.state = State::AwaitServiceRequest;
                if let (Some(session_id), Some(negotiated)) = (self.session_id, self.negotiated.clone()) {
                    self.events.push_back(TransportEvent::Keyed { session_id, negotiated });
                }
                Ok(())
            }
            (State::AwaitServiceRequest, msg::SERVICE_REQUEST) => {
                let mut r = Reader::new(&payload[1..]);
                let service = r.string()?;
                r.finish()?;
                if service != b"ssh-userauth" {
                    return Err(TransportError::Unexpected(number));
                }
                let mut w = Writer::message(msg::SERVICE_ACCEPT);
                w.string(b"ssh-userauth");
                let accept = w.finish();
                self.send(&accept);
                self.state = State::AwaitAuthRequest;
                self.events.push_back(TransportEvent::UserauthRequested);
                Ok(())
            }
            (State::AwaitAuthRequest | State::Deciding | State::Denied, msg::USERAUTH_REQUEST) => {
                self.handle_auth_request(payload)
            }
            (_, n) => Err(TransportError::Unexpected(n)),
        }
    }

    fn handle_auth_request(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        let mut r = Reader::new(&payload[1..]);
        let user = r.utf8()?;
        let service = r.string()?;
        let _method = r.string()?; // none, publickey, password...: identity is not from here
        if service != b"ssh-connection" {
            return Err(TransportError::Unexpected(msg::USERAUTH_REQUEST));
        }
        match (&self.auth_user, self.state) {
            (None, _) => {
                self.auth_user = Some(user.to_string());
                self.state = State::Deciding;
                self.events.push_back(TransportEvent::AuthRequest { user: user.to_string() });
                Ok(())
            }
            // Changing the user (or service) mid-authentication is refused.
            (Some(first), _) if first != user => Err(TransportError::Unexpected(msg::USERAUTH_REQUEST)),
            // A client that does not wait for our decision: answer later, once.
            (Some(_), State::Deciding) => Ok(()),
            _ => self.fail_auth(),
        }
    }

    fn fail_auth(&mut self) -> Result<(), TransportError> {
        self.auth_failures += 1;
        if self.auth_failures > MAX_AUTH_ATTEMPTS {
            return Err(TransportError::Unexpected(msg::USERAUTH_REQUEST));
        }
        // No methods left: the client gives up instead of trying keys or passwords.
        let mut w = Writer::message(msg::USERAUTH_FAILURE);
        w.name_list([]).bool(false);
        let failure = w.finish();
        self.send(&failure);
        self.state = State::Denied;
        Ok(())
    }

    /// Show `text` to the user before the decision (e.g. the URL of a `check` rule).
    pub fn auth_banner(&mut self, text: &str) {
        if matches!(self.state, State::Deciding | State::AwaitAuthRequest) {
            let mut w = Writer::message(msg::USERAUTH_BANNER);
            w.string(text.as_bytes()).string(b"");
            let banner = w.finish();
            self.send(&banner);
        }
    }

    /// Grant the pending request: USERAUTH_SUCCESS.
    pub fn accept_auth(&mut self) {
        if self.state != State::Deciding {
            return;
        }
        self.send(&[msg::USERAUTH_SUCCESS]);
        self.state = State::Authenticated;
        let user = self.auth_user.clone().unwrap_or_default();
        self.events.push_back(TransportEvent::Authenticated { user });
    }

    /// Refuse: an optional banner saying why, then a failure with no methods left.
    pub fn deny_auth(&mut self, banner: Option<&str>) {
        if self.state != State::Deciding {
            return;
        }
        if let Some(text) = banner {
            self.auth_banner(text);
        }
        if let Err(error) = self.fail_auth() {
            self.close(error);
        }
    }

    fn handle_ecdh_init(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        let mut r = Reader::new(&payload[1..]);
        let client_public = r.string()?;
        r.finish()?;
        let ephemeral = Curve25519::generate(&mut self.rng);
        let shared = ephemeral.shared(client_public)?;
        let host_key = host_key_blob(&self.host_key);
        let h = exchange_hash(&HashInputs {
            client_id: &self.client_id,
            server_id: OUR_IDENTIFICATION.as_bytes(),
            client_kexinit: &self.client_kexinit,
            server_kexinit: &self.our_kexinit,
            host_key: &host_key,
            client_public,
            server_public: &ephemeral.public,
            shared: &shared,
        });
        let session_id = *self.session_id.get_or_insert(h);
        let signature = self.host_key.sign(&h);
        let mut sig_blob = Writer::new();
        sig_blob.string(HOST_KEY_ED25519.as_bytes()).string(&signature.to_bytes());
        let mut reply = Writer::message(msg::KEX_ECDH_REPLY);
        reply.string(&host_key).string(&ephemeral.public).string(&sig_blob.finish());
        let reply = reply.finish();
        self.send(&reply);
        self.send(&[msg::NEWKEYS]);

        let negotiated = self.negotiated.clone().ok_or(TransportError::Unexpected(msg::KEX_ECDH_INIT))?;
        let keys = |letter_iv: u8, letter_key: u8, name: &str| -> Result<PacketCipher, TransportError> {
            let (klen, ivlen) = PacketCipher::key_sizes(name).ok_or(CipherError::Unknown)?;
            let iv = derive(&shared, &h, letter_iv, &session_id, ivlen);
            let key = derive(&shared, &h, letter_key, &session_id, klen);
            Ok(PacketCipher::new(name, &key, &iv)?)
        };
        self.next_in = Some(keys(b'A', b'C', &negotiated.cipher_c2s)?);
        self.cipher_out = Some(keys(b'B', b'D', &negotiated.cipher_s2c)?);
        if negotiated.strict_kex {
            self.seq_out = 0;
        }
        // RFC 8308: right after our NEWKEYS, tell a client that asked which signature
        // algorithms we accept for user keys.
        if negotiated.client_wants_ext_info && self.session_id == Some(h) {
            let mut w = Writer::message(msg::EXT_INFO);
            w.u32(1).string(b"server-sig-algs").string(HOST_KEY_ED25519.as_bytes());
            let ext_info = w.finish();
            self.send(&ext_info);
        }
        self.state = State::AwaitNewKeys;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerTransport {
        let mut s = ServerTransport::new(SigningKey::from_bytes(&[42; 32]), Rng::from_seed(1));
        while s.poll_transmit().is_some() {}
        s
    }

    #[test]
    fn every_message_but_kexinit_first_is_fatal() {
        for number in 0..=255u8 {
            if number == msg::KEXINIT {
                continue;
            }
            let mut s = server();
            let mut input = b"SSH-2.0-raw\r\n".to_vec();
            input.extend_from_slice(&frame_plain(&[number, 0, 0, 0, 0], &mut Rng::from_seed(2)));
            s.handle_input(&input);
            assert!(s.is_closed(), "message {number} before KEXINIT was accepted");
            let closed = std::iter::from_fn(|| s.poll_event()).any(|e| matches!(e, TransportEvent::Closed(_)));
            assert!(closed, "message {number}");
        }
    }

    #[test]
    fn userauth_success_or_channel_open_from_a_client_never_authenticates() {
        // CVE-2018-10933: a client claiming success, or opening a channel, before auth.
        for number in [msg::USERAUTH_SUCCESS, msg::CHANNEL_OPEN, msg::SERVICE_REQUEST, msg::NEWKEYS] {
            let mut s = server();
            let mut input = b"SSH-2.0-raw\r\n".to_vec();
            input.extend_from_slice(&frame_plain(&KexInit::client([1; 16]).encode(), &mut Rng::from_seed(3)));
            input.extend_from_slice(&frame_plain(&[number], &mut Rng::from_seed(4)));
            s.handle_input(&input);
            let events: Vec<TransportEvent> = std::iter::from_fn(|| s.poll_event()).collect();
            assert!(s.is_closed(), "{number}: {events:?}");
            assert!(!events
                .iter()
                .any(|e| matches!(e, TransportEvent::Authenticated { .. } | TransportEvent::Keyed { .. })));
        }
    }

    #[test]
    fn a_hostile_packet_length_closes_without_buffering() {
        let mut s = server();
        s.handle_input(b"SSH-2.0-raw\r\n\xff\xff\xff\xff");
        assert!(s.is_closed());
        assert!(s.inbuf.capacity() < 1024);
    }
}
