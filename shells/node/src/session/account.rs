//! Account gates, as OpenSSH's sshd applies them without PAM (auth.c `allowed_user`,
//! auth-shadow.c, session.c `do_nologin`), since we run no PAM stack.
//!
//! - **Locked**: the shadow password field (the passwd one when there is no shadow entry)
//!   starts with `!`. That is OpenSSH's rule on Linux (LOCKED_PASSWD_PREFIX "!"; `usermod
//!   -L` and `passwd -l` prepend it, `!!` and `!*` are locked too). We also refuse the other
//!   platforms' markers, `*LK*` (Solaris) and a `*LOCKED*` prefix (FreeBSD), which no
//!   Linux tool writes but which plainly mean locked. A lone `*` (or `x`) is NOT locked: it
//!   only says no password can match, and key-only accounts (root on Debian images) use
//!   it. Unlike sshd with PAM on Debian, a locked account gets no key login either.
//! - **Expired**: `sp_expire` (days since 1970) is set and today is on or after it, as
//!   pam_unix and shadow(5) read it ("the account will be disabled on that day"); sshd
//!   without PAM allows that last day. `chage -E 0` expires an account. Password aging
//!   (`sp_max`, `sp_lstchg`, "password must be changed") is not a refusal: no password is
//!   used here, and sshd too applies it only to password authentication.
//! - **nologin**: while the configured file (/etc/nologin) exists, only uid 0 may log in,
//!   and the file's contents are the message, as sshd and pam_nologin do.
//! - **Shell**: the login shell must exist and be executable (sshd refuses the account
//!   otherwise). Subsystems are refused for accounts whose shell refuses logins (`nologin`,
//!   `false`, ...): sshd runs subsystems through the shell, which refuses them; we execute
//!   `sftp-server` directly and so must refuse in its place.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::unistd::geteuid;

use super::error::{clip, SessionError};
use super::shadow::{self, ShadowEntry};
use super::user::TargetUser;

/// Most bytes of the nologin file shown as the refusal message.
const MAX_NOLOGIN_MESSAGE_BYTES: u64 = 4096;
/// Shown when the nologin file is empty or unreadable.
pub(crate) const DEFAULT_NOLOGIN_MESSAGE: &str = "Logins are currently disabled.";
/// Shells that refuse every login, by file name: `nologin` and `false` (and `true`, which
/// just exits), and `git-shell`, which runs only git commands and so would refuse
/// `sftp-server` too.
const REFUSING_SHELLS: [&str; 4] = ["nologin", "false", "true", "git-shell"];
const SECONDS_PER_DAY: u64 = 86_400;

/// The password-field prefixes that mark a locked account.
const LOCKED_PREFIXES: [&[u8]; 2] = [b"!", b"*LOCKED*"];
/// Password fields that mark a locked account as a whole.
const LOCKED_FIELDS: [&[u8]; 1] = [b"*LK*"];

/// Whether a password field (shadow or passwd) marks the account locked.
pub(crate) fn is_locked_field(field: &[u8]) -> bool {
    LOCKED_PREFIXES.iter().any(|prefix| field.starts_with(prefix)) || LOCKED_FIELDS.contains(&field)
}

/// Refuses a login to `user` that OpenSSH would refuse: expired, locked, nologin file, no
/// usable shell.
pub(crate) fn check_login(user: &TargetUser, nologin_path: &Path) -> Result<(), SessionError> {
    let entry = shadow_entry(&user.name)?;
    if entry.as_ref().is_some_and(|entry| is_expired(entry.expire_days, today())) {
        tracing::info!(user = %user.name, "login refused: account has expired");
        return Err(SessionError::AccountExpired(clip(&user.name)));
    }
    let locked = match &entry {
        Some(entry) => is_locked_field(&entry.password),
        None => user.passwd_field_locked,
    };
    if locked {
        tracing::info!(user = %user.name, "login refused: account is locked");
        return Err(SessionError::AccountLocked(clip(&user.name)));
    }
    if !user.uid.is_root() && nologin_exists(nologin_path) {
        tracing::info!(user = %user.name, path = %nologin_path.display(), "login refused: nologin file exists");
        return Err(SessionError::NoLogin { path: nologin_path.to_path_buf(), message: nologin_message(nologin_path) });
    }
    if !is_executable_file(&user.shell) {
        tracing::info!(user = %user.name, shell = %user.shell.display(), "login refused: shell missing or not executable");
        return Err(SessionError::NoLoginShell { name: clip(&user.name), shell: user.shell.clone() });
    }
    Ok(())
}

