//! The connection protocol (RFC 4254) for both roles: channels with flow control, channel
//! requests, global requests. It runs only after authentication (the session types make
//! sure of that) and sends through the [`Transport`] it is handed.
//!
//! Flow control: we grant the peer a window of [`ConnectionConfig::window`] bytes per
//! channel and top it up only when the application says it has consumed data
//! ([`Connection::consume`]), so a slow consumer slows the sender instead of growing a
//! buffer. Writes take what the peer's window allows and report the rest as not taken;
//! [`ConnectionEvent::Writable`] says when to try again.

use std::collections::VecDeque;

use bytes::Bytes;

use super::channel::{open_failure, ChannelId, ChannelKind, ChannelRequest, GlobalRequest};
pub use super::event::ConnectionEvent;
use super::event::SessionEvent;
use super::msg;
use super::transport::{Sender, Transport, TransportError};
use super::wire::{peer_text, Reader, Writer};
use crate::time::Instant;

/// Per-connection limits.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// The window we grant each channel (OpenSSH's session default: 2 MiB).
    pub window: u32,
    /// The largest data packet we accept.
    pub max_packet: u32,
    /// Channels open at once; more are refused with "resource shortage".
    pub max_channels: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self { window: 2 * 1024 * 1024, max_packet: 32 * 1024, max_channels: 64 }
    }
}

/// Largest data chunk we put in one packet whatever the peer allows.
const MAX_SEND_CHUNK: u32 = 64 * 1024;
/// Channel data below this size is copied out of the receive buffer.
const SMALL_DATA: usize = 4096;
/// Global requests the peer may have waiting for an answer.
const MAX_PENDING_GLOBAL: usize = 64;
/// Channel requests per channel waiting for the application's answer or the peer's.
const MAX_PENDING_REQUESTS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// We sent CHANNEL_OPEN.
    Opening,
    /// The peer sent CHANNEL_OPEN; the application decides.
    Offered,
    Open,
}

#[derive(Debug)]
struct Channel {
    remote: u32,
    phase: Phase,
    /// Bytes the peer may still send.
    local_window: u32,
    /// Bytes consumed by the application not yet given back to the peer.
    consumed: u32,
    remote_window: u32,
    remote_max_packet: u32,
    sent_eof: bool,
    received_eof: bool,
    sent_close: bool,
    received_close: bool,
    /// A write was cut short by the window: report [`ConnectionEvent::Writable`].
    blocked: bool,
    /// Our requests waiting for the peer's reply.
    awaiting_replies: usize,
    /// Replies owed to the peer's requests, in their order: `None` while the application
    /// decides, `Some(ok)` once answered (unknown requests are answered at once, but a
    /// reply goes out only after those before it).
    owed: VecDeque<Option<bool>>,
}

/// Who may open which channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// One connection's channels and global requests.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: ConnectionConfig,
    channels: Vec<Option<Channel>>,
    open_count: usize,
    /// Where the search for a free channel slot starts.
    next_slot: usize,
    events: VecDeque<ConnectionEvent>,
    /// The peer's global requests in arrival order: `None` while the application decides,
    /// `Some(answer)` once answered (answers go out in order).
    global_owed: VecDeque<Option<(bool, Option<u32>)>>,
    /// Our global requests waiting for a reply (true = tcpip-forward, whose success may
    /// carry a port).
    global_awaiting: VecDeque<bool>,
}

fn protocol(what: &'static str) -> TransportError {
    TransportError::Protocol(what)
}

impl Connection {
    pub fn new(side: Side, config: ConnectionConfig) -> Self {
        Self {
            side,
            config,
            channels: Vec::new(),
            open_count: 0,
            next_slot: 0,
            events: VecDeque::new(),
            global_owed: VecDeque::new(),
            global_awaiting: VecDeque::new(),
        }
    }

    pub fn poll_event(&mut self) -> Option<ConnectionEvent> {
        self.events.pop_front()
    }

    /// Channels that exist (any phase).
    pub fn channel_count(&self) -> usize {
        self.open_count
    }

