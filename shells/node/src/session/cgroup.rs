//! One cgroup v2 per session, so that revoking it ends every process it started.
//!
//! A process group is not enough: `killpg` needs a live group id (after the leader is
//! reaped the id may belong to someone else), and a process that calls setsid leaves both
//! the group and the session. Cgroup membership is inherited by every descendant and
//! cannot be left without write access to a cgroup.procs file, which the user never has.
//!
//! Placement: the parent creates the cgroup and opens its `cgroup.procs` for writing; the
//! child writes "0" (itself) to that descriptor as its very first step after fork, before
//! setsid, the id switch and exec, so everything the session ever runs starts inside it.
//! The alternatives are worse: the parent writing the child's pid needs the child to wait
//! for it between fork and exec, which `std::process::Command` has no hook for (spawn
//! returns only after exec), and opening the path in the child would mean a path lookup
//! there and an error the parent cannot describe. Opening in the parent also checks the
//! permission while we can still fall back (current kernels check a migration against the
//! opener's credentials; the child is still root anyway when it writes). clone3's
//! CLONE_INTO_CGROUP would be atomic but needs a raw clone.
//!
//! Killing writes "1" to `cgroup.kill` (Linux 5.14), which SIGKILLs every member at once,
//! new forks included. Older kernels get rounds of SIGKILL to each pid in `cgroup.procs`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::sys::signal::{kill, Signal};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
use nix::unistd::Pid;

use super::config::CgroupPolicy;

/// Most bytes read from a proc or cgroup file (mountinfo on a busy host is a few KiB).
const MAX_PROC_FILE_BYTES: u64 = 1 << 20;
/// Kill rounds over cgroup.procs on kernels without cgroup.kill.
const MAX_KILL_ROUNDS: usize = 64;
/// Attempts at a fresh cgroup name (a stale one from a crashed daemon with our pid exists).
const NAME_ATTEMPTS: usize = 8;

/// Numbers the cgroups of this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Only the first fallback of a process is a warning; the rest would repeat it per session.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Why no cgroup was made for a session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unavailable {
    /// /proc/self/cgroup has no `0::` line: no cgroup v2 hierarchy.
    #[error("this process is in no cgroup v2 hierarchy (/proc/self/cgroup has no 0:: line)")]
    NoUnifiedHierarchy,
    /// No cgroup2 mount in /proc/self/mountinfo shows our cgroup.
    #[error("no cgroup2 mount shows this process's cgroup {0:?}")]
    NotMounted(String),
    /// The parent directory is not on a cgroup2 file system.
    #[error("{0:?} is not on a cgroup2 file system")]
    NotCgroup2(PathBuf),
    /// Reading, creating or opening something failed.
    #[error("{what} {path:?}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
}

/// A session's cgroup. Dropping it removes the directory (which fails, with a warning,
/// while processes are still in it).
#[derive(Debug)]
pub(crate) struct SessionCgroup {
    dir: PathBuf,
    /// `cgroup.kill` exists (Linux 5.14).
    has_kill: bool,
    removed: bool,
}

/// Creates the cgroup for a new session, with its `cgroup.procs` open for the child to
/// write itself into. `None` (after logging why) when the policy or the host gives none.
pub(crate) fn create(policy: &CgroupPolicy) -> Option<(SessionCgroup, OwnedFd)> {
    let parent = match policy {
        CgroupPolicy::Disabled => return None,
        CgroupPolicy::Auto => own_cgroup_dir(),
        CgroupPolicy::Under(dir) => Ok(dir.clone()),
    };
    match parent.and_then(|parent| create_under(&parent)) {
        Ok(created) => Some(created),
        Err(error) => {
            fallback_warning(&error);
            None
        }
    }
}

/// Logs that sessions fall back to the process-group-and-scan containment.
pub(crate) fn fallback_warning(reason: &dyn std::fmt::Display) {
    if WARNED.swap(true, Ordering::Relaxed) {
        tracing::debug!(%reason, "no cgroup for this session; containing it by process group and /proc scan");
    } else {
        tracing::warn!(%reason, "no usable cgroup v2: sessions are contained by process group and /proc scan, which misses processes that call setsid and lose their parent");
    }
}

fn create_under(parent: &Path) -> Result<(SessionCgroup, OwnedFd), Unavailable> {
    let fs = statfs(parent).map_err(|errno| io_error("statfs", parent, errno.into()))?;
    if fs.filesystem_type() != CGROUP2_SUPER_MAGIC {
        return Err(Unavailable::NotCgroup2(parent.to_path_buf()));
    }
    let dir = make_dir(parent)?;
    let cgroup = SessionCgroup { has_kill: dir.join("cgroup.kill").exists(), dir, removed: false };
    let procs_path = cgroup.dir.join("cgroup.procs");
    // Dropping `cgroup` on error removes the (empty) directory again.
    let procs = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(&procs_path)
        .map_err(|source| io_error("opening", &procs_path, source))?;
    Ok((cgroup, OwnedFd::from(procs)))
}

fn io_error(what: &'static str, path: &Path, source: io::Error) -> Unavailable {
    Unavailable::Io { what, path: path.to_path_buf(), source }
}

/// mkdir `meshd-session-<our pid>-<n>` under `parent`, skipping names that exist.
fn make_dir(parent: &Path) -> Result<PathBuf, Unavailable> {
    let mut last = None;
    for _ in 0..NAME_ATTEMPTS {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("meshd-session-{}-{id}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => last = Some((dir, error)),
            Err(source) => return Err(io_error("creating", &dir, source)),
        }
    }
    let (path, source) = last.unwrap_or_else(|| (parent.to_path_buf(), io::Error::other("no attempt made")));
    Err(io_error("creating", &path, source))
}

