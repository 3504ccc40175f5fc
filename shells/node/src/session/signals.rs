//! SSH signal names (RFC 4254 section 6.10) to and from Unix signals, and wait statuses to
//! [`ExitStatus`].

use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::Signal;

use super::ExitStatus;

/// The signals RFC 4254 names, by their SSH name (the Unix name without `SIG`).
const SSH_SIGNALS: [(&str, Signal); 13] = [
    ("ABRT", Signal::SIGABRT),
    ("ALRM", Signal::SIGALRM),
    ("FPE", Signal::SIGFPE),
    ("HUP", Signal::SIGHUP),
    ("ILL", Signal::SIGILL),
    ("INT", Signal::SIGINT),
    ("KILL", Signal::SIGKILL),
    ("PIPE", Signal::SIGPIPE),
    ("QUIT", Signal::SIGQUIT),
    ("SEGV", Signal::SIGSEGV),
    ("TERM", Signal::SIGTERM),
    ("USR1", Signal::SIGUSR1),
    ("USR2", Signal::SIGUSR2),
];

/// What OpenSSH reports for a signal RFC 4254 has no name for.
const UNNAMED_SIGNAL: &str = "SIG@openssh.com";

/// The signal an SSH `signal` request names, if RFC 4254 defines it.
pub(crate) fn from_ssh_name(name: &str) -> Option<Signal> {
    SSH_SIGNALS.iter().find(|(ssh, _)| *ssh == name).map(|(_, signal)| *signal)
}

/// The SSH name for a raw signal number.
pub(crate) fn ssh_name(signal: i32) -> &'static str {
    SSH_SIGNALS.iter().find(|(_, s)| *s as i32 == signal).map_or(UNNAMED_SIGNAL, |(name, _)| name)
}

/// Converts a wait status; `None` for a status that is neither an exit nor a kill (stopped
/// or continued), which `try_wait` does not report.
pub(crate) fn exit_status(status: std::process::ExitStatus) -> Option<ExitStatus> {
    if let Some(code) = status.code() {
        // Exit codes are 0..=255.
        return Some(ExitStatus::Code(u32::try_from(code).unwrap_or(255)));
    }
    let signal = status.signal()?;
    Some(ExitStatus::Signal { name: ssh_name(signal).to_string(), core_dumped: status.core_dumped() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rfc_name_round_trips() {
        for (name, signal) in SSH_SIGNALS {
            assert_eq!(from_ssh_name(name), Some(signal));
            assert_eq!(ssh_name(signal as i32), name);
        }
    }

    #[test]
    fn unknown_names_and_numbers() {
        assert_eq!(from_ssh_name("SIGTERM"), None);
        assert_eq!(from_ssh_name("term"), None);
        assert_eq!(from_ssh_name("STOP"), None);
        assert_eq!(ssh_name(Signal::SIGBUS as i32), UNNAMED_SIGNAL);
    }

    #[test]
    fn wait_statuses() {
        assert_eq!(exit_status(std::process::ExitStatus::from_raw(3 << 8)), Some(ExitStatus::Code(3)));
        assert_eq!(
            exit_status(std::process::ExitStatus::from_raw(15)),
            Some(ExitStatus::Signal { name: "TERM".into(), core_dumped: false })
        );
        assert_eq!(
            exit_status(std::process::ExitStatus::from_raw(11 | 0x80)),
            Some(ExitStatus::Signal { name: "SEGV".into(), core_dumped: true })
        );
    }
}
