//! [`SessionConfig`]: what the daemon (not the client) decides about every session.

use std::path::PathBuf;

use super::limits::ResourceLimits;

/// Where OpenSSH and `login` look for the file that disables non-root logins.
pub const DEFAULT_NOLOGIN_PATH: &str = "/etc/nologin";

/// Daemon-wide settings for starting sessions. [`SessionConfig::default`] is what a daemon
/// uses unless it knows better, except for [`SessionConfig::limits`]: a daemon that raises
/// its own limits must call [`ResourceLimits::capture`] *before* raising them and put the
/// result here, or its sessions inherit the raised limits (minus the RLIMIT_NOFILE cap).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// While this file exists, only root may log in and its contents are the refusal
    /// message. A field so tests need not touch the real /etc/nologin.
    pub nologin_path: PathBuf,
    /// How sessions are contained so that killing one ends every process it started.
    pub cgroups: CgroupPolicy,
    /// The limits sessions get instead of the daemon's current ones.
    pub limits: ResourceLimits,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            nologin_path: PathBuf::from(DEFAULT_NOLOGIN_PATH),
            cgroups: CgroupPolicy::default(),
            limits: ResourceLimits::capture(),
        }
    }
}

/// Where each session's cgroup v2 is created. Whatever the policy, a host where the cgroup
/// cannot be made or joined falls back (with a warning) to the process group plus a scan
/// of /proc for the session's descendants, which misses a process that both called setsid
/// and lost its parent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CgroupPolicy {
    /// Under the daemon's own cgroup (the `0::` line of /proc/self/cgroup), on the cgroup2
    /// mount found in /proc/self/mountinfo. Under systemd this needs `Delegate=yes`.
    #[default]
    Auto,
    /// Under this directory, which must be a cgroup on a cgroup2 file system.
    Under(PathBuf),
    /// No cgroups: always the process-group-and-scan fallback.
    Disabled,
}
