//! The simulated commands a server session channel can `exec` (the simulator runs no
//! processes). Each is a small state machine over its channel:
//!
//! - `exit N`: exits with status N at once.
//! - `cat`: echoes stdin to stdout; at the client's EOF, once everything is echoed, EOF and
//!   exit 0. Input is consumed (and the client's window reopened) only as it is echoed, so a
//!   slow reader slows the writer instead of growing a buffer.
//! - `sink`: consumes stdin; at EOF writes `"<bytes> <blake2s-256 hex>\n"` and exits 0.
//! - `source N SEED`: writes N bytes of `StreamPattern::new(SEED)`, then EOF and exit 0.
//! - `sleep S`: exits 0 after S seconds of virtual time (a long, quiet session: the
//!   sessions' timers, e.g. the time-based rekey, must fire on their own).
//! - anything else: `command not found` on stderr, exit 127 (what a shell does).
//!
//! The channel ends like OpenSSH's: EOF, `exit-status`, CLOSE.

use std::collections::VecDeque;

use blake2::{Blake2s256, Digest};
use bytes::Bytes;
use mesh_core::ssh::channel::{ChannelId, ChannelRequest};
use mesh_core::ssh::connection::Channels;
use mesh_core::time::Instant;

use crate::apps::StreamPattern;
use crate::trace::hex;

/// The most a program writes per call.
const CHUNK: usize = 32 << 10;

/// The `sink` report for `len` bytes whose BLAKE2s-256 is `digest`.
pub fn sink_report(len: u64, digest: &[u8]) -> String {
    format!("{len} {}\n", hex(digest))
}

#[derive(Debug)]
enum Program {
    Exit(u32),
    Cat { held: VecDeque<Bytes> },
    Sink { count: u64, hasher: Box<Blake2s256> },
    Source { pattern: StreamPattern, len: u64, sent: u64, buf: Vec<u8> },
    Sleep(u64),
    NotFound,
}

impl Program {
    fn parse(command: &str) -> Self {
        let words: Vec<&str> = command.split_whitespace().collect();
        let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
        match words.as_slice() {
            ["exit", n] => n.parse().map_or(Program::NotFound, Program::Exit),
            ["cat"] => Program::Cat { held: VecDeque::new() },
            ["sink"] => Program::Sink { count: 0, hasher: Box::default() },
            ["sleep", _] => number(1).map_or(Program::NotFound, Program::Sleep),
            ["source", _, _] => match (number(1), number(2)) {
                (Some(len), Some(seed)) => {
                    Program::Source { pattern: StreamPattern::new(seed), len, sent: 0, buf: vec![0; CHUNK] }
                }
                _ => Program::NotFound,
            },
            _ => Program::NotFound,
        }
    }
}

/// A session channel on the server and the command running in it.
#[derive(Debug)]
pub(crate) struct ServerChannel {
    id: ChannelId,
    program: Option<Program>,
    /// Text still to write (stdout, stderr) before the exit.
    text: Vec<u8>,
    text_stderr: bool,
    /// The client's EOF arrived.
    input_done: bool,
    /// Status to exit with once `text` is written.
    exit: Option<u32>,
    /// When a sleeping program exits.
    wake_at: Option<Instant>,
    /// EOF, exit-status and CLOSE were sent.
    finished: bool,
}

/// What a channel did during one call, for the connection's record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Data bytes written.
    pub(crate) written: u64,
    /// The program exited with this status.
    pub(crate) exited: Option<u32>,
}

impl ServerChannel {
    pub(crate) fn new(id: ChannelId) -> Self {
        Self {
            id,
            program: None,
            text: Vec::new(),
            text_stderr: false,
            input_done: false,
            exit: None,
            wake_at: None,
            finished: false,
        }
    }

    /// `exec`: start `command` at `now`. `false` if a command already runs in this channel.
    pub(crate) fn exec(&mut self, command: &str, now: Instant) -> bool {
        if self.program.is_some() {
            return false;
        }
        let program = Program::parse(command);
        match program {
            Program::Exit(n) => self.exit = Some(n),
            Program::Sleep(secs) => self.wake_at = Some(now + std::time::Duration::from_secs(secs)),
            Program::NotFound => {
                let name = command.split_whitespace().next().unwrap_or("");
                self.text = format!("sh: {name}: command not found\n").into_bytes();
                self.text_stderr = true;
                self.exit = Some(127);
            }
            _ => {}
        }
        self.program = Some(program);
        true
    }