    fn channel(&mut self, id: ChannelId) -> Option<&mut Channel> {
        self.channels.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    /// The channel a message from the peer names, which must be open for data unless
    /// `allow_opening`.
    fn peer_channel(&mut self, id: u32, allow_opening: bool) -> Result<&mut Channel, TransportError> {
        match self.channels.get_mut(id as usize).and_then(Option::as_mut) {
            Some(c) if c.phase == Phase::Open || allow_opening && c.phase == Phase::Opening => Ok(c),
            _ => Err(protocol("message for an unknown or unconfirmed channel")),
        }
    }

    fn allocate(&mut self, channel: Channel) -> Option<ChannelId> {
        if self.open_count >= self.config.max_channels {
            return None;
        }
        // The free slot after the last one handed out, so a just-closed id is not reused
        // at once (an application still holding it would act on the new channel).
        let n = self.channels.len();
        let index = match (0..n).map(|k| (self.next_slot + k) % n.max(1)).find(|&i| self.channels[i].is_none()) {
            Some(i) if n >= self.config.max_channels => i,
            _ => {
                self.channels.push(None);
                n
            }
        };
        self.next_slot = index + 1;
        self.channels[index] = Some(channel);
        self.open_count += 1;
        Some(ChannelId(index as u32))
    }

    fn free(&mut self, id: ChannelId) {
        if let Some(slot) = self.channels.get_mut(id.0 as usize) {
            if slot.take().is_some() {
                self.open_count -= 1;
            }
        }
    }

    fn new_channel(&self, remote: u32, phase: Phase, remote_window: u32, remote_max_packet: u32) -> Channel {
        Channel {
            remote,
            phase,
            local_window: self.config.window,
            consumed: 0,
            remote_window,
            remote_max_packet,
            sent_eof: false,
            received_eof: false,
            sent_close: false,
            received_close: false,
            blocked: false,
            awaiting_replies: 0,
            owed: VecDeque::new(),
        }
    }

    /// A message of the connection protocol from the peer.
    pub fn handle_message(&mut self, t: &mut Sender<'_>, payload: &Bytes) -> Result<(), TransportError> {
        let number = payload[0];
        let mut r = Reader::new(&payload[1..]);
        match number {
            msg::GLOBAL_REQUEST => self.on_global_request(t, &mut r),
            msg::REQUEST_SUCCESS | msg::REQUEST_FAILURE => {
                let tcpip = self.global_awaiting.pop_front().ok_or(protocol("unsolicited global reply"))?;
                let port =
                    if number == msg::REQUEST_SUCCESS && tcpip && r.remaining() >= 4 { Some(r.u32()?) } else { None };
                self.events.push_back(ConnectionEvent::GlobalReply { ok: number == msg::REQUEST_SUCCESS, port });
                Ok(())
            }
            msg::CHANNEL_OPEN => self.on_open(t, &mut r),
            msg::CHANNEL_OPEN_CONFIRMATION => {
                let id = r.u32()?;
                let (remote, window, max_packet) = (r.u32()?, r.u32()?, r.u32()?);
                let c = self.channel(ChannelId(id)).filter(|c| c.phase == Phase::Opening);
                let c = c.ok_or(protocol("confirmation for a channel not being opened"))?;
                if max_packet == 0 {
                    return Err(protocol("maximum packet size 0"));
                }
                c.remote = remote;
                c.remote_window = window;
                c.remote_max_packet = max_packet;
                c.phase = Phase::Open;
                self.events.push_back(ConnectionEvent::Opened { channel: ChannelId(id) });
                Ok(())
            }
            msg::CHANNEL_OPEN_FAILURE => {
                let id = r.u32()?;
                let reason = r.u32()?;
                let description = peer_text(r.string()?, 256, false);
                if !self.channel(ChannelId(id)).is_some_and(|c| c.phase == Phase::Opening) {
                    return Err(protocol("open failure for a channel not being opened"));
                }
                self.free(ChannelId(id));
                self.events.push_back(ConnectionEvent::OpenFailed { channel: ChannelId(id), reason, description });
                Ok(())
            }
            msg::CHANNEL_WINDOW_ADJUST => {
                let id = r.u32()?;
                let add = r.u32()?;
                r.finish()?;
                let c = self.peer_channel(id, false)?;
                c.remote_window = c.remote_window.checked_add(add).ok_or(protocol("channel window overflow"))?;
                if c.blocked && c.remote_window > 0 {
                    c.blocked = false;
                    self.events.push_back(ConnectionEvent::Writable { channel: ChannelId(id) });
                }
                Ok(())
            }
            msg::CHANNEL_DATA | msg::CHANNEL_EXTENDED_DATA => {
                let id = r.u32()?;
                let code = if number == msg::CHANNEL_EXTENDED_DATA { Some(r.u32()?) } else { None };
                let len = r.u32()? as usize;
                if r.remaining() != len {
                    return Err(protocol("channel data length mismatch"));
                }
                let max_packet = self.config.max_packet;
                let c = self.peer_channel(id, false)?;
                if c.received_eof || c.received_close {
                    return Err(protocol("channel data after EOF"));
                }
                if len > c.local_window as usize || len > max_packet as usize {
                    return Err(protocol("channel data beyond the window"));
                }
                c.local_window -= len as u32;
                // Large data is a slice of the decrypted packet (no copy); small data is
                // copied so that a few held bytes cannot pin a whole receive buffer.
                let data = if len >= SMALL_DATA {
                    payload.slice(payload.len() - len..)
                } else {
                    Bytes::copy_from_slice(&payload[payload.len() - len..])
                };
                let channel = ChannelId(id);
                self.events.push_back(match code {
                    None => ConnectionEvent::Data { channel, data },
                    Some(code) => ConnectionEvent::ExtendedData { channel, code, data },
                });
                Ok(())
            }
            msg::CHANNEL_EOF => {
                let id = r.u32()?;
                r.finish()?;
                let c = self.peer_channel(id, false)?;
                if !c.received_eof {
                    c.received_eof = true;
                    self.events.push_back(ConnectionEvent::Eof { channel: ChannelId(id) });
                }
                Ok(())
            }
            msg::CHANNEL_CLOSE => {
                let id = r.u32()?;
                r.finish()?;
                let c = self.peer_channel(id, false)?;
                if c.received_close {
                    return Err(protocol("channel closed twice"));
                }
                c.received_close = true;
                self.close(t, ChannelId(id));
                Ok(())
            }
            msg::CHANNEL_REQUEST => self.on_channel_request(t, &mut r),
            msg::CHANNEL_SUCCESS | msg::CHANNEL_FAILURE => {
                let id = r.u32()?;
                r.finish()?;
                let c = self.peer_channel(id, false)?;
                if c.awaiting_replies == 0 {
                    return Err(protocol("unsolicited channel reply"));
                }
                c.awaiting_replies -= 1;
                let ok = number == msg::CHANNEL_SUCCESS;
                self.events.push_back(ConnectionEvent::RequestReply { channel: ChannelId(id), ok });
                Ok(())
            }
            other => Err(TransportError::Unexpected(other)),
        }
    }

    fn on_global_request(&mut self, t: &mut Sender<'_>, r: &mut Reader<'_>) -> Result<(), TransportError> {
        let name = r.string()?;
        let want_reply = r.bool()?;
        let request = GlobalRequest::decode(name, r)?;
        let for_application = matches!(
            (&request, self.side),
            (GlobalRequest::TcpipForward { .. } | GlobalRequest::CancelTcpipForward { .. }, Side::Server)
        );
        if !want_reply {
            if for_application {
                self.events.push_back(ConnectionEvent::GlobalRequest { request, want_reply });
            }
            return Ok(());
        }
        if self.global_owed.len() >= MAX_PENDING_GLOBAL {
            return Err(protocol("too many global requests waiting"));
        }
        if for_application {
            self.global_owed.push_back(None);
            self.events.push_back(ConnectionEvent::GlobalRequest { request, want_reply });
        } else {
            self.global_owed.push_back(Some((false, None)));
            self.flush_global_replies(t);
        }
        Ok(())
    }

    fn flush_global_replies(&mut self, t: &mut Sender<'_>) {
        while let Some(Some((ok, port))) = self.global_owed.front().cloned() {
            self.global_owed.pop_front();
            let mut w = Writer::packet(if ok { msg::REQUEST_SUCCESS } else { msg::REQUEST_FAILURE }, 4);
            if let (true, Some(port)) = (ok, port) {
                w.u32(port);
            }
            t.send_packet(w.finish_packet());
        }
    }

    /// Answer the oldest global request still waiting for the application (`port`: the
    /// port bound for a `tcpip-forward` of port 0).
    pub fn global_reply(&mut self, t: &mut Sender<'_>, ok: bool, port: Option<u32>) {
        if let Some(slot) = self.global_owed.iter_mut().find(|s| s.is_none()) {
            *slot = Some((ok, port));
        }
        self.flush_global_replies(t);
    }

    /// Send a global request.
    pub fn global_request(&mut self, t: &mut Sender<'_>, request: &GlobalRequest, want_reply: bool) {
        let mut w = Writer::packet(msg::GLOBAL_REQUEST, 64);
        w.string(request.type_name().as_bytes()).bool(want_reply);
        request.encode_fields(&mut w);
        if want_reply {
            self.global_awaiting.push_back(matches!(request, GlobalRequest::TcpipForward { .. }));
        }
        t.send_packet(w.finish_packet());
    }

    fn on_open(&mut self, t: &mut Sender<'_>, r: &mut Reader<'_>) -> Result<(), TransportError> {
        let type_name = r.string()?;
        let remote = r.u32()?;
        let window = r.u32()?;
        let max_packet = r.u32()?;
        let kind = ChannelKind::decode(type_name, r)?;
        let allowed = matches!(
            (&kind, self.side),
            (ChannelKind::Session | ChannelKind::DirectTcpip { .. }, Side::Server)
                | (ChannelKind::ForwardedTcpip { .. } | ChannelKind::AuthAgent, Side::Client)
        );
        let refusal = if matches!(kind, ChannelKind::Other(_)) {
            Some((open_failure::UNKNOWN_CHANNEL_TYPE, "unknown channel type"))
        } else if !allowed {
            Some((open_failure::ADMINISTRATIVELY_PROHIBITED, "channel type not allowed"))
        } else if max_packet < 1 {
            Some((open_failure::CONNECT_FAILED, "maximum packet size 0"))
        } else {
            None
        };
        let channel = self.new_channel(remote, Phase::Offered, window, max_packet);
        let id = match refusal {
            None => self.allocate(channel),
            Some(_) => None,
        };
        match id {
            Some(channel) => {
                self.events.push_back(ConnectionEvent::OpenRequest { channel, kind });
            }
            None => {
                let (reason, text) = refusal.unwrap_or((open_failure::RESOURCE_SHORTAGE, "too many channels"));
                send_open_failure(t, remote, reason, text);
            }
        }
        Ok(())
    }

    /// Accept a channel the peer offered.
    pub fn accept_channel(&mut self, t: &mut Sender<'_>, id: ChannelId) {
        let window = self.config.window;
        let max_packet = self.config.max_packet;
        let Some(c) = self.channel(id).filter(|c| c.phase == Phase::Offered) else { return };
        c.phase = Phase::Open;
        let mut w = Writer::packet(msg::CHANNEL_OPEN_CONFIRMATION, 16);
        w.u32(c.remote).u32(id.0).u32(window).u32(max_packet);
        t.send_packet(w.finish_packet());
    }

    /// Refuse a channel the peer offered.
    pub fn refuse_channel(&mut self, t: &mut Sender<'_>, id: ChannelId, reason: u32, text: &str) {
        let Some(c) = self.channel(id).filter(|c| c.phase == Phase::Offered) else { return };
        let remote = c.remote;
        self.free(id);
        send_open_failure(t, remote, reason, text);
    }

    /// Open a channel of `kind`; [`ConnectionEvent::Opened`] or `OpenFailed` follows.
    /// `None` when the channel limit is reached.
    pub fn open_channel(&mut self, t: &mut Sender<'_>, kind: &ChannelKind) -> Option<ChannelId> {
        let channel = self.new_channel(0, Phase::Opening, 0, 0);
        let id = self.allocate(channel)?;
        let mut w = Writer::packet(msg::CHANNEL_OPEN, 64);
        w.string(kind.type_name().as_bytes()).u32(id.0).u32(self.config.window).u32(self.config.max_packet);
        kind.encode_fields(&mut w);
        t.send_packet(w.finish_packet());
        Some(id)
    }

    fn on_channel_request(&mut self, t: &mut Sender<'_>, r: &mut Reader<'_>) -> Result<(), TransportError> {
        let id = r.u32()?;
        let name = r.string()?;
        let want_reply = r.bool()?;
        let request = ChannelRequest::decode(name, r);
        let c = self.peer_channel(id, false)?;
        if c.received_close {
            return Err(protocol("request on a closed channel"));
        }
        let channel = ChannelId(id);
        let for_application = match request {
            Ok(ChannelRequest::Other(_)) | Err(_) => None,
            Ok(ChannelRequest::Eow) if !want_reply => return Ok(()),
            Ok(ChannelRequest::Eow) => None,
            Ok(request) => Some(request),
        };
        if want_reply {
            if c.owed.len() >= MAX_PENDING_REQUESTS {
                return Err(protocol("too many channel requests waiting"));
            }
            // Unknown or malformed: failure, in order with the application's answers.
            c.owed.push_back(if for_application.is_some() { None } else { Some(false) });
        }
        if let Some(request) = for_application {
            self.events.push_back(ConnectionEvent::Request { channel, request, want_reply });
        }
        self.flush_replies(t, channel);
        Ok(())
    }

    /// Send the replies at the front of `id`'s queue that are decided.
    fn flush_replies(&mut self, t: &mut Sender<'_>, id: ChannelId) {
        let Some(c) = self.channel(id) else { return };
        while let Some(Some(ok)) = c.owed.front().copied() {
            c.owed.pop_front();
            if c.sent_close {
                continue;
            }
            let mut w = Writer::packet(if ok { msg::CHANNEL_SUCCESS } else { msg::CHANNEL_FAILURE }, 4);
            w.u32(c.remote);
            t.send_packet(w.finish_packet());
        }
    }

    /// Answer the oldest request on `id` still waiting for the application.
    pub fn reply(&mut self, t: &mut Sender<'_>, id: ChannelId, ok: bool) {
        let Some(c) = self.channel(id) else { return };
        if let Some(slot) = c.owed.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(ok);
        }
        self.flush_replies(t, id);
    }

