//! What the SSH apps are told to do and what they saw: the client's script and results,
//! and the server's view of each connection. Records outlive the connections (and crashes)
//! so tests can inspect them after the run.

use std::fmt;

use mesh_core::node::SessionId;
use mesh_core::ssh::connection::ConnectionConfig;
use mesh_core::ssh::transport::TransportConfig;
use mesh_core::tcp::ConnId;
use mesh_core::time::Instant;
use mesh_core::wireguard::PeerId;

use crate::ids::NodeId;
pub use crate::ids::SshClientId;

/// How much of a command's stdout and stderr a result keeps (the rest is only counted and
/// verified).
pub const CAPTURE_LEN: usize = 4096;

/// What a command's stdout must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SshExpect {
    /// Anything: keep the first [`CAPTURE_LEN`] bytes.
    Capture,
    /// Exactly the stdin the client sent (`cat`).
    Echo,
    /// Exactly `len` bytes of `StreamPattern::new(seed)` (`source len seed`).
    Pattern { len: u64, seed: u64 },
    /// The `sink` report of the stdin the client sent: `"<bytes> <blake2s-256 hex>\n"`.
    SinkReport,
}

/// One command of a client's script: an exec channel, `stdin` bytes of a deterministic
/// pattern written to it (then EOF), and what its stdout must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshCommand {
    pub command: String,
    /// Bytes of `StreamPattern::new(stdin_seed)` to send before EOF.
    pub stdin: u64,
    pub stdin_seed: u64,
    pub expect: SshExpect,
}

impl SshCommand {
    /// Run `command` with no input; keep its output.
    pub fn exec(command: impl Into<String>) -> Self {
        Self { command: command.into(), stdin: 0, stdin_seed: 0, expect: SshExpect::Capture }
    }

    /// `cat` with `len` bytes of input, which must come back byte-exact.
    pub fn cat(len: u64, seed: u64) -> Self {
        Self { command: "cat".into(), stdin: len, stdin_seed: seed, expect: SshExpect::Echo }
    }

    /// `sink` with `len` bytes of input; the server's byte count and BLAKE2s of what it
    /// received must match what was sent.
    pub fn sink(len: u64, seed: u64) -> Self {
        Self { command: "sink".into(), stdin: len, stdin_seed: seed, expect: SshExpect::SinkReport }
    }

    /// `source len seed`: the server sends `len` bytes of a pattern, verified byte-exact.
    pub fn source(len: u64, seed: u64) -> Self {
        Self {
            command: format!("source {len} {seed}"),
            stdin: 0,
            stdin_seed: 0,
            expect: SshExpect::Pattern { len, seed },
        }
    }
}

/// How one command went, as the client saw it.
#[derive(Clone, PartialEq, Eq)]
pub struct SshCommandResult {
    pub command: String,
    pub started_at: Instant,
    /// The server's answer to the exec request.
    pub accepted: Option<bool>,
    /// The channel could not be opened (its failure description).
    pub open_failed: Option<String>,
    pub stdin_sent: u64,
    pub stdout_len: u64,
    /// The first [`CAPTURE_LEN`] bytes of stdout.
    pub stdout: Vec<u8>,
    pub stderr_len: u64,
    /// The first [`CAPTURE_LEN`] bytes of stderr.
    pub stderr: Vec<u8>,
    /// Every stdout byte so far was what [`SshExpect`] says (checked again at the end for
    /// lengths and reports).
    pub matched: bool,
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
    /// The server's EOF.
    pub eof_at: Option<Instant>,
    /// The channel closed on both sides.
    pub finished_at: Option<Instant>,
}

/// The start of captured output, as text, for failure reports.
fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 80;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]).into_owned();
    if bytes.len() > SHOWN {
        format!("{text}...")
    } else {
        text
    }
}

impl fmt::Debug for SshCommandResult {
    /// Everything but the captured output, of which only the start (a failure report must
    /// stay readable when a command printed kilobytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshCommandResult")
            .field("command", &self.command)
            .field("started_at", &self.started_at)
            .field("accepted", &self.accepted)
            .field("open_failed", &self.open_failed)
            .field("stdin_sent", &self.stdin_sent)
            .field("stdout_len", &self.stdout_len)
            .field("stdout", &excerpt(&self.stdout))
            .field("stderr_len", &self.stderr_len)
            .field("stderr", &excerpt(&self.stderr))
            .field("matched", &self.matched)
            .field("exit_status", &self.exit_status)
            .field("exit_signal", &self.exit_signal)
            .field("eof_at", &self.eof_at)
            .field("finished_at", &self.finished_at)
            .finish()
    }
}