    /// Channel data from the client. Consumed at once unless the program holds it.
    pub(crate) fn data(&mut self, ch: &mut Channels<'_>, data: Bytes) {
        match &mut self.program {
            Some(Program::Cat { held }) if !self.finished => held.push_back(data),
            Some(Program::Sink { count, hasher }) => {
                *count += data.len() as u64;
                hasher.update(&data);
                ch.consume(self.id, data.len());
            }
            // Input nobody reads is discarded (and its window given back).
            _ => ch.consume(self.id, data.len()),
        }
    }

    /// The client's EOF.
    pub(crate) fn eof(&mut self) {
        self.input_done = true;
        match &mut self.program {
            Some(Program::Sink { count, hasher }) => {
                let digest = std::mem::take(hasher).finalize();
                self.text = sink_report(*count, &digest).into_bytes();
                self.exit = Some(0);
            }
            Some(Program::Cat { .. }) => {}
            _ => {}
        }
    }

    /// When the program wants to run without any input (a sleep ending).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.wake_at.filter(|_| !self.finished)
    }

    /// Write what the program has to write, at most `budget` bytes; exit when done.
    pub(crate) fn produce(&mut self, ch: &mut Channels<'_>, budget: &mut usize, now: Instant) -> Progress {
        let mut progress = Progress::default();
        if self.finished {
            return progress;
        }
        let id = self.id;
        match &mut self.program {
            Some(Program::Cat { held }) => {
                while *budget > 0 {
                    let Some(front) = held.front_mut() else { break };
                    let n = ch.write(id, &front[..front.len().min(*budget)]);
                    if n == 0 {
                        break;
                    }
                    ch.consume(id, n);
                    *budget = budget.saturating_sub(n);
                    progress.written += n as u64;
                    if n == front.len() {
                        held.pop_front();
                    } else {
                        *front = front.slice(n..);
                    }
                }
                if self.input_done && held.is_empty() {
                    self.exit = Some(0);
                }
            }
            Some(Program::Source { pattern, len, sent, buf }) => {
                while *budget > 0 && *sent < *len {
                    let n = (*len - *sent).min(buf.len() as u64).min(*budget as u64) as usize;
                    pattern.fill(*sent, &mut buf[..n]);
                    let k = ch.write(id, &buf[..n]);
                    if k == 0 {
                        break;
                    }
                    *sent += k as u64;
                    *budget = budget.saturating_sub(k);
                    progress.written += k as u64;
                }
                if *sent == *len {
                    self.exit = Some(0);
                }
            }
            Some(Program::Sleep(_)) if self.wake_at.is_some_and(|t| now >= t) => self.exit = Some(0),
            _ => {}
        }
        if !self.text.is_empty() {
            let n = if self.text_stderr { ch.write_extended(id, 1, &self.text) } else { ch.write(id, &self.text) };
            self.text.drain(..n);
            progress.written += n as u64;
        }
        if let (Some(status), true) = (self.exit, self.text.is_empty()) {
            ch.eof(id);
            ch.request(id, &ChannelRequest::ExitStatus(status), false);
            ch.close(id);
            self.finished = true;
            progress.exited = Some(status);
        }
        progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_to_their_programs() {
        assert!(matches!(Program::parse("exit 7"), Program::Exit(7)));
        assert!(matches!(Program::parse("exit x"), Program::NotFound));
        assert!(matches!(Program::parse(" cat "), Program::Cat { .. }));
        assert!(matches!(Program::parse("sink"), Program::Sink { .. }));
        assert!(matches!(Program::parse("source 10 3"), Program::Source { len: 10, .. }));
        assert!(matches!(Program::parse("source 10"), Program::NotFound));
        assert!(matches!(Program::parse("sleep 5"), Program::Sleep(5)));
        assert!(matches!(Program::parse("rm -rf /"), Program::NotFound));
        let digest = Blake2s256::digest(b"abc");
        assert!(sink_report(3, &digest).starts_with("3 "));
        assert_eq!(sink_report(3, &digest).len(), 2 + 64 + 1);
    }
}
