//! Subsystems: only `sftp`, served by the system's OpenSSH `sftp-server` run as the user.
//!
//! The server is executed directly, not through the user's shell as OpenSSH does: shell
//! start-up files that print anything would corrupt the SFTP stream. The shell still gates
//! access as it does under sshd: an account whose shell refuses logins (`nologin`, `false`)
//! gets no subsystem either (see `account::check_subsystem`).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::error::{clip, SessionError};
use super::spawn::Program;

/// Where Debian, Fedora and others install OpenSSH's `sftp-server`, in search order.
pub const SFTP_SERVER_PATHS: [&str; 3] =
    ["/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server"];

/// The program serving subsystem `name`.
pub(crate) fn program(name: &str) -> Result<Program, SessionError> {
    if name != "sftp" {
        return Err(SessionError::UnknownSubsystem(clip(name)));
    }
    let path = SFTP_SERVER_PATHS
        .iter()
        .map(Path::new)
        .find(|path| path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0))
        .ok_or(SessionError::SubsystemNotInstalled("sftp"))?;
    Ok(Program { path: path.to_path_buf(), argv0: OsString::from("sftp-server"), args: Vec::new() })
}
