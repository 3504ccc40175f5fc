//! Why a session could not be started or controlled.
//!
//! Client-supplied strings end up in some messages; they are clipped (see [`clip`]) and shown
//! with `{:?}` so a hostile name cannot flood or forge log lines.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// Errors of the session runtime. None of them leaves a process or descriptor behind.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The user name is empty, too long, all digits, or has characters no account name has.
    #[error("invalid user name {0:?}")]
    InvalidUserName(String),
    /// No passwd entry for this name.
    #[error("no such user {0:?}")]
    UnknownUser(String),
    /// The passwd lookup itself failed (NSS error).
    #[error("looking up user {name:?}: {source}")]
    UserLookup {
        /// The (clipped) name.
        name: String,
        /// The lookup's error.
        source: Errno,
    },
    /// The name resolved to an entry with another name, or its uid does not resolve back.
    #[error("user {0:?} does not resolve consistently by name and uid")]
    InconsistentUser(String),
    /// The account has uid 0 and the request does not allow root.
    #[error("user {0:?} has uid 0, which this login may not use")]
    RootNotAllowed(String),
    /// The account is locked (see `account` for the markers): no login at all.
    #[error("account {0:?} is locked")]
    AccountLocked(String),
    /// The account's expiry date (shadow `sp_expire`) has been reached.
    #[error("account {0:?} has expired")]
    AccountExpired(String),
    /// The nologin file exists and the user is not root.
    #[error("logins are disabled ({path:?} exists)")]
    NoLogin {
        /// The nologin file.
        path: PathBuf,
        /// Its contents (bounded, control characters removed) or a default message: what
        /// the user should be shown.
        message: String,
    },
    /// The login shell is missing or not executable, or (for a subsystem) is one that
    /// refuses logins such as `nologin` or `false`.
    #[error("account {name:?} has no usable login shell ({shell:?})")]
    NoLoginShell {
        /// The (clipped) account name.
        name: String,
        /// Its shell.
        shell: PathBuf,
    },
    /// Reading the shadow entry failed (as root, so the gates cannot be checked).
    #[error("reading the shadow entry of {name:?}: {source}")]
    ShadowLookup {
        /// The (clipped) name.
        name: String,
        /// The lookup's error.
        source: Errno,
    },
    /// The daemon is not root and the target is another user.
    #[error("cannot run as {name:?} (uid {uid}): this process runs as uid {current} without root")]
    NotPermitted {
        /// The (clipped) target name.
        name: String,
        /// The target uid.
        uid: u32,
        /// Our effective uid.
        current: u32,
    },
    /// More client environment variables than [`super::MAX_ENV_VARS`].
    #[error("too many environment variables: {0} (at most {max})", max = super::MAX_ENV_VARS)]
    TooManyEnvVars(usize),
    /// One client environment variable longer than [`super::MAX_ENV_VAR_BYTES`].
    #[error("environment variable {0:?} is too long (at most {max} bytes)", max = super::MAX_ENV_VAR_BYTES)]
    EnvVarTooLong(String),
    /// The command contains a NUL byte or is longer than the kernel accepts for one argument.
    #[error("invalid command: {0}")]
    InvalidCommand(&'static str),
    /// A daemon-supplied field (`ssh_client`, `ssh_connection`) contains NUL or is too long.
    #[error("invalid {0} value")]
    InvalidField(&'static str),
    /// A subsystem other than `sftp`.
    #[error("unknown subsystem {0:?}")]
    UnknownSubsystem(String),
    /// `sftp` was asked for but no `sftp-server` is installed.
    #[error("subsystem {0:?} is not installed on this node")]
    SubsystemNotInstalled(&'static str),
    /// A signal name RFC 4254 does not define.
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
    /// Setting up the pseudo-terminal failed.
    #[error("pty: {op}: {source}")]
    Pty {
        /// The operation that failed.
        op: &'static str,
        /// Its error.
        source: io::Error,
    },
    /// fork/exec failed (for example the shell does not exist).
    #[error("starting the session process: {0}")]
    Spawn(io::Error),
    /// The child failed before exec while switching to the user.
    #[error("session process setup failed at {step}: {source}")]
    ChildSetup {
        /// Which step (`setsid`, `setresuid`, ...).
        step: &'static str,
        /// Its error.
        source: io::Error,
    },
    /// After dropping to the user the child could still regain the old ids or groups, or
    /// its supplementary groups were not exactly the account's: it aborted.
    #[error("privileges could still be regained after switching user: session aborted")]
    PrivilegesNotDropped,
    /// `resize` on a session without a pty.
    #[error("session has no pty")]
    NoPty,
    /// The session's descriptors were already closed (`hangup` or `kill`).
    #[error("session is closed")]
    Closed,
    /// The session's process has exited and been reaped; it cannot be signalled.
    #[error("session process has exited")]
    Exited,
    /// Delivering a signal failed.
    #[error("signalling the session: {0}")]
    Signal(Errno),
    /// waitpid failed.
    #[error("waiting for the session process: {0}")]
    Wait(io::Error),
    /// The forwarded agent's socket could not be made.
    #[error("agent socket: {0}")]
    AgentSocket(io::Error),
}

impl SessionError {
    /// For a refusal by an account gate, the text to show the user (as an SSH banner or on
    /// the channel's stderr) before closing; `None` for other errors, whose details are for
    /// the daemon's log only.
    pub fn banner(&self) -> Option<String> {
        match self {
            SessionError::AccountLocked(_) => Some("Your account is locked.\n".into()),
            SessionError::AccountExpired(_) => {
                Some("Your account has expired; please contact your system administrator.\n".into())
            }
            SessionError::NoLogin { message, .. } if message.ends_with('\n') => Some(message.clone()),
            SessionError::NoLogin { message, .. } => Some(format!("{message}\n")),
            SessionError::NoLoginShell { .. } => Some("This account is currently not available.\n".into()),
            _ => None,
        }
    }
}

/// At most this many characters of a client-supplied string appear in an error.
const CLIP_CHARS: usize = 64;

/// Shortens a client-supplied string for an error message.
pub(crate) fn clip(s: &str) -> String {
    s.chars().take(CLIP_CHARS).collect()
}
