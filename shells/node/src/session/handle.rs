//! [`Session`]: a running shell, command or subsystem and the parent's ends of its stdio.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::cgroup::{self, SessionCgroup};
use super::config::SessionConfig;
use super::error::{clip, SessionError};
use super::proctree::ProcessTree;
use super::spawn::{self, Confinement, Identity, Program, Spawned};
use super::{account, env, pty, signals, subsystem, user, ExitStatus, SessionRequest};

/// How long the background reaper of a dropped session waits for its cgroup to empty.
const CGROUP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const CGROUP_DRAIN_POLL: Duration = Duration::from_millis(10);

/// A session process running as its user, in its own session and process group.
///
/// The descriptors are non-blocking and close-on-exec; register them with the event loop
/// (`mio::unix::SourceFd`) and read or write through [`Session::read_stdout`],
/// [`Session::write_stdin`] or the [`File`]s (`&File` implements `Read` and `Write`).
/// With a pty, stdin and stdout are two descriptors for the same pty master (a dup), so the
/// caller can treat both kinds of session alike: register stdin for writability and stdout for
/// readability. Deregister a descriptor before [`Session::close_stdin`], [`Session::hangup`]
/// or [`Session::kill`] close it (epoll keeps watching a closed dup of a file still open).
///
/// Signals go to the process group, and only until the process has been reaped by
/// [`Session::try_wait`]: afterwards the group id could belong to someone else.
///
/// Every process the session starts is contained: in the session's own cgroup v2 where the
/// host has one (see [`Session::cgroup`]), else tracked through /proc by session id and
/// parent pid. [`Session::kill`] (revocation) and dropping the session kill all of them,
/// background jobs and setsid'd children included, even after the leader has exited: a
/// session's processes never outlive the daemon's handle on it, so a later revocation
/// cannot miss them (like logind's KillUserProcesses=yes; tmux or nohup do not survive the
/// channel). Dropping reaps the leader and removes the cgroup in the background; call
/// [`Session::hangup`] and keep polling `try_wait` for a graceful end.
#[derive(Debug)]
pub struct Session {
    child: Child,
    /// The child called setsid: its pid is its session and process group id.
    group: Pid,
    /// The session's cgroup; `None` without one (or once removed after the session ended).
    cgroup: Option<SessionCgroup>,
    /// The /proc-scan containment, used when there is no cgroup.
    tree: ProcessTree,
    /// The cgroup was found empty and removed: nothing of the session is left (membership
    /// passes only by fork), so there is nothing to kill or scan for.
    emptied: bool,
    tty: Option<String>,
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    status: Option<ExitStatus>,
}

impl Session {
    /// Starts the user's login shell (`command: None`) or `shell -c command`, with
    /// [`SessionConfig::default`].
    pub fn spawn(request: &SessionRequest) -> Result<Session, SessionError> {
        Session::spawn_with(&SessionConfig::default(), request)
    }

    /// [`Session::spawn`] with the daemon's configuration.
    pub fn spawn_with(config: &SessionConfig, request: &SessionRequest) -> Result<Session, SessionError> {
        let user = user::resolve(&request.user, request.allow_root)?;
        account::check_login(&user, &config.nologin_path)?;
        let program = match &request.command {
            None => Program::login_shell(&user.shell),
            Some(command) => Program::shell_command(&user.shell, command)?,
        };
        Session::start(config, request, user, &program)
    }

    /// Starts subsystem `name` as the user, with [`SessionConfig::default`]. Only `sftp`
    /// exists: the system's `sftp-server` (see [`super::SFTP_SERVER_PATHS`]), executed
    /// directly rather than through the shell, and refused (as sshd's shell would refuse
    /// it) to accounts whose shell is `nologin`, `false` or the like.
    pub fn spawn_subsystem(request: &SessionRequest, name: &str) -> Result<Session, SessionError> {
        Session::spawn_subsystem_with(&SessionConfig::default(), request, name)
    }

    /// [`Session::spawn_subsystem`] with the daemon's configuration.
    pub fn spawn_subsystem_with(
        config: &SessionConfig,
        request: &SessionRequest,
        name: &str,
    ) -> Result<Session, SessionError> {
        let program = subsystem::program(name)?;
        let user = user::resolve(&request.user, request.allow_root)?;
        account::check_login(&user, &config.nologin_path)?;
        account::check_subsystem(&user)?;
        Session::start(config, request, user, &program)
    }

