//! The client app's side of one connection: a `ClientSession` with the server's host key
//! pinned, running its script one exec channel at a time and verifying every byte that
//! comes back as it arrives (nothing of a 100 MB stream is buffered).

use blake2::{Blake2s256, Digest};
use mesh_core::ssh::channel::{open_failure, ChannelId, ChannelKind, ChannelRequest};
use mesh_core::ssh::client::ClientSession;
use mesh_core::ssh::connection::ConnectionEvent;
use mesh_core::ssh::event::SessionEvent;

use super::pipe::{Ctx, Pipe};
use super::programs::sink_report;
use super::records::{SshClientRecord, SshCommand, SshCommandResult, SshExpect, CAPTURE_LEN};
use crate::apps::StreamPattern;
use crate::trace::TraceRecord;

/// The most stdin written per channel write.
const CHUNK: usize = 32 << 10;

/// The command running now.
#[derive(Debug)]
struct Running {
    channel: ChannelId,
    command: SshCommand,
    /// The exec request was accepted: stdin flows.
    writing: bool,
    eof_sent: bool,
    /// BLAKE2s of the stdin sent, for a `sink` report.
    hasher: Option<Box<Blake2s256>>,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct ClientConn {
    /// Index into the world's client records.
    pub(crate) record: usize,
    pub(crate) session: ClientSession,
    pub(crate) pipe: Pipe,
    script: Vec<SshCommand>,
    next: usize,
    running: Option<Running>,
}

fn capture(into: &mut Vec<u8>, data: &[u8]) {
    let room = CAPTURE_LEN.saturating_sub(into.len());
    into.extend_from_slice(&data[..data.len().min(room)]);
}

impl ClientConn {
    pub(crate) fn new(record: usize, session: ClientSession, pipe: Pipe, script: Vec<SshCommand>) -> Self {
        Self { record, session, pipe, script, next: 0, running: None }
    }

    /// Run the connection to a fixpoint after an input (see `ServerConn::service`).
    pub(crate) fn service(&mut self, cx: &mut Ctx<'_>, record: &mut SshClientRecord, readable: bool) {
        if readable {
            self.pipe.read(cx.core, cx.now, &mut self.session, cx.buf);
        }
        if self.pipe.peer_eof && !self.session.is_closed() {
            self.session.disconnect(cx.now, "connection closed by peer");
        }
        loop {
            let mut progress = self.events(cx, record);
            progress |= self.produce(cx, record);
            progress |= self.pipe.flush(cx.core, cx.now, &mut self.session);
            if !progress {
                break;
            }
        }
        self.pipe.close_when_done(cx.core, cx.now, &self.session);
        record.tcp_sent = self.pipe.sent;
        record.tcp_received = self.pipe.received;
    }

    fn events(&mut self, cx: &mut Ctx<'_>, record: &mut SshClientRecord) -> bool {
        let mut any = false;
        while let Some(event) = self.session.poll_event() {
            any = true;
            match event {
                SessionEvent::Keyed { .. } => record.keyed_at = Some(cx.now),
                SessionEvent::Banner(text) => record.banners.push(text),
                SessionEvent::Authenticated { .. } => {
                    record.authenticated_at = Some(cx.now);
                    self.start_next(cx, record);
                }
                SessionEvent::AuthFailed => record.auth_failed = true,
                SessionEvent::Rekeyed => {
                    record.rekeys += 1;
                    cx.trace.record(cx.now, TraceRecord::SshRekeyed { node: cx.node });
                }
                SessionEvent::Closed(error) => record.session_end = Some(error.to_string()),
                SessionEvent::Connection(event) => self.connection_event(cx, record, event),
                SessionEvent::AuthRequest { .. } => {}
            }
        }
        any
    }

    /// Open the next command's channel, or disconnect when the script is done.
    fn start_next(&mut self, cx: &mut Ctx<'_>, record: &mut SshClientRecord) {
        let Some(command) = self.script.get(self.next).cloned() else {
            record.finished_at = Some(cx.now);
            self.session.disconnect(cx.now, "script done");
            return;
        };
        self.next += 1;
        let mut result = SshCommandResult::new(&command.command, cx.now);
        let opened = self.session.channels(cx.now).open(&ChannelKind::Session);
        match opened {
            Some(channel) => {
                let hasher = (command.expect == SshExpect::SinkReport).then(Box::default);
                self.running = Some(Running { channel, command, writing: false, eof_sent: false, hasher });
                record.commands.push(result);
            }
            None => {
                result.open_failed = Some("channel limit".into());
                record.commands.push(result);
                self.start_next(cx, record);
            }
        }
    }

