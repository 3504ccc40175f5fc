//! The only unsafe code of the crate besides `shadow`: what the child does between fork
//! and exec, and the two terminal ioctls nix has no safe wrapper for.
//!
//! Between fork and exec a multi-threaded parent's child may only make async-signal-safe
//! calls: no allocation, no locks, no NSS. So [`ChildSetup`] is built entirely in the parent
//! (ids, the group list `initgroups` would compute and a buffer to read it back into, the
//! limits to set, the cgroup's open `cgroup.procs`, home as a C string) and the child only
//! issues system calls on it (nix's and rustix's wrappers are thin system calls too).
//! Descriptors the daemon inherited without close-on-exec are marked close-on-exec first, so
//! only 0, 1 and 2 reach the user's program. A failing step writes one byte naming the step
//! to a close-on-exec pipe before returning the error, so the parent can say which step
//! failed; a cgroup that could not be joined is reported the same way without failing.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::libc;
use nix::pty::Winsize;
use nix::sys::resource::setrlimit;

use super::limits::LimitReset;

/// Ids to switch to, and the ids we switch from (to prove they cannot be regained).
#[derive(Debug)]
pub(crate) struct Credentials {
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
    /// Supplementary groups, from `getgrouplist` in the parent, sorted.
    pub(crate) groups: Vec<libc::gid_t>,
    pub(crate) previous_uid: libc::uid_t,
    pub(crate) previous_gid: libc::gid_t,
}

/// Everything the child does before exec, in DESIGN.md's order.
#[derive(Debug)]
pub(crate) struct ChildSetup {
    /// The session cgroup's `cgroup.procs`, open for writing: the child writes "0" to it
    /// first thing (see `cgroup` for why there).
    pub(crate) cgroup_procs: Option<OwnedFd>,
    /// Make fd 0 (the pty slave, already dup'd there by `Command`) the controlling terminal.
    pub(crate) controlling_tty: bool,
    /// `None` when the daemon already runs as the target user.
    pub(crate) credentials: Option<Credentials>,
    /// Room for `getgroups` to read the groups back: one more than expected, so an extra
    /// group shows.
    pub(crate) group_buffer: Vec<libc::gid_t>,
    /// Limits to lower (see `limits`).
    pub(crate) limits: Vec<LimitReset>,
    pub(crate) home: CString,
    /// Write end of the step-report pipe (close-on-exec).
    pub(crate) report: OwnedFd,
    /// Descriptors below this are checked one by one where close_range(2) is missing.
    pub(crate) fd_limit: libc::c_int,
}

/// A child setup step, as reported through the pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    NewSession = 1,
    ControllingTty = 2,
    Groups = 3,
    Gid = 4,
    Uid = 5,
    /// The old ids could still be regained (or the new ones did not stick).
    Regain = 6,
    Chdir = 7,
    /// Not a failure: the child could not join its cgroup and went on without it.
    CgroupNotJoined = 8,
    /// The supplementary groups read back are not exactly the ones set.
    GroupsDiffer = 9,
    AmbientCapabilities = 10,
    Limits = 11,
}

impl Step {
    const ALL: [Step; 11] = [
        Step::NewSession,
        Step::ControllingTty,
        Step::Groups,
        Step::Gid,
        Step::Uid,
        Step::Regain,
        Step::Chdir,
        Step::CgroupNotJoined,
        Step::GroupsDiffer,
        Step::AmbientCapabilities,
        Step::Limits,
    ];

    pub(crate) fn from_byte(byte: u8) -> Option<Step> {
        Step::ALL.into_iter().find(|step| *step as u8 == byte)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Step::NewSession => "setsid",
            Step::ControllingTty => "TIOCSCTTY",
            Step::Groups => "setgroups",
            Step::Gid => "setresgid",
            Step::Uid => "setresuid",
            Step::Regain => "verifying the old ids cannot be regained",
            Step::Chdir => "chdir",
            Step::CgroupNotJoined => "joining the session cgroup",
            Step::GroupsDiffer => "verifying the supplementary groups",
            Step::AmbientCapabilities => "clearing ambient capabilities",
            Step::Limits => "resetting resource limits",
        }
    }
}

/// Umask for sessions, so a daemon started with a stricter one does not impose it on users.
const SESSION_UMASK: libc::mode_t = 0o022;

/// Registers `setup` to run in the child between fork and exec.
pub(crate) fn install(command: &mut Command, mut setup: ChildSetup) {
    // SAFETY: the closure runs between fork and exec. `ChildSetup::run` only uses data
    // prepared before fork (writing only into its preallocated group buffer) and makes
    // async-signal-safe system calls (write, signal, umask, setsid, ioctl, setgroups,
    // getgroups, setres[ug]id, setuid, setgid, getres[ug]id, prctl, setrlimit, chdir); it
    // does not allocate (io::Error::from_raw_os_error / last_os_error store an integer, and
    // sort_unstable sorts in place), lock or touch state shared with other threads.
    unsafe {
        command.pre_exec(move || setup.run());
    }
}

