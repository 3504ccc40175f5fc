//! Account gates: locked and expired accounts, the nologin file, and shells that refuse
//! logins, each refused with an error the caller can show as a banner.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::path::{Path, PathBuf};

use meshd::session::{ExitStatus, Session, SessionConfig, SessionError, SFTP_SERVER_PATHS};
use support::{is_root, read_to_end, request, wait_exit, TestUser};

/// Runs `true` as `user` and expects it to work (the account is usable before the test
/// changes it).
fn logs_in(config: &SessionConfig, user: &str) {
    let mut session = Session::spawn_with(config, &request(user, Some("true"))).expect("login works");
    read_to_end(&session);
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
}

fn have_sftp_server() -> bool {
    let installed = SFTP_SERVER_PATHS.iter().any(|path| Path::new(path).exists());
    if !installed {
        eprintln!("note: no sftp-server installed; skipping the subsystem part");
    }
    installed
}

#[test]
fn a_locked_account_is_refused_shell_and_sftp() {
    if !is_root() {
        return;
    }
    let Some(user) = TestUser::create("/bin/sh") else {
        return;
    };
    let config = SessionConfig::default();
    logs_in(&config, &user.name);
    user.admin("usermod", &["-L", &user.name]);
    let refused = Session::spawn_with(&config, &request(&user.name, Some("true")));
    let Err(error) = refused else { panic!("locked account logged in") };
    assert!(matches!(error, SessionError::AccountLocked(_)), "{error:?}");
    assert!(error.banner().is_some_and(|banner| banner.contains("locked")), "{:?}", error.banner());
    if have_sftp_server() {
        let refused = Session::spawn_subsystem_with(&config, &request(&user.name, None), "sftp");
        assert!(matches!(refused, Err(SessionError::AccountLocked(_))), "{refused:?}");
    }
    // Unlocked again (usermod -U would refuse to leave the field empty): key-only.
    user.admin("usermod", &["-p", "*", &user.name]);
    logs_in(&config, &user.name);
}

#[test]
fn an_expired_account_is_refused_but_an_expired_password_is_not() {
    if !is_root() {
        return;
    }
    let Some(user) = TestUser::create("/bin/sh") else {
        return;
    };
    let config = SessionConfig::default();
    // The password must be changed at next login: no password is used here, so no refusal.
    user.admin("chage", &["-d", "0", &user.name]);
    logs_in(&config, &user.name);
    // Expires in the future: still fine.
    user.admin("chage", &["-E", "2999-01-01", &user.name]);
    logs_in(&config, &user.name);
    user.admin("chage", &["-E", "0", &user.name]);
    let refused = Session::spawn_with(&config, &request(&user.name, Some("true")));
    let Err(error) = refused else { panic!("expired account logged in") };
    assert!(matches!(error, SessionError::AccountExpired(_)), "{error:?}");
    assert!(error.banner().is_some_and(|banner| banner.contains("expired")), "{:?}", error.banner());
    // Yesterday, set with usermod this time.
    user.admin("usermod", &["-e", "1970-01-02", &user.name]);
    let refused = Session::spawn_with(&config, &request(&user.name, Some("true")));
    assert!(matches!(refused, Err(SessionError::AccountExpired(_))), "{refused:?}");
}

/// A nologin file for one test, removed on drop.
struct NologinFile(PathBuf);

impl NologinFile {
    fn new(tag: &str, contents: &str) -> NologinFile {
        let path = std::env::temp_dir().join(format!("meshd-nologin-{}-{tag}", std::process::id()));
        std::fs::write(&path, contents).expect("write nologin file");
        NologinFile(path)
    }
}

impl Drop for NologinFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_nologin_file_refuses_everyone_but_root_with_its_message() {
    if !is_root() {
        return;
    }
    let Some(user) = TestUser::create("/bin/sh") else {
        return;
    };
    let nologin = NologinFile::new("message", "Down for maintenance until 17:00.\x1b[2J\n");
    let config = SessionConfig { nologin_path: nologin.0.clone(), ..SessionConfig::default() };
    let refused = Session::spawn_with(&config, &request(&user.name, Some("true")));
    let Err(error) = refused else { panic!("login allowed despite the nologin file") };
    assert!(matches!(&error, SessionError::NoLogin { path, .. } if *path == nologin.0), "{error:?}");
    // The contents are the message, without the terminal escape.
    assert_eq!(error.banner().as_deref(), Some("Down for maintenance until 17:00.[2J\n"));
    if have_sftp_server() {
        let refused = Session::spawn_subsystem_with(&config, &request(&user.name, None), "sftp");
        assert!(matches!(refused, Err(SessionError::NoLogin { .. })), "{refused:?}");
    }
    // Root may still log in (to fix whatever the file is about).
    logs_in(&config, "root");
    drop(nologin);
    logs_in(&config, &user.name);
}

#[test]
fn an_empty_nologin_file_still_refuses_with_a_default_message() {
    if !is_root() {
        return;
    }
    let Some(user) = TestUser::create("/bin/sh") else {
        return;
    };
    let nologin = NologinFile::new("empty", "");
    let config = SessionConfig { nologin_path: nologin.0.clone(), ..SessionConfig::default() };
    let refused = Session::spawn_with(&config, &request(&user.name, Some("true")));
    let Err(error) = refused else { panic!("login allowed despite the nologin file") };
    assert!(error.banner().is_some_and(|banner| !banner.trim().is_empty()), "{error:?}");
}

#[test]
fn accounts_whose_shell_refuses_logins_get_no_sftp() {
    if !is_root() || !have_sftp_server() {
        return;
    }
    let config = SessionConfig::default();
    for shell in ["/usr/sbin/nologin", "/bin/false", "/usr/bin/false"] {
        if !Path::new(shell).exists() {
            continue;
        }
        let Some(user) = TestUser::create(shell) else {
            return;
        };
        let refused = Session::spawn_subsystem_with(&config, &request(&user.name, None), "sftp");
        let Err(error) = refused else { panic!("{shell} account got sftp") };
        assert!(matches!(error, SessionError::NoLoginShell { .. }), "{shell}: {error:?}");
        assert!(error.banner().is_some(), "{error:?}");
    }
    // The same subsystem for an account with a real shell works.
    let Some(user) = TestUser::create("/bin/sh") else {
        return;
    };
    let mut session = Session::spawn_subsystem_with(&config, &request(&user.name, None), "sftp").expect("sftp");
    session.close_stdin();
    read_to_end(&session);
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
}

#[test]
fn a_missing_login_shell_refuses_the_account() {
    if !is_root() {
        return;
    }
    let Some(user) = TestUser::create("/bin/sh") else {
        return;
    };
    user.admin("usermod", &["-s", "/nonexistent/shell", &user.name]);
    let refused = Session::spawn(&request(&user.name, Some("true")));
    assert!(matches!(refused, Err(SessionError::NoLoginShell { .. })), "{refused:?}");
}