    /// Send a channel request (exit-status, pty-req, exec, ...).
    pub fn request(&mut self, t: &mut Sender<'_>, id: ChannelId, request: &ChannelRequest, want_reply: bool) {
        let Some(c) = self.channel(id).filter(|c| c.phase == Phase::Open && !c.sent_close) else { return };
        if want_reply {
            c.awaiting_replies += 1;
        }
        let mut w = Writer::packet(msg::CHANNEL_REQUEST, 64);
        w.u32(c.remote).string(request.type_name().as_bytes()).bool(want_reply);
        request.encode_fields(&mut w);
        t.send_packet(w.finish_packet());
    }

    /// Bytes [`Self::write`] would take now. An answer of 0 on an open channel counts as a
    /// write cut short: the peer's next window adjustment reports
    /// [`ConnectionEvent::Writable`] (an application that sizes its writes by this never
    /// writes more than the window, so `write` alone would never notice).
    pub fn writable(&mut self, id: ChannelId) -> usize {
        let Some(c) = self.channel(id).filter(|c| c.phase == Phase::Open && !c.sent_eof && !c.sent_close) else {
            return 0;
        };
        if c.remote_window == 0 {
            c.blocked = true;
        }
        c.remote_window as usize
    }

    /// Send `data` as far as the peer's window allows; returns how much was taken.
    pub fn write(&mut self, t: &mut Sender<'_>, id: ChannelId, data: &[u8]) -> usize {
        self.write_inner(t, id, None, data)
    }

