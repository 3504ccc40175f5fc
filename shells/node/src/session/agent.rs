//! The socket through which an `ssh -A` session reaches the client's agent.
//!
//! The daemon listens on it and relays each connection to the client as an
//! `auth-agent@openssh.com` channel. Only the session's user (and root) may connect: the
//! socket is that user's with mode 0600, inside a fresh directory of the daemon's (0711:
//! others may pass through but not list it, and the user cannot swap it for a link the
//! daemon would later clean up through). The socket is made inside the directory while
//! the directory is still 0700, so there is no moment at which another user could connect.
//! Both go when the [`AgentSocket`] is dropped (the connection ends).

use std::fs::{self, DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::{env, io};

use super::{user, SessionError};

/// A listening agent socket for one user (see the module documentation).
#[derive(Debug)]
pub struct AgentSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

impl AgentSocket {
    /// Makes the socket for the local account `user` (resolved as a session's would be,
    /// `allow_root` as for its sessions), non-blocking, in the temporary directory.
    pub fn create(user: &str, allow_root: bool) -> Result<AgentSocket, SessionError> {
        let target = user::resolve(user, allow_root)?;
        let mut random = [0u8; 8];
        rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| SessionError::AgentSocket(e.into()))?;
        let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let dir = env::temp_dir().join(format!("meshd-agent-{name}"));
        // `create` fails if anything (a link included) is already there.
        DirBuilder::new().mode(0o700).create(&dir).map_err(SessionError::AgentSocket)?;
        let path = dir.join("agent.sock");
        let made = (|| -> io::Result<UnixListener> {
            let listener = UnixListener::bind(&path)?;
            fs::set_permissions(&path, Permissions::from_mode(0o600))?;
            if target.credentials.is_some() {
                std::os::unix::fs::chown(&path, Some(target.uid.as_raw()), Some(target.gid.as_raw()))?;
            }
            fs::set_permissions(&dir, Permissions::from_mode(0o711))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })();
        match made {
            Ok(listener) => Ok(AgentSocket { dir, path, listener }),
            Err(error) => {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_dir(&dir);
                Err(SessionError::AgentSocket(error))
            }
        }
    }

    /// Where sessions find it (`SSH_AUTH_SOCK`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket (non-blocking).
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_dir(&self.dir);
    }
}
