//! `up --accept-dns`: the system resolver pointed at MagicDNS (100.100.100.100) for the
//! tailnet's names.
//!
//! With systemd-resolved managing the host's resolver, the TUN link gets per-link DNS
//! through `resolvectl` (resolved's own command line over its D-Bus API), routing only the
//! tailnet domain there. Otherwise /etc/resolv.conf is managed: the original is kept in the
//! state directory and ours written in its place, MagicDNS first and the original servers
//! after it (MagicDNS answers REFUSED for names outside the tailnet, and the C library then
//! asks the next server). The file is rewritten in place, never renamed over: `ip netns
//! exec` bind-mounts `/etc/netns/<ns>/resolv.conf` there, and a mount point cannot be
//! replaced. `down`, a clean stop and the next start after a crash put the original back.

use std::fs::{self, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;
use tracing::{info, warn};

/// The first line of a resolv.conf we wrote.
const MARKER: &str = "# Managed by meshd (MagicDNS); `meshctl down` restores the original.";
const BACKUP: &str = "resolv.conf.orig";
/// A resolv.conf longer than this is not read.
const MAX_LEN: u64 = 64 * 1024;
/// glibc reads at most three `nameserver` lines (MAXNS).
const MAX_NAMESERVERS: usize = 3;

#[derive(Debug, Error)]
pub enum SystemDnsError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{0}: too long for a resolv.conf")]
    TooLong(PathBuf),
    #[error("resolvectl {args}: {why}")]
    Resolvectl { args: String, why: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Applied {
    /// Per-link DNS on this link through systemd-resolved.
    Resolved { link: String },
    /// /etc/resolv.conf rewritten, for this domain.
    ResolvConf { domain: String },
}

/// The resolver configuration this daemon made, and how to undo it.
#[derive(Debug)]
pub struct SystemDns {
    resolv_conf: PathBuf,
    backup: PathBuf,
    nameserver: String,
    applied: Option<Applied>,
}

impl SystemDns {
    /// For the host's /etc/resolv.conf, keeping the original in `state_dir`. A backup
    /// left by a daemon that did not stop cleanly is put back now.
    pub fn new(state_dir: &Path, nameserver: std::net::IpAddr) -> Self {
        Self::with_file(Path::new("/etc/resolv.conf"), state_dir, nameserver)
    }

    /// As [`SystemDns::new`] for another resolv.conf.
    pub fn with_file(resolv_conf: &Path, state_dir: &Path, nameserver: std::net::IpAddr) -> Self {
        let mut dns = Self {
            resolv_conf: resolv_conf.to_path_buf(),
            backup: state_dir.join(BACKUP),
            nameserver: nameserver.to_string(),
            applied: None,
        };
        if dns.backup.exists() {
            dns.applied = Some(Applied::ResolvConf { domain: String::new() });
            if let Err(error) = dns.restore() {
                warn!(%error, "cannot restore the resolver configuration of the last run");
            }
        }
        dns
    }

    pub fn is_applied(&self) -> bool {
        self.applied.is_some()
    }

    /// Send the tailnet's names (`domain`) to MagicDNS. `link` is the TUN, when there is
    /// one (systemd-resolved's per-link DNS needs it).
    pub fn apply(&mut self, link: Option<&str>, domain: &str) -> Result<(), SystemDnsError> {
        if domain.is_empty() {
            return Ok(());
        }
        match (&self.applied, link) {
            (Some(Applied::Resolved { link: l }), Some(now)) if l == now => return Ok(()),
            (Some(Applied::ResolvConf { domain: d }), _) if d == domain => return Ok(()),
            _ => {}
        }
        if let Some(link) = link.filter(|_| self.resolved_manages()) {
            resolvectl(&["dns", link, &self.nameserver])?;
            resolvectl(&["domain", link, &format!("~{domain}"), domain])?;
            info!(link, domain, "MagicDNS configured through systemd-resolved");
            self.applied = Some(Applied::Resolved { link: link.to_string() });
            return Ok(());
        }
        let current = self.read()?;
        if !current.starts_with(MARKER) {
            write_file(&self.backup, &current, 0o600)?;
        }
        let original = match current.starts_with(MARKER) {
            true => read_limited(&self.backup)?,
            false => current,
        };
        write_file(&self.resolv_conf, &managed(&original, &self.nameserver, domain), 0o644)?;
        info!(path = %self.resolv_conf.display(), domain, "MagicDNS configured in resolv.conf");
        self.applied = Some(Applied::ResolvConf { domain: domain.to_string() });
        Ok(())
    }

    /// Undo [`SystemDns::apply`]. A resolv.conf someone else rewrote since is left alone.
    pub fn restore(&mut self) -> Result<(), SystemDnsError> {
        match self.applied.take() {
            None => Ok(()),
            Some(Applied::Resolved { link }) => resolvectl(&["revert", &link]),
            Some(Applied::ResolvConf { .. }) => {
                let current = self.read()?;
                if current.starts_with(MARKER) {
                    let original = read_limited(&self.backup)?;
                    write_file(&self.resolv_conf, &original, 0o644)?;
                    info!(path = %self.resolv_conf.display(), "resolv.conf restored");
                } else {
                    warn!(path = %self.resolv_conf.display(), "resolv.conf changed by someone else; left as it is");
                }
                fs::remove_file(&self.backup).map_err(|error| SystemDnsError::Io { path: self.backup.clone(), error })
            }
        }
    }

    /// systemd-resolved runs and the host's resolv.conf is its stub.
    fn resolved_manages(&self) -> bool {
        Path::new("/run/systemd/resolve/io.systemd.Resolve").exists()
            && fs::canonicalize(&self.resolv_conf).is_ok_and(|p| p.starts_with("/run/systemd/resolve"))
    }

    fn read(&self) -> Result<String, SystemDnsError> {
        match read_limited(&self.resolv_conf) {
            Err(SystemDnsError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            other => other,
        }
    }
}

impl Drop for SystemDns {
    fn drop(&mut self) {
        if let Err(error) = self.restore() {
            warn!(%error, "cannot restore the resolver configuration");
        }
    }
}

/// The managed file: MagicDNS first, then up to two of the original servers; the tailnet
/// domain first in the search list; the original's options kept.
fn managed(original: &str, nameserver: &str, domain: &str) -> String {
    let mut servers = vec![nameserver.to_string()];
    let mut search = vec![domain.to_string()];
    let mut options = Vec::new();
    for line in original.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(s) = words.next().filter(|s| *s != nameserver) {
                    servers.push(s.to_string());
                }
            }
            // The last `search` or `domain` line is the one that counts.
            Some("search" | "domain") => {
                search.truncate(1);
                search.extend(words.filter(|w| *w != domain).map(str::to_string));
            }
            Some("options") => options.push(line.trim().to_string()),
            _ => {}
        }
    }
    servers.truncate(MAX_NAMESERVERS);
    let mut out = format!("{MARKER}\n");
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out.push_str(&format!("search {}\n", search.join(" ")));
    for o in options {
        out.push_str(&o);
        out.push('\n');
    }
    out
}