    /// [`Self::write`] for extended data (code 1 = stderr).
    pub fn write_extended(&mut self, t: &mut Sender<'_>, id: ChannelId, code: u32, data: &[u8]) -> usize {
        self.write_inner(t, id, Some(code), data)
    }

    fn write_inner(&mut self, t: &mut Sender<'_>, id: ChannelId, code: Option<u32>, mut data: &[u8]) -> usize {
        let Some(c) = self.channel(id).filter(|c| c.phase == Phase::Open && !c.sent_eof && !c.sent_close) else {
            return 0;
        };
        let chunk_max = c.remote_max_packet.min(MAX_SEND_CHUNK) as usize;
        let mut taken = 0;
        while !data.is_empty() {
            let n = data.len().min(c.remote_window as usize).min(chunk_max);
            if n == 0 {
                break;
            }
            let (number, extra) = match code {
                None => (msg::CHANNEL_DATA, 8),
                Some(_) => (msg::CHANNEL_EXTENDED_DATA, 12),
            };
            let mut w = t.packet(number, extra + n);
            w.u32(c.remote);
            if let Some(code) = code {
                w.u32(code);
            }
            w.string(&data[..n]);
            t.send_packet(w.finish_packet());
            c.remote_window -= n as u32;
            taken += n;
            data = &data[n..];
        }
        if !data.is_empty() {
            c.blocked = true;
        }
        taken
    }

