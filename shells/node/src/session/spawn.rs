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
use super::limits::LimitReset;
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

/// What confines the child beyond its identity.
#[derive(Debug)]
pub(crate) struct Confinement {
    /// The session cgroup's `cgroup.procs`, open for writing, if it has one.
    pub(crate) cgroup_procs: Option<OwnedFd>,
    /// Limits to lower before exec.
    pub(crate) limits: Vec<LimitReset>,
}

/// A started child and the parent's ends of its stdio, all non-blocking and close-on-exec.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) stdin: File,
    pub(crate) stdout: File,
    /// `None` with a pty (stderr goes to the terminal).
    pub(crate) stderr: Option<File>,
    /// The child reported that it could not join its cgroup (it runs outside it).
    pub(crate) cgroup_not_joined: bool,
}

/// Starts `program` as `identity` with exactly `env`, on `pty` or on three pipes.
pub(crate) fn spawn(
    program: &Program,
    identity: Identity,
    env: &[(OsString, OsString)],
    pty: Option<Pty>,
    confinement: Confinement,
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
    let group_buffer = identity.credentials.as_ref().map_or_else(Vec::new, |c| vec![0; c.groups.len() + 1]);
    let setup = ChildSetup {
        cgroup_procs: confinement.cgroup_procs,
        controlling_tty: pty.is_some(),
        credentials: identity.credentials,
        group_buffer,
        limits: confinement.limits,
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
    let mut report = File::from(report);
    let mut child = started.map_err(|error| explain(error, &mut report))?;
    // After a successful exec the only byte the child can have written is the notice.
    let cgroup_not_joined =
        matches!(report_bytes(&mut report)[..], [byte, ..] if Step::from_byte(byte) == Some(Step::CgroupNotJoined));

    let parts = match master {
        Some(master) => master.try_clone().map(|stdin| (File::from(stdin), File::from(master), None)),
        None => pipe_ends(&mut child),
    };
    match parts {
        Ok((stdin, stdout, stderr)) => Ok(Spawned { child, stdin, stdout, stderr, cgroup_not_joined }),
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

/// What the child wrote to the report pipe: at most a notice and a failed step. The child
/// writes before it returns an error or execs, so the bytes are already there (the pipe is
/// non-blocking, so nothing waits).
fn report_bytes(report: &mut File) -> Vec<u8> {
    let mut bytes = [0u8; 2];
    match report.read(&mut bytes) {
        Ok(n) => bytes[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Turns a spawn error into the step that failed, if the child reported one.
fn explain(error: io::Error, report: &mut File) -> SessionError {
    let step = report_bytes(report).into_iter().filter_map(Step::from_byte).find(|step| *step != Step::CgroupNotJoined);
    match step {
        Some(Step::Regain | Step::GroupsDiffer) => SessionError::PrivilegesNotDropped,
        Some(step) => SessionError::ChildSetup { step: step.name(), source: error },
        None => SessionError::Spawn(error),
    }
}