fn resolvectl(args: &[&str]) -> Result<(), SystemDnsError> {
    let failed = |why: String| SystemDnsError::Resolvectl { args: args.join(" "), why };
    let out = Command::new("resolvectl").args(args).output().map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

fn read_limited(path: &Path) -> Result<String, SystemDnsError> {
    let io_err = |error| SystemDnsError::Io { path: path.to_path_buf(), error };
    let file = fs::File::open(path).map_err(io_err)?;
    let mut text = String::new();
    file.take(MAX_LEN + 1).read_to_string(&mut text).map_err(io_err)?;
    if text.len() as u64 > MAX_LEN {
        return Err(SystemDnsError::TooLong(path.to_path_buf()));
    }
    Ok(text)
}

/// Write `text` into `path` in place (truncated, never renamed over); a new file gets
/// `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), SystemDnsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io_err = |error| SystemDnsError::Io { path: path.to_path_buf(), error };
    let mut file = OpenOptions::new().write(true).truncate(true).create(true).mode(mode).open(path).map_err(io_err)?;
    file.write_all(text.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_puts_magicdns_first_and_keeps_the_rest() {
        let original = "# comment\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nnameserver 192.0.2.3\n\
                        search corp.example\noptions edns0\n";
        let text = managed(original, "100.100.100.100", "tail.mesh");
        assert_eq!(
            text,
            format!(
                "{MARKER}\nnameserver 100.100.100.100\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n\
                 search tail.mesh corp.example\noptions edns0\n"
            )
        );
        assert_eq!(
            managed("", "100.100.100.100", "t.m"),
            format!("{MARKER}\nnameserver 100.100.100.100\nsearch t.m\n")
        );
    }

    #[test]
    fn apply_and_restore_round_trip_in_place() {
        let dir = std::env::temp_dir().join(format!("meshd-dns-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let conf = dir.join("resolv.conf");
        let original = "nameserver 192.0.2.1\nsearch example.org\n";
        fs::write(&conf, original).unwrap_or_else(|e| panic!("{e}"));
        let ns = std::net::IpAddr::from([100, 100, 100, 100]);
        let mut dns = SystemDns::with_file(&conf, &dir, ns);
        dns.apply(None, "tail.mesh").unwrap_or_else(|e| panic!("{e}"));
        dns.apply(None, "tail.mesh").unwrap_or_else(|e| panic!("{e}"));
        let text = fs::read_to_string(&conf).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.starts_with(MARKER) && text.contains("nameserver 100.100.100.100\nnameserver 192.0.2.1\n"));
        // Applying again (a new domain) keeps the true original as the backup.
        dns.apply(None, "other.mesh").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fs::read_to_string(dir.join(BACKUP)).unwrap_or_default(), original);
        // A crash: a new manager finds the backup and restores at once.
        std::mem::forget(dns);
        let again = SystemDns::with_file(&conf, &dir, ns);
        assert!(!again.is_applied());
        assert_eq!(fs::read_to_string(&conf).unwrap_or_default(), original);
        assert!(!dir.join(BACKUP).exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