    /// The application has consumed `n` bytes of the channel's data: give window back in
    /// batches of at least half the window.
    pub fn consume(&mut self, t: &mut Sender<'_>, id: ChannelId, n: usize) {
        let window = self.config.window;
        let Some(c) = self.channel(id).filter(|c| c.phase == Phase::Open && !c.sent_close) else { return };
        // More than was received cannot be given back: the window never exceeds its size.
        let outstanding = window.saturating_sub(c.local_window);
        c.consumed = c.consumed.saturating_add(n.min(u32::MAX as usize) as u32).min(outstanding);
        if c.consumed >= window / 2 && !c.received_eof {
            let mut w = Writer::packet(msg::CHANNEL_WINDOW_ADJUST, 8);
            w.u32(c.remote).u32(c.consumed);
            t.send_packet(w.finish_packet());
            c.local_window += c.consumed;
            c.consumed = 0;
        }
    }

    /// No more data from us on `id`.
    pub fn eof(&mut self, t: &mut Sender<'_>, id: ChannelId) {
        let Some(c) = self.channel(id).filter(|c| c.phase == Phase::Open && !c.sent_eof && !c.sent_close) else {
            return;
        };
        c.sent_eof = true;
        let mut w = Writer::packet(msg::CHANNEL_EOF, 4);
        w.u32(c.remote);
        t.send_packet(w.finish_packet());
    }

