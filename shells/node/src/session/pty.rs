//! The pseudo-terminal pair for a `pty-req` session.
//!
//! Both ends are opened close-on-exec, so a session never inherits another session's
//! terminal even when sessions are spawned concurrently. The slave is handed to the user
//! (owner the user, group `tty`, mode 0620 so `write`/`wall` work, as sshd does) and gets the
//! client's modes and window size before the child starts, so the shell's first read of its
//! terminal already sees them.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::stat::{fchmod, Mode};
use nix::sys::termios::{tcgetattr, tcsetattr, SetArg};
use nix::unistd::{fchown, Gid, Group, Uid};

use super::error::SessionError;
use super::{modes, sys, PtyRequest};

/// Slave permissions: owner read/write, group (tty) write.
const SLAVE_MODE: u32 = 0o620;

/// An open pty pair. The master is non-blocking; the slave is for the child only.
#[derive(Debug)]
pub(crate) struct Pty {
    pub(crate) master: OwnedFd,
    pub(crate) slave: OwnedFd,
    /// The slave's path, for SSH_TTY.
    pub(crate) path: String,
}

fn failed(op: &'static str) -> impl Fn(nix::errno::Errno) -> SessionError {
    move |errno| SessionError::Pty { op, source: io::Error::from(errno) }
}

/// Opens a pty pair for `request`, owned by `uid`.
pub(crate) fn open(request: &PtyRequest, uid: Uid, gid: Gid) -> Result<Pty, SessionError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(failed("posix_openpt"))?;
    grantpt(&master).map_err(failed("grantpt"))?;
    unlockpt(&master).map_err(failed("unlockpt"))?;
    let path = ptsname_r(&master).map_err(failed("ptsname"))?;
    let slave = nix::fcntl::open(path.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(failed("open slave"))?;

    let group = tty_group().unwrap_or(gid);
    fchown(&slave, Some(uid), Some(group)).map_err(failed("fchown"))?;
    fchmod(&slave, Mode::from_bits_truncate(SLAVE_MODE)).map_err(failed("fchmod"))?;

    let mut termios = tcgetattr(&slave).map_err(failed("tcgetattr"))?;
    modes::apply(&mut termios, &request.modes);
    tcsetattr(&slave, SetArg::TCSANOW, &termios).map_err(failed("tcsetattr"))?;

    let master = OwnedFd::from(master);
    let size = window_size(request.cols, request.rows, request.width_px, request.height_px);
    sys::set_window_size(master.as_fd(), &size).map_err(|source| SessionError::Pty { op: "TIOCSWINSZ", source })?;
    set_nonblocking(master.as_fd()).map_err(failed("O_NONBLOCK"))?;
    Ok(Pty { master, slave, path })
}

/// The `tty` group, if the system has one.
fn tty_group() -> Option<Gid> {
    Group::from_name("tty").ok().flatten().map(|group| group.gid)
}

/// A window size from SSH's 32-bit fields, clamped to what the kernel stores.
pub(crate) fn window_size(cols: u32, rows: u32, width_px: u32, height_px: u32) -> Winsize {
    let clamp = |value: u32| u16::try_from(value).unwrap_or(u16::MAX);
    Winsize { ws_row: clamp(rows), ws_col: clamp(cols), ws_xpixel: clamp(width_px), ws_ypixel: clamp(height_px) }
}

/// Sets O_NONBLOCK on a descriptor (its open file description, so dups share it).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn slave_is_owned_sized_and_cloexec() {
        let request =
            PtyRequest { term: "xterm".into(), cols: 132, rows: 43, width_px: 1, height_px: 70000, modes: vec![] };
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        let pty = open(&request, uid, gid).expect("open pty");
        assert!(pty.path.starts_with("/dev/pts/"), "{}", pty.path);
        let meta = std::fs::metadata(&pty.path).expect("stat slave");
        assert_eq!(meta.uid(), uid.as_raw());
        assert_eq!(meta.permissions().mode() & 0o777, SLAVE_MODE);
        let size = sys::window_size(pty.slave.as_fd()).expect("TIOCGWINSZ");
        assert_eq!((size.ws_col, size.ws_row, size.ws_xpixel, size.ws_ypixel), (132, 43, 1, u16::MAX));
        for fd in [pty.master.as_fd(), pty.slave.as_fd()] {
            let flags = fcntl(fd, FcntlArg::F_GETFD).expect("F_GETFD");
            assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
        }
        let flags = OFlag::from_bits_truncate(fcntl(pty.master.as_fd(), FcntlArg::F_GETFL).expect("F_GETFL"));
        assert!(flags.contains(OFlag::O_NONBLOCK));
    }
}
