//! The client side of an SSH session: the transport (the server's host key checked against
//! the one configured, or reported for the application to check), authentication with
//! `none` and then `publickey` (ssh-ed25519) when a key is given, banners handed to the
//! application, holds waited through; then the connection protocol.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use ed25519_dalek::{Signer, SigningKey};

use super::connection::{Channels, Connection, ConnectionConfig, Side};
use super::event::SessionEvent;
use super::kexinit::HOST_KEY_ED25519;
use super::msg;
use super::transport::{
    ed25519_signature_blob, host_key_blob, Role, Transport, TransportConfig, TransportError, TransportEvent,
};
use super::wire::{peer_text, Reader, Writer};
use crate::rng::Rng;
use crate::time::Instant;

/// A client session's settings.
#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    pub transport: TransportConfig,
    pub connection: ConnectionConfig,
    /// The account to log in as.
    pub user: String,
    /// The server's ssh-ed25519 key; `None` accepts any and reports it in
    /// [`SessionEvent::Keyed`].
    pub host_key: Option<[u8; 32]>,
    /// A user key for `publickey` after `none` fails. (`SigningKey` wipes itself on drop
    /// and prints only its public half in `Debug`.)
    pub key: Option<SigningKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    AwaitKeys,
    AwaitServiceAccept,
    TriedNone,
    TriedPublickey,
    Authenticated,
    Failed,
}

/// One client connection.
#[derive(Debug)]
pub struct ClientSession {
    transport: Transport,
    connection: Connection,
    user: String,
    key: Option<SigningKey>,
    auth: Auth,
    events: VecDeque<SessionEvent>,
}