impl ChildSetup {
    fn run(&mut self) -> io::Result<()> {
        // First, so that everything the session does happens inside its cgroup.
        self.join_cgroup();
        self.close_inherited_on_exec();
        reset_signal_dispositions();
        // SAFETY: umask only sets the process's file mode mask.
        unsafe { libc::umask(SESSION_UMASK) };
        // SAFETY: setsid has no memory-safety preconditions.
        if unsafe { libc::setsid() } == -1 {
            return self.fail(Step::NewSession, io::Error::last_os_error());
        }
        if self.controlling_tty {
            // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal a terminal that is
            // another session's); fd 0 is the pty slave.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 {
                return self.fail(Step::ControllingTty, io::Error::last_os_error());
            }
        }
        if let Some(credentials) = &self.credentials {
            let applied = credentials.apply(&mut self.group_buffer);
            applied.or_else(|(step, error)| self.fail(step, error))?;
        }
        clear_ambient_capabilities().or_else(|error| self.fail(Step::AmbientCapabilities, error))?;
        for reset in &self.limits {
            setrlimit(reset.resource, reset.soft, reset.hard).or_else(|errno| self.fail(Step::Limits, errno.into()))?;
        }
        // SAFETY: `home` is a valid NUL-terminated string owned by `self`.
        if unsafe { libc::chdir(self.home.as_ptr()) } == -1 {
            // SAFETY: a string literal is a valid NUL-terminated string.
            if unsafe { libc::chdir(c"/".as_ptr()) } == -1 {
                return self.fail(Step::Chdir, io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Moves this process into the session cgroup. A failure is reported (the parent then
    /// contains the session by process group) but does not stop the session: the parent
    /// already checked it could create and open the cgroup, so this is rare.
    fn join_cgroup(&self) {
        if let Some(procs) = &self.cgroup_procs {
            if nix::unistd::write(procs.as_fd(), b"0").is_err() {
                self.report(Step::CgroupNotJoined);
            }
        }
    }

    /// Marks every descriptor above stderr close-on-exec. Not closed outright: std's exec
    /// error pipe and our report pipe must stay open until exec (they are close-on-exec
    /// already). close_range(CLOSE_RANGE_CLOEXEC) needs Linux 5.11; older kernels get a loop.
    fn close_inherited_on_exec(&self) {
        let first: libc::c_uint = 3;
        // SAFETY: close_range takes three integers and only changes descriptor flags.
        let marked =
            unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) } == 0;
        if !marked {
            for fd in 3..self.fd_limit {
                // SAFETY: F_SETFD takes an integer; on a descriptor that is not open it fails
                // with EBADF, which is fine.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }

    /// Reports `step` to the parent and returns `error` (which makes the child `_exit`).
    fn fail(&self, step: Step, error: io::Error) -> io::Result<()> {
        self.report(step);
        Err(error)
    }

    /// Writes `step` to the report pipe. A failed write only loses the step name.
    fn report(&self, step: Step) {
        let _ = nix::unistd::write(self.report.as_fd(), &[step as u8]);
    }
}

impl Credentials {
    /// initgroups (precomputed list), setresgid, setresuid, then prove the switch is one-way
    /// and the groups are exactly the account's. `buffer` has room for one more group.
    fn apply(&self, buffer: &mut [libc::gid_t]) -> Result<(), (Step, io::Error)> {
        // SAFETY: the pointer and length describe `self.groups`, which outlives the call.
        if unsafe { libc::setgroups(self.groups.len(), self.groups.as_ptr()) } == -1 {
            return Err((Step::Groups, io::Error::last_os_error()));
        }
        // SAFETY: setresgid has no memory-safety preconditions.
        if unsafe { libc::setresgid(self.gid, self.gid, self.gid) } == -1 {
            return Err((Step::Gid, io::Error::last_os_error()));
        }
        // SAFETY: setresuid has no memory-safety preconditions.
        if unsafe { libc::setresuid(self.uid, self.uid, self.uid) } == -1 {
            return Err((Step::Uid, io::Error::last_os_error()));
        }
        if self.regainable() {
            return Err((Step::Regain, io::Error::from_raw_os_error(libc::EPERM)));
        }
        if !self.groups_are_exact(buffer) {
            return Err((Step::GroupsDiffer, io::Error::from_raw_os_error(libc::EPERM)));
        }
        Ok(())
    }

    /// True if getgroups returns exactly `self.groups` (both sorted; duplicates count, as
    /// the kernel keeps them) and, after leaving another uid, setgroups now fails: the old
    /// groups cannot be taken back.
    fn groups_are_exact(&self, buffer: &mut [libc::gid_t]) -> bool {
        let room = libc::c_int::try_from(buffer.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: getgroups writes at most `room` entries, and `buffer` has that many.
        let count = unsafe { libc::getgroups(room, buffer.as_mut_ptr()) };
        let Some(seen) = usize::try_from(count).ok().and_then(|count| buffer.get_mut(..count)) else {
            return false;
        };
        seen.sort_unstable();
        if *seen != *self.groups {
            return false;
        }
        // SAFETY: a zero-length list with a null pointer is valid; the call must fail here.
        self.uid == self.previous_uid || unsafe { libc::setgroups(0, std::ptr::null()) } == -1
    }

    /// True if the switch did not stick: the real, effective and saved ids are not all the
    /// target's, or (dropping from another user) the old uid or gid can be taken back.
    fn regainable(&self) -> bool {
        let (mut ruid, mut euid, mut suid) = (0, 0, 0);
        let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
        // SAFETY: the pointers are to live local variables.
        let uids_read = unsafe { libc::getresuid(&mut ruid, &mut euid, &mut suid) } == 0;
        // SAFETY: the pointers are to live local variables.
        let gids_read = unsafe { libc::getresgid(&mut rgid, &mut egid, &mut sgid) } == 0;
        if !uids_read || !gids_read || [ruid, euid, suid] != [self.uid; 3] || [rgid, egid, sgid] != [self.gid; 3] {
            return true;
        }
        if self.uid == self.previous_uid {
            return false;
        }
        // SAFETY: setuid has no memory-safety preconditions; it must fail here.
        if unsafe { libc::setuid(self.previous_uid) } != -1 {
            return true;
        }
        // SAFETY: setgid has no memory-safety preconditions; it must fail here.
        self.gid != self.previous_gid && unsafe { libc::setgid(self.previous_gid) } != -1
    }
}

/// Empties the ambient capability set, which survives exec and (for a daemon not running
/// as root, or a session as root) would hand the daemon's capabilities to the user's
/// program. EINVAL: a kernel before 4.3 has no ambient set, so there is nothing to clear.
fn clear_ambient_capabilities() -> io::Result<()> {
    match rustix::thread::clear_ambient_capability_set() {
        Err(rustix::io::Errno::INVAL) => Ok(()),
        other => other.map_err(io::Error::from),
    }
}

/// Resets every catchable signal to its default action. Handlers are reset by exec anyway,
/// but ignored signals (a daemon ignoring SIGHUP, say) would otherwise stay ignored in the
/// user's shell. std resets the signal mask and SIGPIPE itself.
fn reset_signal_dispositions() {
    for signal in 1..32 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: SIG_DFL is always a valid disposition; errors are irrelevant here.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
}

/// TIOCSWINSZ: sets a terminal's window size (the kernel sends SIGWINCH to its foreground
/// process group).
pub(crate) fn set_window_size(fd: BorrowedFd<'_>, size: &Winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, which is valid for
    // the duration of the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size as *const Winsize) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// TIOCGWINSZ: reads a terminal's window size.
#[cfg(test)]
pub(crate) fn window_size(fd: BorrowedFd<'_>) -> io::Result<Winsize> {
    let mut size = Winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to a
    // live local.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size as *mut Winsize) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credentials that keep this process's ids, expecting `groups`.
    fn expecting(mut groups: Vec<libc::gid_t>) -> Credentials {
        groups.sort_unstable();
        let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        Credentials { uid, gid, groups, previous_uid: uid, previous_gid: gid }
    }

    #[test]
    fn supplementary_groups_must_be_exactly_the_expected_ones() {
        let Ok(groups) = nix::unistd::getgroups() else {
            panic!("getgroups");
        };
        let ours: Vec<libc::gid_t> = groups.into_iter().map(nix::unistd::Gid::as_raw).collect();
        let check = |expected: Vec<libc::gid_t>| {
            let mut buffer = vec![0; expected.len() + 1];
            expecting(expected).groups_are_exact(&mut buffer)
        };
        assert!(check(ours.clone()), "{ours:?}");
        let mut extra = ours.clone();
        extra.push(4_000_000_000);
        assert!(!check(extra), "a group we do not have");
        if let Some((_, fewer)) = ours.split_first() {
            assert!(!check(fewer.to_vec()), "a group we have but should not");
        }
        let mut doubled = ours.clone();
        if let Some(&first) = ours.first() {
            doubled.push(first);
            assert!(!check(doubled), "a duplicate the kernel does not hold");
        }
    }
}