    fn connection_event(&mut self, cx: &mut Ctx<'_>, record: &mut SshClientRecord, event: ConnectionEvent) {
        let Some(run) = self.running.as_mut() else {
            // Nothing runs: refuse whatever the server offers.
            if let ConnectionEvent::OpenRequest { channel, .. } = event {
                self.session.channels(cx.now).refuse(channel, open_failure::ADMINISTRATIVELY_PROHIBITED, "no");
            }
            return;
        };
        let Some(result) = record.commands.last_mut() else { return };
        let mut ch = self.session.channels(cx.now);
        match event {
            ConnectionEvent::Opened { channel } if channel == run.channel => {
                ch.request(channel, &ChannelRequest::Exec(run.command.command.clone().into_bytes()), true);
            }
            ConnectionEvent::OpenFailed { channel, description, .. } if channel == run.channel => {
                result.open_failed = Some(description);
                drop(ch);
                self.running = None;
                self.start_next(cx, record);
            }
            ConnectionEvent::RequestReply { channel, ok } if channel == run.channel => {
                result.accepted = Some(ok);
                if ok {
                    run.writing = true;
                } else {
                    ch.close(channel);
                }
            }
            ConnectionEvent::Data { channel, data } if channel == run.channel => {
                let offset = result.stdout_len;
                result.stdout_len += data.len() as u64;
                capture(&mut result.stdout, &data);
                let expected = match run.command.expect {
                    SshExpect::Echo => Some((StreamPattern::new(run.command.stdin_seed), run.command.stdin)),
                    SshExpect::Pattern { len, seed } => Some((StreamPattern::new(seed), len)),
                    SshExpect::Capture | SshExpect::SinkReport => None,
                };
                if let Some((pattern, len)) = expected {
                    let want = &mut cx.buf[..data.len()];
                    pattern.fill(offset, want);
                    if result.stdout_len > len || *want != data[..] {
                        result.matched = false;
                    }
                }
                ch.consume(channel, data.len());
            }
            ConnectionEvent::ExtendedData { channel, data, .. } if channel == run.channel => {
                result.stderr_len += data.len() as u64;
                capture(&mut result.stderr, &data);
                ch.consume(channel, data.len());
            }
            ConnectionEvent::Request { channel, request, want_reply } if channel == run.channel => {
                match request {
                    ChannelRequest::ExitStatus(status) => result.exit_status = Some(status),
                    ChannelRequest::ExitSignal { signal, .. } => result.exit_signal = Some(signal),
                    _ => {}
                }
                if want_reply {
                    ch.reply(channel, false);
                }
            }
            ConnectionEvent::Eof { channel } if channel == run.channel => result.eof_at = Some(cx.now),
            ConnectionEvent::Closed { channel } if channel == run.channel => {
                drop(ch);
                result.finished_at = Some(cx.now);
                let whole = match run.command.expect {
                    SshExpect::Capture => true,
                    SshExpect::Echo => result.stdout_len == run.command.stdin,
                    SshExpect::Pattern { len, .. } => result.stdout_len == len,
                    SshExpect::SinkReport => match run.hasher.take() {
                        Some(h) if result.stdin_sent == run.command.stdin => {
                            result.stdout == sink_report(result.stdin_sent, &h.finalize()).as_bytes()
                        }
                        _ => false,
                    },
                };
                result.matched &= whole;
                let status = result.exit_status;
                cx.trace.record(cx.now, TraceRecord::SshCommandDone { node: cx.node, status });
                self.running = None;
                self.start_next(cx, record);
            }
            ConnectionEvent::OpenRequest { channel, .. } => {
                ch.refuse(channel, open_failure::ADMINISTRATIVELY_PROHIBITED, "no");
            }
            ConnectionEvent::GlobalRequest { want_reply: true, .. } => ch.global_reply(false, None),
            _ => {}
        }
    }

    /// Write the running command's stdin within the pipe's budget; EOF when all is sent.
    fn produce(&mut self, cx: &mut Ctx<'_>, record: &mut SshClientRecord) -> bool {
        let budget = self.pipe.budget(&self.session);
        let Some(run) = self.running.as_mut().filter(|r| r.writing && !r.eof_sent) else { return false };
        let Some(result) = record.commands.last_mut() else { return false };
        let pattern = StreamPattern::new(run.command.stdin_seed);
        let mut ch = self.session.channels(cx.now);
        let mut budget = budget;
        let mut any = false;
        while budget > 0 && result.stdin_sent < run.command.stdin {
            let n = (run.command.stdin - result.stdin_sent).min(CHUNK as u64).min(budget as u64) as usize;
            let buf = &mut cx.buf[..n];
            pattern.fill(result.stdin_sent, buf);
            let k = ch.write(run.channel, buf);
            if k == 0 {
                break;
            }
            if let Some(h) = run.hasher.as_mut() {
                h.update(&buf[..k]);
            }
            result.stdin_sent += k as u64;
            budget = budget.saturating_sub(k);
            any = true;
        }
        if result.stdin_sent == run.command.stdin {
            ch.eof(run.channel);
            run.eof_sent = true;
            any = true;
        }
        any
    }
}