/// Refuses subsystems to accounts whose shell refuses logins.
pub(crate) fn check_subsystem(user: &TargetUser) -> Result<(), SessionError> {
    let name = user.shell.file_name().and_then(|name| name.to_str()).unwrap_or("");
    if REFUSING_SHELLS.contains(&name) {
        tracing::info!(user = %user.name, shell = %user.shell.display(), "subsystem refused: the shell refuses logins");
        return Err(SessionError::NoLoginShell { name: clip(&user.name), shell: user.shell.clone() });
    }
    Ok(())
}

/// The shadow entry. Without root the shadow database is unreadable (EACCES); the daemon
/// then only runs sessions as itself, and the passwd field is all there is to check.
fn shadow_entry(name: &str) -> Result<Option<ShadowEntry>, SessionError> {
    match shadow::lookup(name) {
        Ok(entry) => Ok(entry),
        Err(source) if !geteuid().is_root() => {
            tracing::debug!(user = %name, %source, "no shadow entry readable without root");
            Ok(None)
        }
        Err(source) => Err(SessionError::ShadowLookup { name: clip(name), source }),
    }
}

/// Days since 1970-01-01 (UTC), as shadow(5) counts them.
fn today() -> i64 {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    i64::try_from(seconds / SECONDS_PER_DAY).unwrap_or(i64::MAX)
}

/// Expired from day `expire_days` on; a negative value (empty field) never expires.
fn is_expired(expire_days: i64, today: i64) -> bool {
    expire_days >= 0 && today >= expire_days
}

/// Whether the nologin file exists. Fails closed: any entry counts (even a dangling
/// symlink, which sshd's stat would miss), and so does any error but "not found".
fn nologin_exists(path: &Path) -> bool {
    !matches!(path.symlink_metadata(), Err(error) if error.kind() == std::io::ErrorKind::NotFound)
}

/// The nologin file's contents (bounded, control characters other than newline and tab
/// removed, since the caller may show it as an SSH banner), or a default message. Opened
/// non-blocking so a FIFO placed there cannot stall the daemon.
fn nologin_message(path: &Path) -> String {
    let mut raw = Vec::new();
    let read =
        OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC).open(path).and_then(
            |file| match file.metadata()?.is_file() {
                true => File::take(file, MAX_NOLOGIN_MESSAGE_BYTES).read_to_end(&mut raw),
                false => Ok(0),
            },
        );
    if let Err(error) = read {
        tracing::debug!(path = %path.display(), %error, "nologin file unreadable; using the default message");
    }
    let text: String =
        String::from_utf8_lossy(&raw).chars().filter(|c| !c.is_control() || matches!(c, '\n' | '\t')).collect();
    if text.trim().is_empty() {
        DEFAULT_NOLOGIN_MESSAGE.to_string()
    } else {
        text
    }
}

/// A regular file with an execute bit (sshd's test for the login shell).
fn is_executable_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_fields_are_openssh_s_plus_other_platforms_markers() {
        for locked in [&b"!"[..], b"!!", b"!*", b"!$6$salt$hash", b"*LK*", b"*LOCKED*$6$x"] {
            assert!(is_locked_field(locked), "{:?}", String::from_utf8_lossy(locked));
        }
        for open in [&b""[..], b"*", b"x", b"$6$salt$hash", b"*LK*x", b"a!"] {
            assert!(!is_locked_field(open), "{:?}", String::from_utf8_lossy(open));
        }
    }

    #[test]
    fn accounts_expire_on_their_expiry_day() {
        assert!(!is_expired(-1, 20_000));
        assert!(is_expired(0, 20_000));
        assert!(is_expired(20_000, 20_000));
        assert!(!is_expired(20_001, 20_000));
    }
}
