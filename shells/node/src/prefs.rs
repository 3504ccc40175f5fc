//! What `up` asked for, kept in `DIR/prefs.json` (mode 0600) once the node registered, so
//! a restarted daemon reconnects by itself (by its machine key: the auth key is not
//! stored). `down` keeps it with `want_running` off (a restart stays down); `logout`
//! removes it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

const FILE: &str = "prefs.json";
/// A prefs file longer than this is not ours.
const MAX_LEN: u64 = 64 * 1024;

#[derive(Debug, Error)]
pub enum PrefsError {
    #[error("{path}: {error}")]
    Io { path: String, error: io::Error },
    #[error("{path}: {error}")]
    Parse { path: String, error: serde_json::Error },
    #[error("{0}: too long")]
    TooLong(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefs {
    pub login_server: String,
    pub hostname: String,
    pub control_key: String,
    #[serde(default)]
    pub ssh: bool,
    #[serde(default)]
    pub advertise_tags: Vec<String>,
    #[serde(default)]
    pub accept_dns: bool,
    /// Off after `down`: the daemon does not reconnect by itself.
    #[serde(default = "yes")]
    pub want_running: bool,
}

fn yes() -> bool {
    true
}

impl Prefs {
    /// The saved prefs, if any.
    pub fn load(dir: &Path) -> Result<Option<Self>, PrefsError> {
        let path = dir.join(FILE);
        let shown = path.display().to_string();
        match fs::metadata(&path) {
            Ok(m) if m.len() > MAX_LEN => return Err(PrefsError::TooLong(shown)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(PrefsError::Io { path: shown, error }),
        }
        let text = fs::read(&path).map_err(|error| PrefsError::Io { path: shown.clone(), error })?;
        serde_json::from_slice(&text).map(Some).map_err(|error| PrefsError::Parse { path: shown, error })
    }

    /// Write atomically (a temporary file renamed over the old one).
    pub fn save(&self, dir: &Path) -> Result<(), PrefsError> {
        let path = dir.join(FILE);
        let tmp = dir.join("prefs.json.tmp");
        let io_err = |error| PrefsError::Io { path: path.display().to_string(), error };
        let text = serde_json::to_vec_pretty(self)
            .map_err(|error| PrefsError::Parse { path: path.display().to_string(), error })?;
        let mut file =
            OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io_err)?;
        file.write_all(&text).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        fs::rename(&tmp, &path).map_err(io_err)
    }

    pub fn remove(dir: &Path) -> Result<(), PrefsError> {
        let path = dir.join(FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(PrefsError::Io { path: path.display().to_string(), error }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = std::env::temp_dir().join(format!("meshd-prefs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(Prefs::load(&dir), Ok(None)));
        let prefs = Prefs {
            login_server: "a:1".into(),
            hostname: "h".into(),
            control_key: "00".into(),
            ssh: true,
            advertise_tags: vec!["tag:web".into()],
            accept_dns: false,
            want_running: true,
        };
        prefs.save(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Prefs::load(&dir).ok().flatten(), Some(prefs));
        // Files from before the optional fields load with their defaults.
        fs::write(dir.join(FILE), br#"{"login_server":"a:1","hostname":"h","control_key":"00"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let old = Prefs::load(&dir).ok().flatten().unwrap_or_else(|| panic!("old prefs"));
        assert!(old.want_running && !old.ssh && !old.accept_dns);
        fs::write(dir.join(FILE), b"{garbage").unwrap_or_else(|e| panic!("{e}"));
        assert!(Prefs::load(&dir).is_err());
        Prefs::remove(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(Prefs::load(&dir), Ok(None)));
        let _ = fs::remove_dir_all(&dir);
    }
}