    fn start(
        config: &SessionConfig,
        request: &SessionRequest,
        mut user: user::TargetUser,
        program: &Program,
    ) -> Result<Session, SessionError> {
        let client_env = env::accept_client_env(&request.env)?;
        let pty = request.pty.as_ref().map(|pty| pty::open(pty, user.uid, user.gid)).transpose()?;
        let tty = pty.as_ref().map(|pty| pty.path.clone());
        let env = env::build(&user, request, client_env, tty.as_deref())?;
        let identity = Identity { credentials: user.credentials.take(), home: user.home_cstring() };
        let (mut cgroup, cgroup_procs) = cgroup::create(&config.cgroups).unzip();
        let confinement = Confinement { cgroup_procs, limits: config.limits.resets() };
        let Spawned { child, stdin, stdout, stderr, cgroup_not_joined } =
            spawn::spawn(program, identity, &env, pty, confinement)?;
        if cgroup_not_joined {
            cgroup::fallback_warning(&"the session process could not join its cgroup");
            cgroup = None;
        }
        // std got this pid from a pid_t, so it fits.
        let group = Pid::from_raw(child.id() as i32);
        let tree = ProcessTree::new(group);
        let cgroup_path = cgroup.as_ref().map(|cgroup| cgroup.path().display().to_string());
        tracing::info!(user = %user.name, uid = user.uid.as_raw(), pid = group.as_raw(), tty = tty.as_deref(), program = %program.path.display(), cgroup = cgroup_path, "session started");
        Ok(Session {
            child,
            group,
            cgroup,
            tree,
            emptied: false,
            tty,
            stdin: Some(stdin),
            stdout: Some(stdout),
            stderr,
            status: None,
        })
    }

    /// The session process's pid (also its process group and session id).
    pub fn pid(&self) -> i32 {
        self.group.as_raw()
    }

    /// The session's cgroup directory, while it has one: `None` on a host without a usable
    /// cgroup v2 (or with [`super::CgroupPolicy::Disabled`]), and once the session has
    /// ended and its cgroup has been removed.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(SessionCgroup::path)
    }

    /// The pty slave's path (SSH_TTY), if the session has a pty.
    pub fn tty(&self) -> Option<&str> {
        self.tty.as_deref()
    }

    /// Descriptor to write the client's data to; `None` after [`Session::close_stdin`].
    pub fn stdin_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stdin.as_ref().map(AsFd::as_fd)
    }

    /// Descriptor to read the session's output from (with a pty: stdout and stderr merged).
    pub fn stdout_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stdout.as_ref().map(AsFd::as_fd)
    }

    /// Descriptor to read stderr from (`extended data`); `None` with a pty.
    pub fn stderr_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stderr.as_ref().map(AsFd::as_fd)
    }

    /// The stdin file, for `Write`; `None` after [`Session::close_stdin`].
    pub fn stdin(&self) -> Option<&File> {
        self.stdin.as_ref()
    }

    /// The stdout file, for `Read` (see [`Session::read_stdout`] for the pty EOF quirk).
    pub fn stdout(&self) -> Option<&File> {
        self.stdout.as_ref()
    }

    /// The stderr file, for `Read`; `None` with a pty.
    pub fn stderr(&self) -> Option<&File> {
        self.stderr.as_ref()
    }

    /// Reads output. `Ok(0)` is end of output: a pipe's EOF, or a pty master's EIO (what
    /// Linux returns once every slave descriptor is closed), or a closed session.
    /// `WouldBlock` means no data yet.
    pub fn read_stdout(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_from(self.stdout.as_ref(), buf)
    }

    /// Reads stderr like [`Session::read_stdout`]; `Ok(0)` for a pty session.
    pub fn read_stderr(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_from(self.stderr.as_ref(), buf)
    }

    fn read_from(&self, file: Option<&File>, buf: &mut [u8]) -> io::Result<usize> {
        let Some(mut file) = file else {
            return Ok(0);
        };
        match file.read(buf) {
            Err(error) if self.tty.is_some() && error.raw_os_error() == Some(Errno::EIO as i32) => Ok(0),
            other => other,
        }
    }

    /// Writes client data. `WouldBlock` when the pipe or pty is full; `BrokenPipe` after
    /// [`Session::close_stdin`] or when the process closed its stdin.
    pub fn write_stdin(&self, buf: &[u8]) -> io::Result<usize> {
        match self.stdin.as_ref() {
            Some(mut file) => file.write(buf),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        }
    }

    /// The client sent EOF: close our stdin descriptor. Without a pty the process reads EOF.
    /// With a pty this closes only our write dup of the master and the process sees nothing,
    /// as with sshd: a terminal has no EOF of its own, and writing VEOF (^D) on the user's
    /// behalf would be wrong mid-line or in raw mode. A client that means ^D sends it as data.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// `window-change`: sets the pty's size (the foreground job gets SIGWINCH).
    pub fn resize(&self, cols: u32, rows: u32, width_px: u32, height_px: u32) -> Result<(), SessionError> {
        if self.tty.is_none() {
            return Err(SessionError::NoPty);
        }
        let master = self.stdout.as_ref().ok_or(SessionError::Closed)?;
        let size = pty::window_size(cols, rows, width_px, height_px);
        super::sys::set_window_size(master.as_fd(), &size)
            .map_err(|source| SessionError::Pty { op: "TIOCSWINSZ", source })
    }

    /// `signal` request: delivers an RFC 4254 signal (`TERM`, `INT`, `HUP`, `KILL`, `QUIT`,
    /// `USR1`, `USR2`, `ALRM`, `PIPE`, `ABRT`, `FPE`, `ILL`, `SEGV`) to the process group.
    pub fn signal(&self, ssh_signal_name: &str) -> Result<(), SessionError> {
        let signal = signals::from_ssh_name(ssh_signal_name)
            .ok_or_else(|| SessionError::UnknownSignal(clip(ssh_signal_name)))?;
        self.signal_group(signal)
    }

    fn signal_group(&self, signal: Signal) -> Result<(), SessionError> {
        if self.status.is_some() {
            return Err(SessionError::Exited);
        }
        killpg(self.group, signal).map_err(SessionError::Signal)
    }

    /// The channel closed: SIGHUP the process group (then SIGCONT, so stopped jobs act on
    /// it, as the kernel does on a terminal hangup) and close our descriptors. Keep polling
    /// [`Session::try_wait`] to collect the exit.
    pub fn hangup(&mut self) {
        for signal in [Signal::SIGHUP, Signal::SIGCONT] {
            if let Err(error) = self.signal_group(signal) {
                tracing::debug!(pid = self.group.as_raw(), %error, "hangup signal not delivered");
            }
        }
        self.close_descriptors();
    }

    /// Access was revoked: SIGKILL every process the session started (whether or not the
    /// session process has exited) and close our descriptors. Keep polling
    /// [`Session::try_wait`] to reap it; its cgroup is removed once empty.
    pub fn kill(&mut self) {
        if !self.emptied {
            kill_all(self.cgroup.as_ref(), &self.tree, self.status.is_some());
        }
        self.close_descriptors();
    }

    fn close_descriptors(&mut self) {
        self.stdin = None;
        self.stdout = None;
        self.stderr = None;
    }

    /// Non-blocking wait. `Ok(None)` while the process runs; once it has exited, the same
    /// status every time.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, SessionError> {
        if let Some(status) = &self.status {
            return Ok(Some(status.clone()));
        }
        let Some(raw) = self.child.try_wait().map_err(SessionError::Wait)? else {
            return Ok(None);
        };
        let status = signals::exit_status(raw)
            .ok_or_else(|| SessionError::Wait(io::Error::other(format!("unexpected wait status {raw}"))))?;
        tracing::info!(pid = self.group.as_raw(), ?status, "session exited");
        self.status = Some(status.clone());
        self.remove_cgroup_if_empty();
        Ok(Some(status))
    }

    /// Removes the cgroup once nothing runs in it (background jobs may outlive the leader).
    fn remove_cgroup_if_empty(&mut self) {
        let Some(cgroup) = &mut self.cgroup else {
            return;
        };
        if matches!(cgroup.is_populated(), Ok(false)) && cgroup.remove().is_ok() {
            self.cgroup = None;
            self.emptied = true;
        }
    }
}

