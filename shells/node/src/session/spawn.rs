//! Fork and exec through `std::process::Command`.
//!
//! `Command` already does the delicate parts right: argv and envp are built before fork, the
//! signal mask and SIGPIPE are reset, exec errors come back through a close-on-exec pipe and
//! a failed child is reaped. Our own steps (setsid, controlling tty, ids, chdir) run as its
//! `pre_exec` hook (see `sys`), which runs after `Command` has put the child's stdio on
//! 0/1/2, so the controlling terminal can be taken from fd 0.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::fcntl::OFlag;
use nix::sys::resource::{getrlimit, Resource};

use super::error::SessionError;
use super::pty::{set_nonblocking, Pty};
use super::sys::{self, ChildSetup, Credentials, Step};

/// Longest command accepted: the kernel's limit for one argument (MAX_ARG_STRLEN, 32 pages,
/// including the NUL), so a longer one fails here with a clear error rather than as E2BIG.
const MAX_COMMAND_BYTES: usize = 32 * 4096 - 1;

/// What to exec.
#[derive(Debug)]
pub(crate) struct Program {
    pub(crate) path: PathBuf,
    pub(crate) argv0: OsString,
    pub(crate) args: Vec<OsString>,
}

impl Program {
    /// The shell as a login shell: argv0 is its name with a leading '-' (`-bash`).
    pub(crate) fn login_shell(shell: &Path) -> Program {
        let mut argv0 = OsString::from("-");
        argv0.push(shell_name(shell));
        Program { path: shell.to_path_buf(), argv0, args: Vec::new() }
    }

    /// `shell -c command`, as sshd runs exec requests.
    pub(crate) fn shell_command(shell: &Path, command: &str) -> Result<Program, SessionError> {
        if command.contains('\0') {
            return Err(SessionError::InvalidCommand("contains NUL"));
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(SessionError::InvalidCommand("too long"));
        }
        Ok(Program { path: shell.to_path_buf(), argv0: shell_name(shell), args: vec!["-c".into(), command.into()] })
    }
}

fn shell_name(shell: &Path) -> OsString {
    shell.file_name().map_or_else(|| OsString::from("sh"), OsString::from)
}

/// The identity the child switches to.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) credentials: Option<Credentials>,
    pub(crate) home: CString,
}

/// A started child and the parent's ends of its stdio, all non-blocking and close-on-exec.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) stdin: File,
    pub(crate) stdout: File,
    /// `None` with a pty (stderr goes to the terminal).
    pub(crate) stderr: Option<File>,
}

/// Starts `program` as `identity` with exactly `env`, on `pty` or on three pipes.
pub(crate) fn spawn(
    program: &Program,
    identity: Identity,
    env: &[(OsString, OsString)],
    pty: Option<Pty>,
) -> Result<Spawned, SessionError> {
    let (report, report_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| SessionError::Spawn(e.into()))?;
    let mut command = Command::new(&program.path);
    command.arg0(&program.argv0).args(&program.args).env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    match &pty {
        Some(pty) => {
            let slave = || pty.slave.try_clone().map(Stdio::from).map_err(SessionError::Spawn);
            command.stdin(slave()?).stdout(slave()?).stderr(slave()?);
        }
        None => {
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        }
    }
    let setup = ChildSetup {
        controlling_tty: pty.is_some(),
        credentials: identity.credentials,
        home: identity.home,
        report: report_write,
        fd_limit: open_files_limit(),
    };
    sys::install(&mut command, setup);
    let started = command.spawn();
    // Close every parent copy of the slave (the Stdio dups, then the original) and the
    // report pipe's write end: once the child's side closes, reads see EOF.
    drop(command);
    let master = pty.map(|pty| pty.master);
    let mut child = started.map_err(|error| explain(error, report))?;

    let parts = match master {
        Some(master) => master.try_clone().map(|stdin| (File::from(stdin), File::from(master), None)),
        None => pipe_ends(&mut child),
    };
    match parts {
        Ok((stdin, stdout, stderr)) => Ok(Spawned { child, stdin, stdout, stderr }),
        Err(error) => {
            // Nothing can drive the child without its stdio: do not leave it running.
            let _ = child.kill();
            let _ = child.wait();
            Err(SessionError::Spawn(error))
        }
    }
}

/// The soft RLIMIT_NOFILE: no descriptor of ours is at or above it (for the fallback of
/// `ChildSetup::close_inherited_on_exec`).
fn open_files_limit() -> i32 {
    const DEFAULT: i32 = 1024;
    getrlimit(Resource::RLIMIT_NOFILE).map_or(DEFAULT, |(soft, _)| i32::try_from(soft).unwrap_or(i32::MAX))
}

/// The parent's ends of the three pipes, made non-blocking.
fn pipe_ends(child: &mut Child) -> io::Result<(File, File, Option<File>)> {
    let missing = || io::Error::other("child stdio pipe missing");
    let stdin = OwnedFd::from(child.stdin.take().ok_or_else(missing)?);
    let stdout = OwnedFd::from(child.stdout.take().ok_or_else(missing)?);
    let stderr = OwnedFd::from(child.stderr.take().ok_or_else(missing)?);
    for fd in [&stdin, &stdout, &stderr] {
        set_nonblocking(fd.as_fd())?;
    }
    Ok((File::from(stdin), File::from(stdout), Some(File::from(stderr))))
}

/// Turns a spawn error into the step that failed, if the child reported one.
fn explain(error: io::Error, report: OwnedFd) -> SessionError {
    let mut byte = [0u8; 1];
    // The child writes the step before returning the error, so it is already in the pipe.
    let step = match File::from(report).read(&mut byte) {
        Ok(1) => Step::from_byte(byte[0]),
        _ => None,
    };
    match step {
        Some(Step::Regain) => SessionError::PrivilegesNotDropped,
        Some(step) => SessionError::ChildSetup { step: step.name(), source: error },
        None => SessionError::Spawn(error),
    }
}
