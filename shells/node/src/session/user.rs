//! Who the session runs as: resolve the account by name, check it by uid, and prepare
//! everything the child needs (groups, ids, home) before fork.
//!
//! Name first, then uid: an NSS backend may match names case-insensitively or read an
//! all-digit name as a uid, and several names may share uid 0. So the name must be a plain
//! account name, the entry must carry exactly that name, its uid must resolve back, and uid 0
//! is refused unless the request allows root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{geteuid, getgrouplist, Gid, Uid, User};

use super::account::is_locked_field;
use super::error::{clip, SessionError};
use super::sys::Credentials;

/// Longest account name accepted (Linux `useradd` limit).
const MAX_NAME_LEN: usize = 32;

/// Shell used when the passwd entry has none (or a relative one).
const FALLBACK_SHELL: &str = "/bin/sh";

/// A resolved local account, with what the child needs to become it.
#[derive(Debug)]
pub(crate) struct TargetUser {
    pub(crate) name: String,
    pub(crate) uid: Uid,
    pub(crate) gid: Gid,
    pub(crate) home: PathBuf,
    pub(crate) shell: PathBuf,
    /// Whether the passwd entry's own password field marks the account locked (what the
    /// lock check uses when there is no shadow entry; the field itself is not kept).
    pub(crate) passwd_field_locked: bool,
    /// `None` when no switch is needed: the daemon already runs as this (non-root) user.
    pub(crate) credentials: Option<Credentials>,
}

impl TargetUser {
    /// Home as a C string for the child's `chdir` ("/" if it cannot be one).
    pub(crate) fn home_cstring(&self) -> CString {
        CString::new(self.home.as_os_str().as_bytes()).unwrap_or_else(|_| CString::from(c"/"))
    }
}

/// Resolves `name` to a local account the session may run as.
pub(crate) fn resolve(name: &str, allow_root: bool) -> Result<TargetUser, SessionError> {
    check_name(name)?;
    let lookup_error = |source| SessionError::UserLookup { name: clip(name), source };
    let user = User::from_name(name).map_err(lookup_error)?.ok_or_else(|| SessionError::UnknownUser(clip(name)))?;
    if user.name != name {
        return Err(SessionError::InconsistentUser(clip(name)));
    }
    let by_uid = User::from_uid(user.uid).map_err(lookup_error)?;
    if by_uid.is_none_or(|entry| entry.uid != user.uid) {
        return Err(SessionError::InconsistentUser(clip(name)));
    }
    if user.uid.is_root() && !allow_root {
        return Err(SessionError::RootNotAllowed(clip(name)));
    }
    let credentials = credentials_for(&user)?;
    Ok(TargetUser {
        shell: login_shell(&user.shell),
        passwd_field_locked: is_locked_field(user.passwd.as_bytes()),
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        home: user.dir,
        credentials,
    })
}

/// A plain account name: 1..=32 of `[A-Za-z0-9_.-]` (and a trailing `$` for machine
/// accounts), not starting with `-` or `.`, and not all digits (those read as uids).
fn check_name(name: &str) -> Result<(), SessionError> {
    let bytes = name.as_bytes();
    let body = bytes.strip_suffix(b"$").unwrap_or(bytes);
    let plain = !body.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && body.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !matches!(body[0], b'-' | b'.')
        && !body.iter().all(u8::is_ascii_digit);
    if plain {
        Ok(())
    } else {
        Err(SessionError::InvalidUserName(clip(name)))
    }
}

/// The shell to exec: the passwd one if it is an absolute path, else `/bin/sh`.
fn login_shell(shell: &Path) -> PathBuf {
    if shell.is_absolute() {
        shell.to_path_buf()
    } else {
        PathBuf::from(FALLBACK_SHELL)
    }
}

/// The ids and supplementary groups to switch to, computed now because `initgroups` reads
/// /etc/group and so cannot run between fork and exec.
fn credentials_for(user: &User) -> Result<Option<Credentials>, SessionError> {
    let current = geteuid();
    if !current.is_root() {
        if user.uid == current {
            return Ok(None);
        }
        return Err(SessionError::NotPermitted {
            name: clip(&user.name),
            uid: user.uid.as_raw(),
            current: current.as_raw(),
        });
    }
    // The name passed `check_name`, so it has no NUL.
    let cname = CString::new(user.name.as_str()).map_err(|_| SessionError::InvalidUserName(clip(&user.name)))?;
    let groups =
        getgrouplist(&cname, user.gid).map_err(|source| SessionError::UserLookup { name: clip(&user.name), source })?;
    let mut groups: Vec<_> = groups.into_iter().map(Gid::as_raw).collect();
    // Sorted, as the kernel keeps (and getgroups returns) them, so the child can compare.
    groups.sort_unstable();
    Ok(Some(Credentials {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        previous_uid: current.as_raw(),
        previous_gid: nix::unistd::getegid().as_raw(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_not_plain_account_names_are_refused() {
        for bad in ["", "0", "1000", "-root", ".x", "a/b", "a b", "ro\0ot", "x:y", "é", &"a".repeat(33), "$"] {
            assert!(matches!(check_name(bad), Err(SessionError::InvalidUserName(_))), "{bad:?}");
        }
        for good in ["root", "nobody", "www-data", "_apt", "a.b", "host$", "u1000", "systemd-network"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn relative_or_empty_shell_falls_back_to_bin_sh() {
        assert_eq!(login_shell(Path::new("")), PathBuf::from("/bin/sh"));
        assert_eq!(login_shell(Path::new("bash")), PathBuf::from("/bin/sh"));
        assert_eq!(login_shell(Path::new("/bin/bash")), PathBuf::from("/bin/bash"));
    }

    #[test]
    fn root_is_refused_unless_allowed() {
        assert!(matches!(resolve("root", false), Err(SessionError::RootNotAllowed(_))));
        assert!(matches!(resolve("0", true), Err(SessionError::InvalidUserName(_))));
        assert!(matches!(resolve("no-such-user-here", true), Err(SessionError::UnknownUser(_))));
    }
}
