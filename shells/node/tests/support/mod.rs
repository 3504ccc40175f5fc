//! Blocking helpers over a session's non-blocking descriptors: poll(2) with a deadline, so
//! tests wait for data rather than sleeping.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]
#![allow(clippy::expect_used)] // a failed expectation is the test failing

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use meshd::session::{ExitStatus, Session, SessionRequest};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Generous: a loaded 2-core machine runs many of these in parallel.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A request as `user` with connection details filled in.
pub fn request(user: &str, command: Option<&str>) -> SessionRequest {
    SessionRequest {
        user: user.into(),
        allow_root: true,
        command: command.map(Into::into),
        ssh_client: "100.64.0.2 51234 22".into(),
        ssh_connection: "100.64.0.2 51234 100.64.0.1 22".into(),
        ..SessionRequest::default()
    }
}

/// Whether the tests run as root (they are meant to; without root, user switching cannot be
/// tested and those tests print a note and return).
pub fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("note: not running as root; skipping");
    }
    root
}

/// What a session printed.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Reads stdout and stderr until both end.
pub fn read_to_end(session: &Session) -> Output {
    read_until(session, |_| false)
}

/// Reads stdout and stderr until `done(stdout so far)` or both end; panics after [`TIMEOUT`].
pub fn read_until(session: &Session, done: impl Fn(&[u8]) -> bool) -> Output {
    let deadline = Instant::now() + TIMEOUT;
    let mut output = Output::default();
    let mut open = [session.stdout_fd().is_some(), session.stderr_fd().is_some()];
    loop {
        if done(&output.stdout) || open == [false, false] {
            return output;
        }
        let Some(remaining) = deadline.checked_duration_since(Instant::now()) else {
            panic!("timed out reading session output; so far {output:?}");
        };
        let mut fds: Vec<PollFd<'_>> = [session.stdout_fd(), session.stderr_fd()]
            .into_iter()
            .zip(open)
            .filter_map(|(fd, open)| fd.filter(|_| open))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let millis = u16::try_from(remaining.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(error) => panic!("poll: {error}"),
        }
        for (stream, buffer) in [(0, &mut output.stdout), (1, &mut output.stderr)] {
            while open[stream] {
                let mut chunk = [0u8; 4096];
                let read = if stream == 0 { session.read_stdout(&mut chunk) } else { session.read_stderr(&mut chunk) };
                match read {
                    Ok(0) => open[stream] = false,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(error) => panic!("reading session output: {error}"),
                }
            }
        }
    }
}

/// Reads stdout until it contains `needle`.
pub fn read_until_contains(session: &Session, needle: &str) -> String {
    let output = read_until(session, |out| String::from_utf8_lossy(out).contains(needle));
    let text = output.stdout_text();
    assert!(text.contains(needle), "output ended without {needle:?}: {text:?}");
    text
}

/// Writes all of `data` to the session's stdin, waiting while it is full.
pub fn write_all(session: &Session, mut data: &[u8]) {
    let deadline = Instant::now() + TIMEOUT;
    while !data.is_empty() {
        assert!(Instant::now() < deadline, "timed out writing to the session");
        match session.write_stdin(data) {
            Ok(n) => data = &data[n..],
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                let fd = session.stdin_fd().expect("stdin open");
                let _ = poll(&mut [PollFd::new(fd, PollFlags::POLLOUT)], PollTimeout::from(100u16));
            }
            Err(error) => panic!("writing to the session: {error}"),
        }
    }
}

/// Waits for the process to exit. Call after output ended: the exit follows at once, so the
/// short sleeps here only bridge the gap between closing stdio and being reapable.
pub fn wait_exit(session: &mut Session) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = session.try_wait().expect("waitpid") {
            return status;
        }
        assert!(Instant::now() < deadline, "session did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A local account made for one test with `useradd`, deleted (with its home) on drop.
/// Names carry the test process's pid, so parallel test binaries never share one.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
}

impl TestUser {
    /// Creates a key-only account (password field `*`: Debian's useradd default `!` is
    /// a locked account) with a home directory and `shell`; `None` (after a note) when
    /// `useradd` is missing.
    pub fn create(shell: &str) -> Option<TestUser> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("meshd-t{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        if !Path::new("/usr/sbin/useradd").exists() {
            eprintln!("note: no useradd; skipping");
            return None;
        }
        // Set the user first, so a failed useradd still deletes whatever it made.
        let user = TestUser { name };
        user.admin("useradd", &["-m", "-p", "*", "-s", shell, &user.name]);
        Some(user)
    }

    /// Runs a shadow-utils command on this account (`usermod -L`, `chage -E 0`, ...),
    /// retrying while another test holds the passwd lock.
    pub fn admin(&self, program: &str, args: &[&str]) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let output = Command::new(program).args(args).output().expect("run shadow-utils command");
            if output.status.success() {
                return;
            }
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            // Another test (or binary) is changing /etc/passwd, /etc/shadow or /etc/group.
            let busy = stderr.contains("cannot lock") || stderr.contains("try again");
            assert!(busy && Instant::now() < deadline, "{program} {args:?} failed: {stderr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            let done = Command::new("userdel").args(["-r", "-f", &self.name]).output();
            match done {
                // 6: no such user (useradd failed or it is already gone).
                Ok(output) if output.status.success() || output.status.code() == Some(6) => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => return,
            }
        }
        eprintln!("warning: could not delete test user {}", self.name);
    }
}

/// Whether the process `pid` still runs (it is gone, or a zombie nobody reaped yet).
pub fn is_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Waits until none of `pids` runs; panics with the ones left after [`TIMEOUT`].
pub fn wait_all_gone(pids: &[i32]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|pid| is_running(*pid)).collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
