//! The `sftp` subsystem: the system's sftp-server answers SSH_FXP_INIT with SSH_FXP_VERSION.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod support;

use meshd::session::{ExitStatus, Session, SessionError, SFTP_SERVER_PATHS};
use support::{is_root, read_to_end, read_until, request, wait_exit, write_all};

/// SSH_FXP_INIT, version 3: uint32 length 5, byte type 1, uint32 version 3.
const FXP_INIT_V3: [u8; 9] = [0, 0, 0, 5, 1, 0, 0, 0, 3];
const SSH_FXP_VERSION: u8 = 2;

#[test]
fn sftp_server_answers_init_with_version() {
    if !is_root() {
        return;
    }
    let req = request("root", None);
    if !SFTP_SERVER_PATHS.iter().any(|path| std::path::Path::new(path).exists()) {
        eprintln!("note: no sftp-server installed; checking only the error");
        assert!(matches!(Session::spawn_subsystem(&req, "sftp"), Err(SessionError::SubsystemNotInstalled(_))));
        return;
    }
    let mut session = Session::spawn_subsystem(&req, "sftp").expect("spawn sftp-server");
    write_all(&session, &FXP_INIT_V3);
    let reply = read_until(&session, |out| out.len() >= 9).stdout;
    let length = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize;
    assert_eq!(reply.get(4), Some(&SSH_FXP_VERSION), "{reply:?}");
    assert_eq!(u32::from_be_bytes([reply[5], reply[6], reply[7], reply[8]]), 3, "version");
    assert!(length >= 5, "{reply:?}");

    session.close_stdin();
    read_to_end(&session);
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
}
