//! Sessions without a pty: stdio pipes, exit codes, environment, signals, stdin EOF.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use meshd::session::{ExitStatus, Session, SessionError, MAX_ENV_VARS};
use nix::unistd::User;
use support::{is_root, read_to_end, read_until_contains, request, wait_exit, write_all, TIMEOUT};

#[test]
fn exec_separates_stdout_stderr_and_reports_the_exit_code() {
    if !is_root() {
        return;
    }
    let mut session = Session::spawn(&request("root", Some("echo out; echo err >&2; exit 3"))).expect("spawn");
    assert!(session.tty().is_none());
    assert!(session.stderr_fd().is_some());
    let output = read_to_end(&session);
    assert_eq!(output.stdout_text(), "out\n");
    assert_eq!(output.stderr_text(), "err\n");
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(3));
    assert_eq!(session.try_wait().expect("cached"), Some(ExitStatus::Code(3)));
}

#[test]
fn environment_is_built_from_scratch_with_accepted_client_variables() {
    if !is_root() {
        return;
    }
    // The shell's own initial environment: what the runtime passed to exec, before any
    // start-up file (Debian's bash reads ~/.bashrc when SSH_CLIENT is set) changes it.
    let mut req = request("root", Some("cat /proc/$$/environ; exit 0"));
    req.env = [
        ("LANG", "C.UTF-8"),
        ("MESH_TEST", "hello world"),
        ("LD_PRELOAD", "/tmp/evil.so"),
        ("LD_LIBRARY_PATH", "/tmp"),
        ("BASH_ENV", "/tmp/evil.sh"),
        ("PATH", "/tmp/evil"),
        ("SSH_CLIENT", "forged"),
        ("BAD=NAME", "x"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    let mut session = Session::spawn(&req).expect("spawn");
    let output = read_to_end(&session);
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0), "{output:?}");
    let env: BTreeMap<String, String> = output
        .stdout_text()
        .split('\0')
        .filter_map(|entry| entry.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();

    let root = User::from_name("root").expect("getpwnam").expect("root exists");
    let expected = [
        ("HOME", root.dir.to_string_lossy().into_owned()),
        ("USER", "root".into()),
        ("LOGNAME", "root".into()),
        ("SHELL", root.shell.to_string_lossy().into_owned()),
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("MAIL", "/var/mail/root".into()),
        ("SSH_CLIENT", "100.64.0.2 51234 22".into()),
        ("SSH_CONNECTION", "100.64.0.2 51234 100.64.0.1 22".into()),
        ("LANG", "C.UTF-8".into()),
        ("MESH_TEST", "hello world".into()),
    ];
    for (name, value) in &expected {
        assert_eq!(env.get(*name), Some(value), "{name} in {env:?}");
    }
    // Nothing else: no LD_*, no BASH_ENV, no TERM without a pty, none of the test runner's
    // CARGO_* variables.
    assert_eq!(env.len(), expected.len(), "{env:?}");
}

#[test]
fn term_signal_is_reported_as_exit_signal() {
    if !is_root() {
        return;
    }
    let mut session = Session::spawn(&request("root", Some("sleep 30"))).expect("spawn");
    assert!(matches!(session.signal("STOP"), Err(SessionError::UnknownSignal(_))));
    assert!(matches!(session.signal("SIGTERM"), Err(SessionError::UnknownSignal(_))));
    session.signal("TERM").expect("signal");
    read_to_end(&session);
    assert_eq!(wait_exit(&mut session), ExitStatus::Signal { name: "TERM".into(), core_dumped: false });
    assert!(matches!(session.signal("TERM"), Err(SessionError::Exited)));
}

#[test]
fn hangup_sends_sighup() {
    if !is_root() {
        return;
    }
    let mut session = Session::spawn(&request("root", Some("sleep 30"))).expect("spawn");
    session.hangup();
    assert!(session.stdout_fd().is_none() && session.stdin_fd().is_none() && session.stderr_fd().is_none());
    assert_eq!(wait_exit(&mut session), ExitStatus::Signal { name: "HUP".into(), core_dumped: false });
}

/// `kill` reaches the whole process group: a background job that ignores HUP and TERM dies too.
#[test]
fn kill_takes_down_the_process_group() {
    if !is_root() {
        return;
    }
    let command = "trap '' HUP TERM; sleep 30 & echo bg=$!; wait";
    let mut session = Session::spawn(&request("root", Some(command))).expect("spawn");
    let text = read_until_contains(&session, "\n");
    let background: i32 = text.trim().strip_prefix("bg=").and_then(|pid| pid.parse().ok()).expect("background pid");
    session.hangup(); // ignored by both
    session.kill();
    assert_eq!(wait_exit(&mut session), ExitStatus::Signal { name: "KILL".into(), core_dumped: false });
    assert_process_gone(background);
}

#[test]
fn stdin_eof_reaches_the_command() {
    if !is_root() {
        return;
    }
    let mut session = Session::spawn(&request("root", Some("cat"))).expect("spawn");
    write_all(&session, b"hello\n");
    session.close_stdin();
    assert!(session.stdin_fd().is_none());
    assert!(session.write_stdin(b"late").is_err());
    let output = read_to_end(&session);
    assert_eq!(output.stdout_text(), "hello\n");
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
}

/// Only 0, 1 and 2 reach the session: no daemon descriptor (another session's pipes or pty
/// master, the report pipe) leaks, even with sessions spawning concurrently in other tests.
#[test]
fn no_descriptors_leak_into_the_session() {
    if !is_root() {
        return;
    }
    // A descriptor the daemon holds without close-on-exec, as inherited ones often are.
    let inherited = nix::unistd::dup(std::io::stderr()).expect("dup");
    let mut session = Session::spawn(&request("root", Some("ls /proc/self/fd"))).expect("spawn");
    drop(inherited);
    let output = read_to_end(&session);
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
    // ls's own directory descriptor is 3.
    assert_eq!(output.stdout_text().split_whitespace().collect::<Vec<_>>(), ["0", "1", "2", "3"], "{output:?}");
}

#[test]
fn dropping_a_running_session_kills_and_reaps_it() {
    if !is_root() {
        return;
    }
    let session = Session::spawn(&request("root", Some("sleep 30"))).expect("spawn");
    let pid = session.pid();
    drop(session);
    assert_process_gone(pid);
}

#[test]
fn hostile_requests_are_refused_with_clear_errors() {
    let mut req = request("root", Some("true"));
    req.allow_root = false;
    assert!(matches!(Session::spawn(&req), Err(SessionError::RootNotAllowed(_))));

    for name in ["0", "", "../root", "root\0", "-f"] {
        let err = Session::spawn(&request(name, Some("true"))).expect_err(name);
        assert!(matches!(err, SessionError::InvalidUserName(_)), "{name:?}: {err}");
    }
    assert!(matches!(Session::spawn(&request("no-such-user-meshd", Some("true"))), Err(SessionError::UnknownUser(_))));

    if !is_root() {
        return;
    }
    let mut req = request("root", Some("true"));
    req.env = (0..=MAX_ENV_VARS).map(|i| (format!("V{i}"), "x".into())).collect();
    assert!(matches!(Session::spawn(&req), Err(SessionError::TooManyEnvVars(_))));

    assert!(matches!(Session::spawn(&request("root", Some("true\0; id"))), Err(SessionError::InvalidCommand(_))));

    let mut req = request("root", Some("true"));
    req.ssh_client = "1.2.3.4\0 1 22".into();
    assert!(matches!(Session::spawn(&req), Err(SessionError::InvalidField("ssh_client"))));

    assert!(matches!(
        Session::spawn_subsystem(&request("root", None), "shell"),
        Err(SessionError::UnknownSubsystem(_))
    ));
    let session = Session::spawn(&request("root", Some("true"))).expect("spawn");
    assert!(matches!(session.resize(80, 24, 0, 0), Err(SessionError::NoPty)));
}

/// Waits until `pid` no longer runs (gone, or a zombie left for init).
fn assert_process_gone(pid: i32) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"));
        let running = stat.is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')));
        if !running {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}