    /// Close `id` (or answer the peer's close); the channel is gone once both sides closed.
    pub fn close(&mut self, t: &mut Sender<'_>, id: ChannelId) {
        let Some(c) = self.channel(id).filter(|c| c.phase == Phase::Open) else { return };
        if !c.sent_close {
            c.sent_close = true;
            let mut w = Writer::packet(msg::CHANNEL_CLOSE, 4);
            w.u32(c.remote);
            t.send_packet(w.finish_packet());
        }
        if c.received_close {
            self.free(id);
            self.events.push_back(ConnectionEvent::Closed { channel: id });
        }
    }

    /// Whether `id` exists and neither side has closed it.
    pub fn is_open(&mut self, id: ChannelId) -> bool {
        self.channel(id).is_some_and(|c| c.phase == Phase::Open && !c.sent_close && !c.received_close)
    }

    /// The channels that exist, in id order.
    pub fn channel_ids(&self) -> Vec<ChannelId> {
        (0..self.channels.len() as u32).filter(|&i| self.channels[i as usize].is_some()).map(ChannelId).collect()
    }
}

fn send_open_failure(t: &mut Sender<'_>, remote: u32, reason: u32, text: &str) {
    let mut w = Writer::packet(msg::CHANNEL_OPEN_FAILURE, 32);
    w.u32(remote).u32(reason).string(text.as_bytes()).string(b"");
    t.send_packet(w.finish_packet());
}

