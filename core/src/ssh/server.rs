//! The server side of an SSH session: the transport, authentication decided by the
//! application on the first USERAUTH_REQUEST (RFC 4252, identity from WireGuard), then the
//! connection protocol. Nothing of the connection protocol is reachable before the
//! decision is "accept" (libssh CVE-2018-10933: a client's USERAUTH_SUCCESS or
//! CHANNEL_OPEN before auth disconnects).
//!
//! Time limits: the whole login must finish within [`ServerConfig::login_grace`] (OpenSSH's
//! LoginGraceTime), except that a held decision ([`ServerSession::auth_banner`]) may take
//! up to [`ServerConfig::hold_timeout`] from the request.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ed25519_dalek::SigningKey;

use super::connection::{Channels, Connection, ConnectionConfig, Side};
use super::event::SessionEvent;
use super::msg;
use super::transport::{Role, Transport, TransportConfig, TransportError, TransportEvent};
use super::wire::{Reader, Writer};
use crate::rng::Rng;
use crate::time::Instant;

/// A server session's settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub transport: TransportConfig,
    pub connection: ConnectionConfig,
    /// From connection to authenticated (OpenSSH's LoginGraceTime default).
    pub login_grace: Duration,
    /// How long a held decision may take (a `check` rule waits for a person to log in
    /// with the identity provider: 30 minutes).
    pub hold_timeout: Duration,
    /// Failures answered before the connection is closed.
    pub max_auth_attempts: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            transport: TransportConfig::default(),
            connection: ConnectionConfig::default(),
            login_grace: Duration::from_secs(120),
            hold_timeout: Duration::from_secs(30 * 60),
            max_auth_attempts: 3,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auth {
    AwaitServiceRequest,
    /// SERVICE_ACCEPT sent; no USERAUTH_REQUEST yet.
    AwaitRequest,
    /// The application is deciding (the client waits for our answer).
    Deciding,
    /// Denied: every further request gets a failure, and a few of them end the connection.
    Denied,
    Authenticated,
}

/// One server connection.
#[derive(Debug)]
pub struct ServerSession {
    transport: Transport,
    connection: Connection,
    config: ServerConfig,
    auth: Auth,
    /// The user of the first USERAUTH_REQUEST; changing it later is refused.
    user: Option<String>,
    failures: u32,
    /// The client's one EXT_INFO (before SERVICE_REQUEST) was seen.
    client_ext_info: bool,
    /// When an unfinished login is cut off.
    deadline: Option<Instant>,
    events: VecDeque<SessionEvent>,
}

