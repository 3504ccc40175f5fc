//! Running as another user: ids, groups, capabilities, home and pty ownership.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::ffi::CString;
use std::path::Path;

use meshd::session::{ExitStatus, PtyRequest, Session, SessionError, SFTP_SERVER_PATHS};
use nix::unistd::{getgrouplist, Gid, User};
use support::{is_root, read_to_end, request, wait_exit, TestUser};

/// The lines of /proc/<pid>/status that decide whether a process could become root again.
fn credentials_of(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|line| ["Uid:", "Gid:", "Groups:", "CapPrm:", "CapEff:"].iter().any(|key| line.starts_with(key)))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn expected_credentials(user: &User) -> Vec<String> {
    let (uid, gid) = (user.uid, user.gid);
    let name = CString::new(user.name.as_str()).expect("name");
    let mut groups: Vec<u32> = getgrouplist(&name, gid).expect("getgrouplist").into_iter().map(Gid::as_raw).collect();
    groups.sort_unstable();
    groups.dedup();
    let groups = groups.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    vec![
        format!("Uid: {uid} {uid} {uid} {uid}"),
        format!("Gid: {gid} {gid} {gid} {gid}"),
        format!("Groups: {groups}").trim_end().to_string(),
        "CapPrm: 0000000000000000".into(),
        "CapEff: 0000000000000000".into(),
    ]
}

/// Checked through the sftp-server (executed directly, no shell in between): all four uids
/// and gids are the account's, its groups only, and no capabilities left to regain root
/// with.
#[test]
fn sftp_server_runs_with_the_accounts_ids_and_no_capabilities() {
    if !is_root() {
        return;
    }
    if !SFTP_SERVER_PATHS.iter().any(|path| Path::new(path).exists()) {
        eprintln!("note: no sftp-server installed; cannot inspect a process running as the user");
        return;
    }
    let Some(account) = TestUser::create("/bin/sh") else {
        return;
    };
    // A supplementary group besides the primary one.
    account.admin("usermod", &["-a", "-G", "users", &account.name]);
    let user = User::from_name(&account.name).expect("getpwnam").expect("just created");
    let mut session = Session::spawn_subsystem(&request(&account.name, None), "sftp").expect("spawn sftp-server");
    let status = std::fs::read_to_string(format!("/proc/{}/status", session.pid())).expect("proc status");
    let mut seen = credentials_of(&status);
    seen.iter_mut().filter(|line| line.starts_with("Groups:")).for_each(|line| {
        let mut groups: Vec<u32> = line.split_whitespace().skip(1).filter_map(|g| g.parse().ok()).collect();
        groups.sort_unstable();
        *line = format!("Groups: {}", groups.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    });
    assert_eq!(seen, expected_credentials(&user));
    session.close_stdin();
    read_to_end(&session);
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
}

/// `nobody`'s shell is nologin: sshd would run sftp-server through it, which refuses, so we
/// refuse the subsystem ourselves.
#[test]
fn nobody_gets_no_sftp() {
    if !is_root() {
        return;
    }
    let nobody = User::from_name("nobody").expect("getpwnam").expect("nobody exists on Debian");
    if !nobody.shell.ends_with("nologin") || !SFTP_SERVER_PATHS.iter().any(|path| Path::new(path).exists()) {
        eprintln!("note: nobody's shell is not nologin or no sftp-server; skipping");
        return;
    }
    let refused = Session::spawn_subsystem(&request("nobody", None), "sftp");
    assert!(matches!(refused, Err(SessionError::NoLoginShell { .. })), "{refused:?}");
}

/// The passwd shell is honoured: `nobody`'s nologin refuses the command.
#[test]
fn nobodys_nologin_shell_refuses_commands() {
    if !is_root() {
        return;
    }
    let nobody = User::from_name("nobody").expect("getpwnam").expect("nobody exists on Debian");
    if !nobody.shell.ends_with("nologin") {
        eprintln!("note: nobody's shell is {}, not nologin; skipping", nobody.shell.display());
        return;
    }
    let mut session = Session::spawn(&request("nobody", Some("id -u"))).expect("spawn");
    let output = read_to_end(&session);
    assert!(!output.stdout_text().contains("65534"), "{output:?}");
    assert!(format!("{}{}", output.stdout_text(), output.stderr_text()).contains("not available"), "{output:?}");
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(1));
}

/// A non-root account with a real shell, on a pty: `id` shows its ids and groups, /proc
/// shows no way back to root, the pty is its own with mode 0620.
#[test]
fn non_root_user_with_a_shell() {
    if !is_root() {
        return;
    }
    let Some(account) = TestUser::create("/bin/bash") else {
        return;
    };
    let user = User::from_name(&account.name).expect("getpwnam").expect("just created");
    let command = "id -u; id -g; grep -E '^(Uid|Gid|Groups|CapPrm|CapEff):' /proc/self/status; \
                   stat -c 'tty %u %a' \"$SSH_TTY\"; echo \"home=$HOME pwd=$(pwd)\"";
    let mut req = request(&user.name, Some(command));
    req.allow_root = false;
    req.pty = Some(PtyRequest { term: "vt100".into(), cols: 80, rows: 24, ..PtyRequest::default() });
    let mut session = Session::spawn(&req).expect("spawn");
    let text = read_to_end(&session).stdout_text();
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0), "{text}");
    let lines: Vec<String> = text.lines().map(|line| line.trim_end().to_string()).collect();
    assert_eq!(lines[0], user.uid.to_string(), "{text}");
    assert_eq!(lines[1], user.gid.to_string(), "{text}");
    let mut seen = credentials_of(&lines[2..7].join("\n"));
    for line in seen.iter_mut().filter(|line| line.starts_with("Groups:")) {
        let mut groups: Vec<u32> = line.split_whitespace().skip(1).filter_map(|g| g.parse().ok()).collect();
        groups.sort_unstable();
        *line = format!("Groups: {}", groups.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    }
    assert_eq!(seen, expected_credentials(&user), "{text}");
    assert_eq!(lines[7], format!("tty {} 620", user.uid), "{text}");
    // Home if the user may enter it, else the fallback "/".
    let home = user.dir.to_string_lossy();
    assert!(lines[8] == format!("home={home} pwd={home}") || lines[8] == format!("home={home} pwd=/"), "{text}");
}