impl ClientSession {
    pub fn new(config: ClientConfig, rng: Rng, now: Instant) -> Self {
        let role = Role::Client { host_key: config.host_key };
        Self {
            transport: Transport::new(role, config.transport, rng, now),
            connection: Connection::new(Side::Client, config.connection),
            user: config.user,
            key: config.key,
            auth: Auth::AwaitKeys,
            events: VecDeque::new(),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.transport.poll_transmit()
    }

    /// Hand back a packet from `poll_transmit` once its bytes are written: its buffer is
    /// reused for the next channel data (see [`Transport::recycle`]).
    pub fn recycle(&mut self, packet: BytesMut) {
        self.transport.recycle(packet);
    }

    pub fn pending_transmit(&self) -> usize {
        self.transport.pending_transmit()
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transport.poll_timeout()
    }

    pub fn is_closed(&self) -> bool {
        self.transport.is_closed()
    }

    pub fn is_authenticated(&self) -> bool {
        self.auth == Auth::Authenticated
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.transport.handle_input(now, bytes);
        self.pump(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.transport.handle_timeout(now);
        self.pump(now);
    }

    pub fn disconnect(&mut self, now: Instant, why: &str) {
        self.transport.close(TransportError::Application(why.to_string()));
        self.pump(now);
    }

    /// The channel operations (open, write, request, close, ...), acting at `now`.
    pub fn channels(&mut self, now: Instant) -> Channels<'_> {
        Channels::new(&mut self.connection, &mut self.transport, &mut self.events, now)
    }

    fn pump(&mut self, now: Instant) {
        loop {
            while let Some(event) = self.transport.poll_event() {
                match event {
                    TransportEvent::Keyed { negotiated, host_key } => {
                        self.events.push_back(SessionEvent::Keyed { host_key, negotiated });
                        let mut w = Writer::packet(msg::SERVICE_REQUEST, 16);
                        w.string(b"ssh-userauth");
                        self.transport.send_packet(now, w.finish_packet());
                        self.auth = Auth::AwaitServiceAccept;
                    }
                    TransportEvent::Rekeyed => self.events.push_back(SessionEvent::Rekeyed),
                    TransportEvent::Closed(error) => self.events.push_back(SessionEvent::Closed(error)),
                }
            }
            let Some((seq, payload)) = self.transport.poll_numbered_message() else { break };
            if let Err(error) = self.dispatch(now, seq, &payload) {
                self.transport.close(error);
            }
            while let Some(event) = self.connection.poll_event() {
                self.events.push_back(SessionEvent::Connection(event));
            }
        }
    }

    fn dispatch(&mut self, now: Instant, seq: u32, payload: &Bytes) -> Result<(), TransportError> {
        let number = payload[0];
        let authenticating = matches!(self.auth, Auth::TriedNone | Auth::TriedPublickey);
        match (self.auth, number) {
            // RFC 8308: EXT_INFO may come after NEWKEYS and after USERAUTH_SUCCESS.
            (_, msg::EXT_INFO) => Ok(()),
            (Auth::AwaitServiceAccept, msg::SERVICE_ACCEPT) => {
                let mut r = Reader::new(&payload[1..]);
                if r.string()? != b"ssh-userauth" {
                    return Err(TransportError::Protocol("server accepted another service"));
                }
                send_auth_request(&mut self.transport, now, &self.user, b"none", None);
                self.auth = Auth::TriedNone;
                Ok(())
            }
            (_, msg::USERAUTH_BANNER) if authenticating || self.auth == Auth::AwaitServiceAccept => {
                let mut r = Reader::new(&payload[1..]);
                let text = peer_text(r.string()?, 4096, true);
                self.events.push_back(SessionEvent::Banner(text));
                Ok(())
            }
            (_, msg::USERAUTH_SUCCESS) if authenticating => {
                self.auth = Auth::Authenticated;
                self.events.push_back(SessionEvent::Authenticated { user: self.user.clone() });
                Ok(())
            }
            (_, msg::USERAUTH_FAILURE) if authenticating => {
                let mut r = Reader::new(&payload[1..]);
                let methods = r.name_list()?;
                // Borrowed, not cloned or moved: no stray copy of the key.
                match (self.auth, &self.key) {
                    (Auth::TriedNone, Some(key)) if methods.contains("publickey") => {
                        send_auth_request(&mut self.transport, now, &self.user, b"publickey", Some(key));
                        self.auth = Auth::TriedPublickey;
                    }
                    _ => {
                        self.auth = Auth::Failed;
                        self.events.push_back(SessionEvent::AuthFailed);
                        self.transport.close(TransportError::Application("no authentication method left".into()));
                    }
                }
                Ok(())
            }
            (Auth::Authenticated, msg::GLOBAL_REQUEST..=msg::CHANNEL_FAILURE) => {
                self.connection.handle_message(&mut self.transport.sender(now), payload)
            }
            // RFC 4253 section 11.4, as the server answers it.
            (Auth::Authenticated, n) if n > msg::CHANNEL_FAILURE => {
                self.transport.send_unimplemented(now, seq);
                Ok(())
            }
            (_, n) => Err(TransportError::Unexpected(n)),
        }
    }
}

/// USERAUTH_REQUEST for `method`; `publickey` is signed at once (RFC 4252 section 7:
/// the signature covers the session id and the request).
fn send_auth_request(transport: &mut Transport, now: Instant, user: &str, method: &[u8], key: Option<&SigningKey>) {
    let mut w = Writer::packet(msg::USERAUTH_REQUEST, 200);
    w.string(user.as_bytes()).string(b"ssh-connection").string(method);
    if let Some(key) = key {
        let blob = host_key_blob(key);
        let mut signed = Writer::new();
        signed.string(transport.session_id().unwrap_or_default());
        signed.u8(msg::USERAUTH_REQUEST).string(user.as_bytes()).string(b"ssh-connection");
        signed.string(b"publickey").bool(true).string(HOST_KEY_ED25519.as_bytes()).string(&blob);
        let signature = key.sign(&signed.finish());
        w.bool(true).string(HOST_KEY_ED25519.as_bytes()).string(&blob);
        w.string(&ed25519_signature_blob(&signature));
    }
    transport.send_packet(now, w.finish_packet());
}
