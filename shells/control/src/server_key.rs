//! The server's static X25519 key, in `DIR/server.key`: 64 hex characters and a newline,
//! mode 0600, created from OS randomness on first start. Nodes pin its public key (served
//! at `/key` as 64 lowercase hex characters).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use mesh_core::wireguard::PrivateKey;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::os_random;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}: not 64 hex characters")]
    Malformed(String),
    #[error("{0}: readable by others (mode {1:o}); chmod 600 it")]
    Permissions(String, u32),
    #[error(transparent)]
    Random(#[from] os_random::RandomError),
}

/// Loads the key at `path`, creating it if there is none.
pub fn load_or_create(path: &Path) -> Result<PrivateKey, KeyError> {
    let shown = path.display().to_string();
    let io = |source| KeyError::Io { path: shown.clone(), source };
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions(shown, mode));
            }
            let text = Zeroizing::new(text);
            parse(text.trim()).ok_or(KeyError::Malformed(shown))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = Zeroizing::new(os_random::bytes::<32>()?);
            let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
            let text = Zeroizing::new(format!("{}\n", os_random::hex(&bytes[..])));
            file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
            tracing::info!(path = %shown, "created the server key");
            Ok(PrivateKey::from_bytes(*bytes))
        }
        Err(e) => Err(io(e)),
    }
}

fn parse(hex: &str) -> Option<PrivateKey> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(PrivateKey::from_bytes(*out))
}
