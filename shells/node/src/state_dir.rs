//! The daemon's state directory: created with mode 0700, locked for one daemon at a time
//! (an `flock` on `DIR/lock`, released when the process ends, also on `kill -9`), and the
//! keys it keeps: the machine key (the control channel's identity), the node key (its
//! WireGuard key) and the SSH host key, each 32 bytes from the OS in a hex file of mode
//! 0600, generated on first start and read back on every later one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use mesh_core::wireguard::PrivateKey;
use thiserror::Error;
use tracing::info;

#[derive(Debug, Error)]
pub enum StateDirError {
    #[error("state directory {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("state directory {0} is in use by another meshd")]
    Locked(PathBuf),
    #[error("{0}: not a key (64 hex digits expected)")]
    BadKey(PathBuf),
    #[error("OS randomness: {0}")]
    Random(io::Error),
}

/// An open, locked state directory with its keys.
pub struct StateDir {
    path: PathBuf,
    /// Holds the lock for as long as the daemon runs.
    _lock: File,
    pub machine_key: PrivateKey,
    pub node_key: PrivateKey,
    pub ssh_host_key: [u8; 32],
}

impl std::fmt::Debug for StateDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDir").field("path", &self.path).finish_non_exhaustive()
    }
}

impl StateDir {
    /// Create (0700) and lock `path`, then load or generate the keys.
    pub fn open(path: &Path) -> Result<Self, StateDirError> {
        let io_err = |error| StateDirError::Io { path: path.to_path_buf(), error };
        fs::create_dir_all(path).map_err(io_err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|error| StateDirError::Io { path: lock_path.clone(), error })?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(StateDirError::Locked(path.to_path_buf())),
            Err(e) => return Err(StateDirError::Io { path: lock_path, error: e.into() }),
        }
        let machine_key = PrivateKey::from_bytes(load_or_create(&path.join("machine.key"))?);
        let node_key = PrivateKey::from_bytes(load_or_create(&path.join("node.key"))?);
        let ssh_host_key = load_or_create(&path.join("ssh_host_ed25519.key"))?;
        info!(path = %path.display(), "state directory open");
        Ok(Self { path: path.to_path_buf(), _lock: lock, machine_key, node_key, ssh_host_key })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// 32 bytes from a hex file, or new ones from the OS written to it (0600) first.
fn load_or_create(path: &Path) -> Result<[u8; 32], StateDirError> {
    let io_err = |error| StateDirError::Io { path: path.to_path_buf(), error };
    match fs::read_to_string(path) {
        Ok(text) => return parse_hex(text.trim()).ok_or_else(|| StateDirError::BadKey(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut key = [0u8; 32];
    crate::runtime::fill_random(&mut key).map_err(|e| StateDirError::Random(io::Error::other(e.to_string())))?;
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io_err)?;
    writeln!(file, "{}", to_hex(&key)).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)?;
    Ok(key)
}

/// The OpenSSH public key line (`ssh-ed25519 AAAA...`) of the host key with this seed: what
/// the netmap carries, so peers write it into known_hosts.
pub fn ssh_host_key_line(seed: &[u8; 32]) -> String {
    use base64::Engine as _;
    let key = ed25519_dalek::SigningKey::from_bytes(seed);
    let blob = mesh_core::ssh::transport::host_key_blob(&key);
    format!("ssh-ed25519 {}", base64::engine::general_purpose::STANDARD.encode(blob))
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let raw = text.as_bytes();
    if raw.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = std::str::from_utf8(raw.get(2 * i..2 * i + 2)?).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_and_second_open_is_refused() {
        let dir = std::env::temp_dir().join(format!("meshd-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = StateDir::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        let key = first.node_key.public_key();
        assert!(matches!(StateDir::open(&dir), Err(StateDirError::Locked(_))));
        let mode = fs::metadata(dir.join("node.key")).map(|m| m.permissions().mode() & 0o777).ok();
        assert_eq!(mode, Some(0o600));
        let dir_mode = fs::metadata(&dir).map(|m| m.permissions().mode() & 0o777).ok();
        assert_eq!(dir_mode, Some(0o700));
        drop(first);
        let again = StateDir::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.node_key.public_key(), key);
        drop(again);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn hex_round_trip() {
        let bytes = [0xabu8; 32];
        assert_eq!(parse_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(parse_hex("zz"), None);
    }
}