impl ServerSession {
    pub fn new(host_key: SigningKey, config: ServerConfig, rng: Rng, now: Instant) -> Self {
        let transport = Transport::new(Role::Server { host_key }, config.transport.clone(), rng, now);
        Self {
            transport,
            connection: Connection::new(Side::Server, config.connection.clone()),
            deadline: Some(now + config.login_grace),
            config,
            auth: Auth::AwaitServiceRequest,
            user: None,
            failures: 0,
            client_ext_info: false,
            events: VecDeque::new(),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.transport.poll_transmit()
    }

    /// Bytes waiting to be sent: stop feeding channel data while this is large.
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
        match (self.deadline, self.transport.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
        if self.deadline.is_some_and(|d| now >= d) {
            self.deadline = None;
            let what = if self.auth == Auth::Deciding { "authorization decision" } else { "login grace time" };
            self.transport.close(TransportError::Timeout(what));
        }
        self.transport.handle_timeout(now);
        self.pump(now);
    }

    /// End the session with a DISCONNECT saying `why` (e.g. access revoked by policy).
    pub fn disconnect(&mut self, now: Instant, why: &str) {
        self.transport.close(TransportError::Application(why.to_string()));
        self.pump(now);
    }

    /// Drain the transport: its events, then the messages for auth and connection.
    fn pump(&mut self, now: Instant) {
        loop {
            while let Some(event) = self.transport.poll_event() {
                self.events.push_back(match event {
                    TransportEvent::Keyed { negotiated, host_key } => SessionEvent::Keyed { host_key, negotiated },
                    TransportEvent::Rekeyed => SessionEvent::Rekeyed,
                    TransportEvent::Closed(error) => {
                        self.deadline = None;
                        SessionEvent::Closed(error)
                    }
                });
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
        match (self.auth, number) {
            (Auth::AwaitServiceRequest, msg::SERVICE_REQUEST) => {
                let mut r = Reader::new(&payload[1..]);
                let service = r.string()?;
                r.finish()?;
                if service != b"ssh-userauth" {
                    return Err(TransportError::Protocol("only ssh-userauth is served"));
                }
                let mut w = Writer::packet(msg::SERVICE_ACCEPT, 16);
                w.string(b"ssh-userauth");
                self.transport.send_packet(now, w.finish_packet());
                self.auth = Auth::AwaitRequest;
                Ok(())
            }
            // OpenSSH >= 9.6 answers our ext-info-s with its own EXT_INFO right after its
            // first NEWKEYS (ext-info-in-auth@openssh.com); nothing in it concerns us.
            (Auth::AwaitServiceRequest, msg::EXT_INFO) if !self.client_ext_info => {
                self.client_ext_info = true;
                let mut r = Reader::new(&payload[1..]);
                let count = r.u32()?;
                for _ in 0..count {
                    r.string()?;
                    r.string()?;
                }
                r.finish()?;
                Ok(())
            }
            (Auth::AwaitRequest | Auth::Deciding | Auth::Denied, msg::USERAUTH_REQUEST) => {
                self.on_auth_request(now, payload)
            }
            // RFC 4252 section 5.1: requests after success are ignored.
            (Auth::Authenticated, msg::USERAUTH_REQUEST) => Ok(()),
            (Auth::Authenticated, msg::GLOBAL_REQUEST..=msg::CHANNEL_FAILURE) => {
                self.connection.handle_message(&mut self.transport.sender(now), payload)
            }
            // RFC 4253 section 11.4: an unrecognized message gets UNIMPLEMENTED, once
            // authenticated (before, every message out of place ends the connection).
            (Auth::Authenticated, n) if n > msg::CHANNEL_FAILURE => {
                self.transport.send_unimplemented(now, seq);
                Ok(())
            }
            (_, n) => Err(TransportError::Unexpected(n)),
        }
    }

    fn on_auth_request(&mut self, now: Instant, payload: &[u8]) -> Result<(), TransportError> {
        let mut r = Reader::new(&payload[1..]);
        let user = r.utf8()?;
        let service = r.string()?;
        let _method = r.string()?; // none, publickey, password...: identity is not from here
        if service != b"ssh-connection" {
            return Err(TransportError::Protocol("only ssh-connection is served"));
        }
        match (&self.user, self.auth) {
            (None, _) => {
                self.user = Some(user.to_string());
                self.auth = Auth::Deciding;
                self.deadline = Some(now + self.config.hold_timeout);
                self.events.push_back(SessionEvent::AuthRequest { user: user.to_string() });
                Ok(())
            }
            (Some(first), _) if first != user => Err(TransportError::Protocol("user changed during authentication")),
            // A client that does not wait for our decision: answer later, once.
            (Some(_), Auth::Deciding) => Ok(()),
            _ => self.fail_auth(now),
        }
    }

    fn fail_auth(&mut self, now: Instant) -> Result<(), TransportError> {
        self.failures += 1;
        if self.failures > self.config.max_auth_attempts {
            return Err(TransportError::Protocol("too many authentication attempts"));
        }
        // No methods left: the client gives up instead of trying keys or passwords.
        let mut w = Writer::packet(msg::USERAUTH_FAILURE, 8);
        w.name_list([]).bool(false);
        self.transport.send_packet(now, w.finish_packet());
        self.auth = Auth::Denied;
        self.deadline = Some(now + self.config.login_grace.min(Duration::from_secs(10)));
        Ok(())
    }

    /// Show `text` to the user before the decision (e.g. the URL of a `check` rule).
    pub fn auth_banner(&mut self, now: Instant, text: &str) {
        if matches!(self.auth, Auth::Deciding | Auth::AwaitRequest) {
            let mut w = Writer::packet(msg::USERAUTH_BANNER, text.len() + 8);
            w.string(text.as_bytes()).string(b"");
            self.transport.send_packet(now, w.finish_packet());
        }
    }

    /// Grant the pending request: USERAUTH_SUCCESS.
    pub fn accept_auth(&mut self, now: Instant) {
        if self.auth != Auth::Deciding || self.transport.is_closed() {
            return;
        }
        self.transport.send_packet(now, Writer::packet(msg::USERAUTH_SUCCESS, 0).finish_packet());
        self.auth = Auth::Authenticated;
        self.deadline = None;
        let user = self.user.clone().unwrap_or_default();
        self.events.push_back(SessionEvent::Authenticated { user });
    }

    /// Refuse: an optional banner saying why, then a failure with no methods left.
    pub fn deny_auth(&mut self, now: Instant, banner: Option<&str>) {
        if self.auth != Auth::Deciding {
            return;
        }
        if let Some(text) = banner {
            self.auth_banner(now, text);
        }
        if let Err(error) = self.fail_auth(now) {
            self.transport.close(error);
        }
        self.pump(now);
    }

    /// The channel operations (write, reply, close, ...): `None` until authentication
    /// succeeded, so nothing of the connection protocol can be reached before. They act at
    /// `now`.
    pub fn channels(&mut self, now: Instant) -> Option<Channels<'_>> {
        (self.auth == Auth::Authenticated)
            .then(|| Channels::new(&mut self.connection, &mut self.transport, &mut self.events, now))
    }
}