/// The channel operations of a session, borrowed from it; the connection's events go to
/// the session's queue when the borrow ends.
#[derive(Debug)]
pub struct Channels<'a> {
    connection: &'a mut Connection,
    transport: Sender<'a>,
    events: &'a mut VecDeque<SessionEvent>,
}

impl Drop for Channels<'_> {
    fn drop(&mut self) {
        while let Some(event) = self.connection.poll_event() {
            self.events.push_back(SessionEvent::Connection(event));
        }
    }
}

impl<'a> Channels<'a> {
    /// The channels of a session, acting at `now`.
    pub(crate) fn new(
        connection: &'a mut Connection,
        transport: &'a mut Transport,
        events: &'a mut VecDeque<SessionEvent>,
        now: Instant,
    ) -> Self {
        Self { connection, transport: transport.sender(now), events }
    }

    pub fn accept(&mut self, id: ChannelId) {
        self.connection.accept_channel(&mut self.transport, id);
    }

    pub fn refuse(&mut self, id: ChannelId, reason: u32, text: &str) {
        self.connection.refuse_channel(&mut self.transport, id, reason, text);
    }

    /// Open a channel; [`ConnectionEvent::Opened`] or `OpenFailed` follows.
    pub fn open(&mut self, kind: &ChannelKind) -> Option<ChannelId> {
        self.connection.open_channel(&mut self.transport, kind)
    }

    /// Answer the oldest channel request on `id` that wanted a reply.
    pub fn reply(&mut self, id: ChannelId, ok: bool) {
        self.connection.reply(&mut self.transport, id, ok);
    }

    pub fn request(&mut self, id: ChannelId, request: &ChannelRequest, want_reply: bool) {
        self.connection.request(&mut self.transport, id, request, want_reply);
    }

    /// Bytes [`Self::write`] would take now.
    pub fn writable(&mut self, id: ChannelId) -> usize {
        self.connection.writable(id)
    }

    /// Channel data, as far as the window allows; returns the bytes taken.
    pub fn write(&mut self, id: ChannelId, data: &[u8]) -> usize {
        self.connection.write(&mut self.transport, id, data)
    }

    /// Extended data (code 1 = stderr).
    pub fn write_extended(&mut self, id: ChannelId, code: u32, data: &[u8]) -> usize {
        self.connection.write_extended(&mut self.transport, id, code, data)
    }

    /// The application took `n` bytes of `id`'s data (window flow control).
    pub fn consume(&mut self, id: ChannelId, n: usize) {
        self.connection.consume(&mut self.transport, id, n);
    }

    pub fn eof(&mut self, id: ChannelId) {
        self.connection.eof(&mut self.transport, id);
    }

    pub fn close(&mut self, id: ChannelId) {
        self.connection.close(&mut self.transport, id);
    }

    pub fn is_open(&mut self, id: ChannelId) -> bool {
        self.connection.is_open(id)
    }

    pub fn ids(&self) -> Vec<ChannelId> {
        self.connection.channel_ids()
    }

    pub fn global_request(&mut self, request: &GlobalRequest, want_reply: bool) {
        self.connection.global_request(&mut self.transport, request, want_reply);
    }

    /// Answer the oldest global request waiting for the application.
    pub fn global_reply(&mut self, ok: bool, port: Option<u32>) {
        self.connection.global_reply(&mut self.transport, ok, port);
    }
}