impl SshCommandResult {
    pub(crate) fn new(command: &str, now: Instant) -> Self {
        Self {
            command: command.to_string(),
            started_at: now,
            accepted: None,
            open_failed: None,
            stdin_sent: 0,
            stdout_len: 0,
            stdout: Vec::new(),
            stderr_len: 0,
            stderr: Vec::new(),
            matched: true,
            exit_status: None,
            exit_signal: None,
            eof_at: None,
            finished_at: None,
        }
    }

    /// Finished, with exit status 0 and the expected stdout.
    pub fn is_ok(&self) -> bool {
        self.finished_at.is_some() && self.matched && self.exit_status == Some(0)
    }

    /// Start to close.
    pub fn duration(&self) -> Option<std::time::Duration> {
        self.finished_at.map(|t| t.saturating_duration_since(self.started_at))
    }

    /// The captured stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// How a client app connects and what it runs.
#[derive(Clone, Debug)]
pub struct SshClientConfig {
    pub user: String,
    pub transport: TransportConfig,
    pub connection: ConnectionConfig,
    /// The host key to pin; `None`: the key the server node's app really has (what the
    /// coordination server would distribute).
    pub host_key: Option<[u8; 32]>,
    pub script: Vec<SshCommand>,
}

impl SshClientConfig {
    /// Log in as `user` with default settings and run `script`.
    pub fn new(user: impl Into<String>, script: Vec<SshCommand>) -> Self {
        Self {
            user: user.into(),
            transport: TransportConfig::default(),
            connection: ConnectionConfig::default(),
            host_key: None,
            script,
        }
    }

    /// The same with this transport configuration (ciphers, rekey limits).
    pub fn with_transport(self, transport: TransportConfig) -> Self {
        Self { transport, ..self }
    }
}

/// A client connection, as the client app saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshClientRecord {
    pub id: SshClientId,
    pub from: NodeId,
    pub to: NodeId,
    pub conn: ConnId,
    pub opened_at: Instant,
    pub connected_at: Option<Instant>,
    /// The first key exchange finished (with the pinned host key).
    pub keyed_at: Option<Instant>,
    pub authenticated_at: Option<Instant>,
    /// The server refused us.
    pub auth_failed: bool,
    pub banners: Vec<String>,
    /// One per command started, in script order.
    pub commands: Vec<SshCommandResult>,
    /// Commands in the script.
    pub script_len: usize,
    /// Key exchanges after the first (`SessionEvent::Rekeyed`).
    pub rekeys: u64,
    /// Every command of the script finished and the client disconnected.
    pub finished_at: Option<Instant>,
    /// Why the session ended (our own "script done" included).
    pub session_end: Option<String>,
    /// `TcpEvent::Closed` on the client, or the crash of its node.
    pub closed_at: Option<Instant>,
    /// Bytes the TCP connection carried each way.
    pub tcp_sent: u64,
    pub tcp_received: u64,
}

impl SshClientRecord {
    /// The whole script ran and every command finished with status 0 and the expected
    /// output.
    pub fn is_clean(&self) -> bool {
        self.finished_at.is_some() && self.commands.len() == self.script_len && self.commands.iter().all(|c| c.is_ok())
    }
}

/// A connection the server app accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshServerRecord {
    pub node: NodeId,
    pub session: SessionId,
    /// The `PeerId` the core bound the session to, and the node behind it.
    pub peer: Option<PeerId>,
    pub peer_node: Option<NodeId>,
    pub accepted_at: Instant,
    /// The user of the USERAUTH_REQUEST and the decision.
    pub user: Option<String>,
    pub authenticated: Option<bool>,
    /// Exec commands in the order they arrived, and the statuses they exited with.
    pub commands: Vec<String>,
    pub exit_statuses: Vec<u32>,
    pub rekeys: u64,
    /// Channel data bytes each way.
    pub data_in: u64,
    pub data_out: u64,
    pub session_end: Option<String>,
    pub closed_at: Option<Instant>,
}

impl SshServerRecord {
    pub(crate) fn new(node: NodeId, session: SessionId, peer: (Option<PeerId>, Option<NodeId>), now: Instant) -> Self {
        Self {
            node,
            session,
            peer: peer.0,
            peer_node: peer.1,
            accepted_at: now,
            user: None,
            authenticated: None,
            commands: Vec::new(),
            exit_statuses: Vec::new(),
            rekeys: 0,
            data_in: 0,
            data_out: 0,
            session_end: None,
            closed_at: None,
        }
    }
}
