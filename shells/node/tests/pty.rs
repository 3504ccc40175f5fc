//! Sessions on a pty: the terminal, its size and modes, a login shell.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod support;

use meshd::session::{ExitStatus, PtyRequest, Session, SessionRequest};
use nix::unistd::User;
use support::{is_root, read_to_end, read_until_contains, request, wait_exit, write_all};

fn with_pty(mut req: SessionRequest, cols: u32, rows: u32, modes: Vec<(u8, u32)>) -> SessionRequest {
    req.pty = Some(PtyRequest { term: "xterm-256color".into(), cols, rows, width_px: 0, height_px: 0, modes });
    req
}

#[test]
fn pty_session_sees_its_terminal_and_window_changes() {
    if !is_root() {
        return;
    }
    let command = r#"tty; stty size; echo "term=$TERM ssh_tty=$SSH_TTY"; read line; stty size"#;
    let mut session = Session::spawn(&with_pty(request("root", Some(command)), 80, 24, vec![])).expect("spawn");
    assert!(session.stderr_fd().is_none());
    let tty = session.tty().expect("pty session").to_string();
    assert!(tty.starts_with("/dev/pts/"), "{tty}");

    let first = read_until_contains(&session, &format!("term=xterm-256color ssh_tty={tty}"));
    // A login shell's profile may print first (root's pyenv init on this image does, and
    // races with other shells over its shims): the command's own output starts at the tty.
    let lines: Vec<&str> = first.lines().map(str::trim_end).collect();
    let start = lines.iter().position(|l| *l == tty).unwrap_or_else(|| panic!("no tty line: {first:?}"));
    assert_eq!(lines.get(start..start + 2), Some(&[tty.as_str(), "24 80"][..]), "{first:?}");

    session.resize(100, 40, 800, 600).expect("resize");
    write_all(&session, b"\n");
    let rest = read_to_end(&session).stdout_text();
    assert_eq!(rest.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect::<Vec<_>>(), ["40 100"], "{rest:?}");
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
}

#[test]
fn terminal_modes_from_the_client_are_applied() {
    if !is_root() {
        return;
    }
    // -ECHO, VINTR = ^G, 38400 baud both ways, and an opcode Linux lacks (VDSUSP), ignored.
    let modes = vec![(53, 0), (1, 0x07), (128, 38400), (129, 38400), (11, 25)];
    let mut session = Session::spawn(&with_pty(request("root", Some("stty -a")), 80, 24, modes)).expect("spawn");
    let text = read_to_end(&session).stdout_text();
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
    let words: Vec<&str> = text.split(|c: char| c.is_whitespace() || c == ';').collect();
    assert!(words.contains(&"-echo"), "{text}");
    assert!(text.contains("intr = ^G"), "{text}");
    assert!(text.contains("speed 38400 baud"), "{text}");
}

#[test]
fn interactive_session_runs_a_login_shell() {
    if !is_root() {
        return;
    }
    let shell = User::from_name("root").expect("getpwnam").expect("root").shell;
    let argv0 = format!("-{}", shell.file_name().expect("shell name").to_string_lossy());
    let mut session = Session::spawn(&with_pty(request("root", None), 80, 24, vec![])).expect("spawn");
    write_all(&session, b"echo ARGV0=$0; exit 7\n");
    let text = read_to_end(&session).stdout_text();
    assert!(text.contains(&format!("ARGV0={argv0}")), "{text:?}");
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(7));
}

/// With a pty, close_stdin closes only our write side: the shell sees no EOF (as with sshd)
/// and its output still arrives.
#[test]
fn closing_stdin_of_a_pty_session_keeps_output_flowing() {
    if !is_root() {
        return;
    }
    let mut session =
        Session::spawn(&with_pty(request("root", Some("read x; echo got=$x")), 80, 24, vec![])).expect("spawn");
    write_all(&session, b"abc\n");
    session.close_stdin();
    assert!(session.stdin_fd().is_none() && session.stdout_fd().is_some());
    let text = read_to_end(&session).stdout_text();
    assert!(text.contains("got=abc"), "{text:?}");
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
}
