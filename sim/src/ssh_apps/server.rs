//! The server app's side of one accepted connection: a `ServerSession`, the login decided
//! by the identity WireGuard vouched for, and session channels running simulated commands.

use std::collections::BTreeMap;

use mesh_core::ssh::channel::{open_failure, ChannelId, ChannelKind, ChannelRequest};
use mesh_core::ssh::connection::ConnectionEvent;
use mesh_core::ssh::event::SessionEvent;
use mesh_core::ssh::server::ServerSession;
use mesh_core::tcp::ConnId;
use mesh_core::time::Instant;

use super::pipe::{Ctx, Pipe};
use super::programs::ServerChannel;
use super::records::SshServerRecord;
use crate::trace::TraceRecord;

/// One accepted connection.
#[derive(Debug)]
pub(crate) struct ServerConn {
    /// Index into the world's server records.
    pub(crate) record: usize,
    pub(crate) session: ServerSession,
    pub(crate) pipe: Pipe,
    /// The identity check's answer, fixed at accept time: the connection's `PeerId`
    /// resolves to a node in the allow set.
    allowed: bool,
    channels: BTreeMap<ChannelId, ServerChannel>,
}

impl ServerConn {
    pub(crate) fn new(record: usize, session: ServerSession, conn: ConnId, allowed: bool) -> Self {
        Self { record, session, pipe: Pipe::new(conn, true), allowed, channels: BTreeMap::new() }
    }

    /// The earliest of the session's deadline and the programs' (a sleep ending).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let programs = self.channels.values().filter_map(ServerChannel::deadline);
        self.session.poll_timeout().into_iter().chain(programs).min()
    }

    /// Run the connection to a fixpoint after an input: read (on `Readable`), act on the
    /// session's events, let the programs write, flush to TCP, close when over.
    pub(crate) fn service(&mut self, cx: &mut Ctx<'_>, record: &mut SshServerRecord, readable: bool) {
        if readable {
            self.pipe.read(cx.core, cx.now, &mut self.session, cx.buf);
        }
        if self.pipe.peer_eof && !self.session.is_closed() {
            self.session.disconnect("connection closed by peer");
        }
        loop {
            let mut progress = self.events(cx, record);
            progress |= self.produce(record, cx.now);
            progress |= self.pipe.flush(cx.core, cx.now, &mut self.session);
            if !progress {
                break;
            }
        }
        self.pipe.close_when_done(cx.core, cx.now, &self.session);
    }

    fn events(&mut self, cx: &mut Ctx<'_>, record: &mut SshServerRecord) -> bool {
        let mut any = false;
        while let Some(event) = self.session.poll_event() {
            any = true;
            match event {
                SessionEvent::AuthRequest { user } => {
                    record.user = Some(user);
                    record.authenticated = Some(self.allowed);
                    let peer = record.peer_node;
                    cx.trace.record(cx.now, TraceRecord::SshAuth { node: cx.node, peer, accepted: self.allowed });
                    if self.allowed {
                        self.session.accept_auth();
                    } else {
                        self.session.deny_auth(Some("this node may not log in here"));
                    }
                }
                SessionEvent::Rekeyed => {
                    record.rekeys += 1;
                    cx.trace.record(cx.now, TraceRecord::SshRekeyed { node: cx.node });
                }
                SessionEvent::Closed(error) => record.session_end = Some(error.to_string()),
                SessionEvent::Connection(event) => self.connection_event(event, record, cx.now),
                SessionEvent::Keyed { .. }
                | SessionEvent::Authenticated { .. }
                | SessionEvent::Banner(_)
                | SessionEvent::AuthFailed => {}
            }
        }
        any
    }

    fn connection_event(&mut self, event: ConnectionEvent, record: &mut SshServerRecord, now: Instant) {
        let mut ch = self.session.channels();
        match event {
            ConnectionEvent::OpenRequest { channel, kind: ChannelKind::Session } => {
                ch.accept(channel);
                self.channels.insert(channel, ServerChannel::new(channel));
            }
            ConnectionEvent::OpenRequest { channel, .. } => {
                ch.refuse(channel, open_failure::ADMINISTRATIVELY_PROHIBITED, "only session channels");
            }
            ConnectionEvent::Request { channel, request, want_reply } => {
                let ok = match (&request, self.channels.get_mut(&channel)) {
                    (ChannelRequest::Exec(command), Some(c)) => {
                        let command = String::from_utf8_lossy(command).into_owned();
                        let started = c.exec(&command, now);
                        if started {
                            record.commands.push(command);
                        }
                        started
                    }
                    // No terminals, shells, subsystems or environment in the simulator.
                    _ => false,
                };
                if want_reply {
                    ch.reply(channel, ok);
                }
            }
            ConnectionEvent::Data { channel, data } => {
                record.data_in += data.len() as u64;
                match self.channels.get_mut(&channel) {
                    Some(c) => c.data(&mut ch, data),
                    None => ch.consume(channel, data.len()),
                }
            }
            ConnectionEvent::ExtendedData { channel, data, .. } => ch.consume(channel, data.len()),
            ConnectionEvent::Eof { channel } => {
                if let Some(c) = self.channels.get_mut(&channel) {
                    c.eof();
                }
            }
            ConnectionEvent::Closed { channel } => {
                self.channels.remove(&channel);
            }
            // No port forwarding in the simulator.
            ConnectionEvent::GlobalRequest { want_reply: true, .. } => ch.global_reply(false, None),
            // The programs write whenever they are serviced; nothing else is ours to act on.
            ConnectionEvent::Writable { .. }
            | ConnectionEvent::Opened { .. }
            | ConnectionEvent::OpenFailed { .. }
            | ConnectionEvent::RequestReply { .. }
            | ConnectionEvent::GlobalRequest { .. }
            | ConnectionEvent::GlobalReply { .. } => {}
        }
    }

    /// Let every channel's program write within the pipe's budget, in channel order.
    fn produce(&mut self, record: &mut SshServerRecord, now: Instant) -> bool {
        if self.channels.is_empty() || self.session.is_closed() {
            return false;
        }
        let mut budget = self.pipe.budget(&self.session);
        let mut ch = self.session.channels();
        let mut any = false;
        for channel in self.channels.values_mut() {
            let progress = channel.produce(&mut ch, &mut budget, now);
            record.data_out += progress.written;
            if let Some(status) = progress.exited {
                record.exit_statuses.push(status);
            }
            any |= progress.written > 0 || progress.exited.is_some();
        }
        any
    }
}
