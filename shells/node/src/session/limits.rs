//! Resource limits for sessions: the ones the daemon started with, not the ones it raised.
//!
//! A daemon commonly raises its own RLIMIT_NOFILE (many sockets) or RLIMIT_MEMLOCK, and a
//! child inherits whatever its parent has. So the daemon records its limits at startup with
//! [`ResourceLimits::capture`], and each session's child lowers every limit back to the
//! recorded value before exec. Policy, chosen to be safe whatever the daemon did:
//!
//! - a limit is only ever lowered, never raised, so the reset also works after the child has
//!   dropped root (DESIGN.md puts it after the id switch) and a daemon started with stricter
//!   limits does not hand out looser ones;
//! - the RLIMIT_NOFILE soft limit is further capped at 1024, as systemd does for every
//!   service and login session (DefaultLimitNOFILE=1024:524288): select(2) cannot handle
//!   descriptors at or above FD_SETSIZE (1024), and programs that want more raise their soft
//!   limit up to the (untouched) hard one themselves. OpenSSH itself resets nothing.

use nix::sys::resource::{getrlimit, rlim_t, Resource};

/// Soft RLIMIT_NOFILE cap for sessions (FD_SETSIZE).
pub const SESSION_NOFILE_SOFT_MAX: rlim_t = 1024;

/// Every limit Linux has, so whatever the daemon raised is reset.
const RESOURCES: [Resource; 16] = [
    Resource::RLIMIT_AS,
    Resource::RLIMIT_CORE,
    Resource::RLIMIT_CPU,
    Resource::RLIMIT_DATA,
    Resource::RLIMIT_FSIZE,
    Resource::RLIMIT_LOCKS,
    Resource::RLIMIT_MEMLOCK,
    Resource::RLIMIT_MSGQUEUE,
    Resource::RLIMIT_NICE,
    Resource::RLIMIT_NOFILE,
    Resource::RLIMIT_NPROC,
    Resource::RLIMIT_RSS,
    Resource::RLIMIT_RTPRIO,
    Resource::RLIMIT_RTTIME,
    Resource::RLIMIT_SIGPENDING,
    Resource::RLIMIT_STACK,
];

/// A snapshot of this process's resource limits (soft, hard), for sessions to return to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceLimits {
    limits: Vec<(Resource, rlim_t, rlim_t)>,
}

impl ResourceLimits {
    /// Records the current limits. Call it at startup, before the daemon raises any.
    /// A limit that cannot be read is left out (and so never reset).
    pub fn capture() -> ResourceLimits {
        let limits = RESOURCES
            .into_iter()
            .filter_map(|resource| getrlimit(resource).ok().map(|(soft, hard)| (resource, soft, hard)))
            .collect();
        ResourceLimits { limits }
    }

    /// The recorded (soft, hard) limit for `resource`, if it was read.
    pub fn get(&self, resource: Resource) -> Option<(rlim_t, rlim_t)> {
        self.limits.iter().find(|(r, _, _)| *r == resource).map(|&(_, soft, hard)| (soft, hard))
    }

    /// The `setrlimit` calls the child makes, computed in the parent against its current
    /// limits (which the child inherits): only the limits that change.
    pub(crate) fn resets(&self) -> Vec<LimitReset> {
        RESOURCES
            .into_iter()
            .filter_map(|resource| {
                let (soft, hard) = getrlimit(resource).ok()?;
                let (target_soft, target_hard) = target(self.get(resource), resource, (soft, hard));
                ((target_soft, target_hard) != (soft, hard)).then_some(LimitReset {
                    resource,
                    soft: target_soft,
                    hard: target_hard,
                })
            })
            .collect()
    }
}

/// One limit for the child to set before exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LimitReset {
    pub(crate) resource: Resource,
    pub(crate) soft: rlim_t,
    pub(crate) hard: rlim_t,
}

/// The session's limit given the recorded one and the current one: never above either, and
/// a NOFILE soft limit never above [`SESSION_NOFILE_SOFT_MAX`]. (Soft stays <= hard: each
/// of the two inputs has soft <= hard, and so has their minimum.)
fn target(recorded: Option<(rlim_t, rlim_t)>, resource: Resource, current: (rlim_t, rlim_t)) -> (rlim_t, rlim_t) {
    let (mut soft, hard) = match recorded {
        Some((r_soft, r_hard)) => (r_soft.min(current.0), r_hard.min(current.1)),
        None => current,
    };
    if resource == Resource::RLIMIT_NOFILE {
        soft = soft.min(SESSION_NOFILE_SOFT_MAX);
    }
    (soft, hard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::resource::RLIM_INFINITY;

    #[test]
    fn limits_are_only_lowered_to_the_recorded_ones() {
        let stack = Resource::RLIMIT_STACK;
        // The daemon raised both: back to the recorded values.
        assert_eq!(target(Some((8, 16)), stack, (32, RLIM_INFINITY)), (8, 16));
        // The daemon lowered them: they stay lowered (an unprivileged child could not raise).
        assert_eq!(target(Some((8, 16)), stack, (4, 10)), (4, 10));
        // Nothing recorded: unchanged.
        assert_eq!(target(None, stack, (4, 10)), (4, 10));
    }

    #[test]
    fn the_nofile_soft_limit_is_capped_at_fd_setsize() {
        let nofile = Resource::RLIMIT_NOFILE;
        assert_eq!(target(Some((20_000, 20_000)), nofile, (65_536, 65_536)), (1024, 20_000));
        assert_eq!(target(Some((256, 4096)), nofile, (4096, 4096)), (256, 4096));
        assert_eq!(target(None, nofile, (RLIM_INFINITY, RLIM_INFINITY)), (1024, RLIM_INFINITY));
    }

    #[test]
    fn nothing_changes_when_the_limits_are_the_recorded_ones_and_nofile_is_low() {
        let mut limits = ResourceLimits::capture();
        for (resource, soft, _) in &mut limits.limits {
            if *resource == Resource::RLIMIT_NOFILE {
                *soft = (*soft).min(SESSION_NOFILE_SOFT_MAX);
            }
        }
        let resets = limits.resets();
        assert!(resets.iter().all(|reset| reset.resource == Resource::RLIMIT_NOFILE), "{resets:?}");
    }
}
