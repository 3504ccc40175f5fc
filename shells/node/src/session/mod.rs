//! Session runtime: run a shell, a command or a subsystem as a local user for an SSH channel.
//!
//! DESIGN.md "Session runtime (shells/node)" is the contract. Everything in a
//! [`SessionRequest`] that came from the client is treated as hostile: user names are checked
//! by name *and* uid, the environment is rebuilt from scratch with only safe client variables,
//! terminal modes are applied only when termios knows them, and every failure is a
//! [`SessionError`] rather than a panic.
//!
//! The caller owns all IO: [`Session`] exposes non-blocking, close-on-exec descriptors for a
//! mio loop to register, and the caller reads and writes them (`&File` implements `Read` and
//! `Write`, and [`Session::read_stdout`] and friends smooth over the pty EOF quirk).
//!
//! Layout: `config` (what the daemon decides: [`SessionConfig`]), `user` (who to run as),
//! `account` (locked, expired, nologin and shell gates) with `shadow` (the shadow entry),
//! `env` (environment), `modes` (RFC 4254 terminal modes), `pty` (pseudo-terminal pair),
//! `limits` (the resource limits sessions get), `cgroup` and `proctree` (containing
//! everything a session starts, with a cgroup v2 or by /proc scan), `spawn` (fork and exec
//! through `std::process::Command`), `sys` (what the child does between fork and exec, and
//! the window-size ioctl), `signals` (SSH signal names), `subsystem` (where `sftp-server`
//! lives), `handle` (the [`Session`] itself). `sys` and `shadow` hold the only unsafe code.

mod account;
mod agent;
mod cgroup;
mod config;
mod env;
mod error;
mod handle;
mod limits;
mod modes;
mod proctree;
mod pty;
mod shadow;
mod signals;
mod spawn;
mod subsystem;
mod sys;
mod user;

pub use agent::AgentSocket;
pub use config::{CgroupPolicy, SessionConfig, DEFAULT_NOLOGIN_PATH};
pub use env::{MAX_ENV_VARS, MAX_ENV_VAR_BYTES};
pub use error::SessionError;
pub use handle::Session;
pub use limits::{ResourceLimits, SESSION_NOFILE_SOFT_MAX};
pub use subsystem::SFTP_SERVER_PATHS;

/// Whether a login as `name` would be let in, as OpenSSH decides before a session starts:
/// the account exists by name and uid (uid 0 only with `allow_root`), is neither locked nor
/// expired, /etc/nologin does not stop it, and its shell is usable. The SSH server asks
/// this at authentication, so a refusal is a failed login with the reason as its banner.
pub fn check_account(name: &str, allow_root: bool) -> Result<(), SessionError> {
    let target = user::resolve(name, allow_root)?;
    account::check_login(&target, std::path::Path::new(DEFAULT_NOLOGIN_PATH))
}

/// What an SSH session channel asked for, after policy has decided who the local user is.
#[derive(Clone, Debug, Default)]
pub struct SessionRequest {
    /// Local account to run as (the policy's mapped user).
    pub user: String,
    /// Whether this login may run as uid 0. False when the rule mapped the login through
    /// `autogroup:nonroot`: then any account whose uid is 0 (`root`, an alias such as `toor`)
    /// is refused, whatever its name.
    pub allow_root: bool,
    /// `None`: interactive login shell. `Some(cmd)`: `$SHELL -c cmd`.
    pub command: Option<String>,
    /// A pseudo-terminal, if the client sent `pty-req`.
    pub pty: Option<PtyRequest>,
    /// Client environment already accepted by policy (`acceptEnv`). Names that are not shell
    /// identifiers, loader variables (`LD_*`, `DYLD_*`, ...) and variables the runtime sets
    /// itself are dropped; more than [`MAX_ENV_VARS`] entries or one longer than
    /// [`MAX_ENV_VAR_BYTES`] is an error.
    pub env: Vec<(String, String)>,
    /// Value for `SSH_CLIENT` ("ip port localport").
    pub ssh_client: String,
    /// Value for `SSH_CONNECTION` ("ip port localip localport").
    pub ssh_connection: String,
    /// `SSH_AUTH_SOCK`: the forwarded agent's socket ([`AgentSocket`]), when the client
    /// asked for agent forwarding and the rule allows it.
    pub agent_socket: Option<std::path::PathBuf>,
}

/// A `pty-req` as the SSH core decoded it (terminal type, window size, parsed terminal
/// modes). The runtime clamps sizes to 65535, turns a TERM that is not a plain terminfo name
/// into `dumb`, and applies only the modes termios knows.
pub use mesh_core::ssh::channel::PtyRequest;

/// How a session's process ended, in the shape of SSH `exit-status` / `exit-signal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited normally with this code (`exit-status`).
    Code(u32),
    /// Killed by a signal (`exit-signal`).
    Signal {
        /// SSH signal name without `SIG` (`TERM`, `KILL`, ...); signals RFC 4254 has no name
        /// for are reported as `SIG@openssh.com`, as OpenSSH does.
        name: String,
        /// Whether the process dumped core.
        core_dumped: bool,
    },
}
