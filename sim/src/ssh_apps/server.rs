//! The server app's side of one SSH session the node's core runs on port 22: the login
//! decided by the identity the core bound the session to (the WireGuard peer, resolved to
//! a node), and session channels running simulated commands. The app never sees the TCP
//! connection; it acts through `Node::ssh_session`.

use std::collections::BTreeMap;

use mesh_core::node::{Node as CoreNode, SessionId};
use mesh_core::ssh::channel::{open_failure, ChannelId, ChannelKind, ChannelRequest};
use mesh_core::ssh::connection::{Channels, ConnectionEvent};
use mesh_core::ssh::event::SessionEvent;
use mesh_core::time::Instant;

use super::programs::ServerChannel;
use super::records::SshServerRecord;
use crate::ids::NodeId;
use crate::trace::{Trace, TraceRecord};

/// One session.
#[derive(Debug)]
pub(crate) struct ServerConn {
    /// Index into the world's server records.
    pub(crate) record: usize,
    session: SessionId,
    /// The identity check's answer, fixed when the session opened: its `PeerId` resolves
    /// to a node in the allow set.
    allowed: bool,
    channels: BTreeMap<ChannelId, ServerChannel>,
}

/// What handling a session event may touch besides the session.
pub(crate) struct ServerCtx<'a> {
    pub(crate) now: Instant,
    pub(crate) node: NodeId,
    pub(crate) core: &'a mut CoreNode,
    pub(crate) trace: &'a mut Trace,
}

impl ServerConn {
    pub(crate) fn new(record: usize, session: SessionId, allowed: bool) -> Self {
        Self { record, session, allowed, channels: BTreeMap::new() }
    }

    /// The programs' earliest deadline (a sleep ending); the session's own are the core's.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.channels.values().filter_map(ServerChannel::deadline).min()
    }

    /// Act on one event of the session, then let the programs write.
    pub(crate) fn event(&mut self, cx: &mut ServerCtx<'_>, record: &mut SshServerRecord, event: SessionEvent) {
        let now = cx.now;
        match event {
            SessionEvent::AuthRequest { user } => {
                record.user = Some(user);
                record.authenticated = Some(self.allowed);
                let peer = record.peer_node;
                cx.trace.record(now, TraceRecord::SshAuth { node: cx.node, peer, accepted: self.allowed });
                let allowed = self.allowed;
                cx.core.ssh_session(now, self.session, |s| {
                    if allowed {
                        s.accept_auth(now);
                    } else {
                        s.deny_auth(now, Some("this node may not log in here"));
                    }
                });
            }
            SessionEvent::Rekeyed => {
                record.rekeys += 1;
                cx.trace.record(now, TraceRecord::SshRekeyed { node: cx.node });
            }
            SessionEvent::Closed(error) => record.session_end = Some(error.to_string()),
            SessionEvent::Connection(event) => {
                let channels = &mut self.channels;
                cx.core.ssh_session(now, self.session, |s| {
                    if let Some(mut ch) = s.channels(now) {
                        connection_event(&mut ch, channels, event, record, now);
                    }
                });
            }
            SessionEvent::Keyed { .. }
            | SessionEvent::Authenticated { .. }
            | SessionEvent::Banner(_)
            | SessionEvent::AuthFailed => {}
        }
        self.produce(cx, record);
    }

    /// Let every channel's program write within the session's budget, in channel order.
    pub(crate) fn produce(&mut self, cx: &mut ServerCtx<'_>, record: &mut SshServerRecord) {
        if self.channels.is_empty() {
            return;
        }
        let now = cx.now;
        let mut budget = cx.core.ssh_budget(self.session);
        let channels = &mut self.channels;
        cx.core.ssh_session(now, self.session, |s| {
            let Some(mut ch) = s.channels(now) else { return };
            for channel in channels.values_mut() {
                let progress = channel.produce(&mut ch, &mut budget, now);
                record.data_out += progress.written;
                if let Some(status) = progress.exited {
                    record.exit_statuses.push(status);
                }
            }
        });
    }
}

fn connection_event(
    ch: &mut Channels<'_>,
    channels: &mut BTreeMap<ChannelId, ServerChannel>,
    event: ConnectionEvent,
    record: &mut SshServerRecord,
    now: Instant,
) {
    match event {
        ConnectionEvent::OpenRequest { channel, kind: ChannelKind::Session } => {
            ch.accept(channel);
            channels.insert(channel, ServerChannel::new(channel));
        }
        ConnectionEvent::OpenRequest { channel, .. } => {
            ch.refuse(channel, open_failure::ADMINISTRATIVELY_PROHIBITED, "only session channels");
        }
        ConnectionEvent::Request { channel, request, want_reply } => {
            let ok = match (&request, channels.get_mut(&channel)) {
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
            match channels.get_mut(&channel) {
                Some(c) => c.data(ch, data),
                None => ch.consume(channel, data.len()),
            }
        }
        ConnectionEvent::ExtendedData { channel, data, .. } => ch.consume(channel, data.len()),
        ConnectionEvent::Eof { channel } => {
            if let Some(c) = channels.get_mut(&channel) {
                c.eof();
            }
        }
        ConnectionEvent::Closed { channel } => {
            channels.remove(&channel);
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