/// This process's cgroup v2 directory: the `0::` path of /proc/self/cgroup under the
/// cgroup2 mount that shows it (never a hard-coded /sys/fs/cgroup: hybrid hosts mount v2
/// at /sys/fs/cgroup/unified).
fn own_cgroup_dir() -> Result<PathBuf, Unavailable> {
    let cgroup = read_bounded(Path::new("/proc/self/cgroup"))?;
    let path = unified_path(&cgroup).ok_or(Unavailable::NoUnifiedHierarchy)?;
    let mountinfo = read_bounded(Path::new("/proc/self/mountinfo"))?;
    cgroup2_dir(&mountinfo, path).ok_or_else(|| Unavailable::NotMounted(path.to_string()))
}

fn read_bounded(path: &Path) -> Result<String, Unavailable> {
    let mut text = String::new();
    File::open(path)
        .and_then(|file| file.take(MAX_PROC_FILE_BYTES).read_to_string(&mut text))
        .map_err(|source| io_error("reading", path, source))?;
    Ok(text)
}

/// The path of the `0::` line (cgroup v2) of a /proc/<pid>/cgroup text.
fn unified_path(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|line| line.strip_prefix("0::")).filter(|path| path.starts_with('/'))
}

/// Where cgroup `path` (as /proc/self/cgroup shows it) is on a cgroup2 mount of
/// `mountinfo`. A mount's root field says which cgroup it shows (not "/" inside a cgroup
/// namespace or for a bind mount of a subtree), so the path must lie under it.
fn cgroup2_dir(mountinfo: &str, path: &str) -> Option<PathBuf> {
    if path.split('/').any(|part| part == "..") {
        return None;
    }
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().position(|field| *field == "-")?;
        if fields.get(separator + 1) != Some(&"cgroup2") {
            return None;
        }
        let root = unescape(fields.get(3)?);
        let mount_point = unescape(fields.get(4)?);
        let relative = if root == "/" {
            Some(path)
        } else {
            path.strip_prefix(root.as_str()).filter(|rest| rest.is_empty() || rest.starts_with('/'))
        }?;
        Some(Path::new(&mount_point).join(relative.trim_start_matches('/')))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SessionCgroup {
    /// The cgroup's directory.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs every process in the cgroup, whether or not the session leader is alive.
    pub(crate) fn kill(&self) -> io::Result<()> {
        if self.has_kill {
            return OpenOptions::new().write(true).open(self.dir.join("cgroup.kill"))?.write_all(b"1");
        }
        for _ in 0..MAX_KILL_ROUNDS {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                // ESRCH: it exited meanwhile.
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        Ok(())
    }

    /// Whether any process is still in the cgroup (a missing cgroup is empty).
    pub(crate) fn is_populated(&self) -> io::Result<bool> {
        let mut events = String::new();
        match File::open(self.dir.join("cgroup.events")) {
            Ok(file) => file.take(MAX_PROC_FILE_BYTES).read_to_string(&mut events)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        Ok(events.lines().any(|line| line.trim() == "populated 1"))
    }

    fn pids(&self) -> io::Result<Vec<Pid>> {
        let mut procs = String::new();
        File::open(self.dir.join("cgroup.procs"))?.take(MAX_PROC_FILE_BYTES).read_to_string(&mut procs)?;
        Ok(procs.lines().filter_map(|line| line.trim().parse().ok()).map(Pid::from_raw).collect())
    }

    /// Removes the directory; fails with EBUSY while processes are in it.
    pub(crate) fn remove(&mut self) -> io::Result<()> {
        if self.removed {
            return Ok(());
        }
        match fs::remove_dir(&self.dir) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        self.removed = true;
        Ok(())
    }
}

impl Drop for SessionCgroup {
    fn drop(&mut self) {
        if let Err(error) = self.remove() {
            tracing::warn!(cgroup = %self.dir.display(), %error, "session cgroup left behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";

    #[test]
    fn the_unified_line_is_found_among_v1_lines() {
        assert_eq!(unified_path("4:memory:/x\n0::/system.slice/meshd.service\n"), Some("/system.slice/meshd.service"));
        assert_eq!(unified_path("4:memory:/x\n1:name=systemd:/\n"), None);
        assert_eq!(unified_path("0::relative\n"), None);
    }

    #[test]
    fn the_cgroup2_mount_is_found_wherever_it_is() {
        assert_eq!(cgroup2_dir(HYBRID, "/"), Some(PathBuf::from("/sys/fs/cgroup/unified/")));
        assert_eq!(cgroup2_dir(HYBRID, "/a/b"), Some(PathBuf::from("/sys/fs/cgroup/unified/a/b")));
        let pure = "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_dir(pure, "/user.slice"), Some(PathBuf::from("/sys/fs/cgroup/user.slice")));
        assert_eq!(cgroup2_dir("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", "/"), None);
        assert_eq!(cgroup2_dir(HYBRID, "/a/../../etc"), None);
    }

    #[test]
    fn a_mount_of_a_subtree_only_shows_paths_under_its_root() {
        let subtree = "60 1 0:22 /ctr /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_dir(subtree, "/ctr/svc"), Some(PathBuf::from("/mnt/my cg/svc")));
        assert_eq!(cgroup2_dir(subtree, "/ctr"), Some(PathBuf::from("/mnt/my cg/")));
        assert_eq!(cgroup2_dir(subtree, "/ctrl"), None);
        assert_eq!(cgroup2_dir(subtree, "/other"), None);
    }

    #[test]
    fn escapes_are_decoded_and_broken_ones_kept() {
        assert_eq!(unescape("a\\040b\\011c"), "a b\tc");
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("\\777"), "?");
    }
}