/// SIGKILLs every process of the session: through the cgroup if it has one, else (or if
/// that fails) through the /proc scan.
fn kill_all(cgroup: Option<&SessionCgroup>, tree: &ProcessTree, leader_reaped: bool) {
    if let Some(cgroup) = cgroup {
        match cgroup.kill() {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(cgroup = %cgroup.path().display(), %error, "killing through the cgroup failed; scanning /proc")
            }
        }
    }
    tree.kill(leader_reaped);
}

impl Drop for Session {
    fn drop(&mut self) {
        let reaped = self.status.is_some() || matches!(self.child.try_wait(), Ok(Some(_)));
        let cgroup = self.cgroup.take();
        // The session ends with its handle: nothing it started may outlive it.
        if !self.emptied {
            kill_all(cgroup.as_ref(), &self.tree, reaped);
        }
        let reaped = reaped || matches!(self.child.try_wait(), Ok(Some(_)));
        if reaped && cgroup.is_none() {
            return;
        }
        // Killed processes are gone within moments; reap and clean up off the caller's
        // thread. Removing a cgroup directory waits on the kernel (milliseconds), so that
        // too happens there, never in the daemon's event loop.
        let pid = self.group;
        let finish = move || {
            if !reaped {
                let _ = nix::sys::wait::waitpid(pid, None);
            }
            if let Some(cgroup) = &cgroup {
                let deadline = Instant::now() + CGROUP_DRAIN_TIMEOUT;
                while !matches!(cgroup.is_populated(), Ok(false)) && Instant::now() < deadline {
                    std::thread::sleep(CGROUP_DRAIN_POLL);
                }
            }
            // Dropping the cgroup removes it (or warns that it could not).
            drop(cgroup);
        };
        if let Err(error) = std::thread::Builder::new().name("session-reaper".into()).spawn(finish) {
            tracing::debug!(%error, "no reaper thread; reaping inline");
            if !reaped {
                let _ = nix::sys::wait::waitpid(pid, None);
            }
        }
    }
}
