//! RFC 4254 section 8 terminal modes onto termios.
//!
//! The client sends its own terminal's settings so the remote line discipline behaves like
//! the local one (same interrupt key, same erase key, echo, ...). Opcodes Linux termios has
//! no field for (VDSUSP, VSTATUS, VFLUSH), unknown opcodes and out-of-range values are
//! ignored, as sshd does: a mode is a preference, never a reason to refuse a session.

use nix::sys::termios::{
    cfsetispeed, cfsetospeed, BaudRate, ControlFlags, InputFlags, LocalFlags, OutputFlags,
    SpecialCharacterIndices as Cc, Termios,
};

/// Where an opcode lands in termios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Char(Cc),
    Input(InputFlags),
    Local(LocalFlags),
    Output(OutputFlags),
    Control(ControlFlags),
    /// CS7 / CS8: a value of the CSIZE field rather than a flag.
    CharSize(ControlFlags),
    InputSpeed,
    OutputSpeed,
}

/// The termios target of an RFC 4254 (and RFC 8160: IUTF8) opcode.
fn target(opcode: u8) -> Option<Target> {
    use Target::*;
    Some(match opcode {
        1 => Char(Cc::VINTR),
        2 => Char(Cc::VQUIT),
        3 => Char(Cc::VERASE),
        4 => Char(Cc::VKILL),
        5 => Char(Cc::VEOF),
        6 => Char(Cc::VEOL),
        7 => Char(Cc::VEOL2),
        8 => Char(Cc::VSTART),
        9 => Char(Cc::VSTOP),
        10 => Char(Cc::VSUSP),
        12 => Char(Cc::VREPRINT),
        13 => Char(Cc::VWERASE),
        14 => Char(Cc::VLNEXT),
        16 => Char(Cc::VSWTC),
        18 => Char(Cc::VDISCARD),
        30 => Input(InputFlags::IGNPAR),
        31 => Input(InputFlags::PARMRK),
        32 => Input(InputFlags::INPCK),
        33 => Input(InputFlags::ISTRIP),
        34 => Input(InputFlags::INLCR),
        35 => Input(InputFlags::IGNCR),
        36 => Input(InputFlags::ICRNL),
        37 => Input(InputFlags::IUCLC),
        38 => Input(InputFlags::IXON),
        39 => Input(InputFlags::IXANY),
        40 => Input(InputFlags::IXOFF),
        41 => Input(InputFlags::IMAXBEL),
        42 => Input(InputFlags::IUTF8),
        50 => Local(LocalFlags::ISIG),
        51 => Local(LocalFlags::ICANON),
        52 => Local(LocalFlags::XCASE),
        53 => Local(LocalFlags::ECHO),
        54 => Local(LocalFlags::ECHOE),
        55 => Local(LocalFlags::ECHOK),
        56 => Local(LocalFlags::ECHONL),
        57 => Local(LocalFlags::NOFLSH),
        58 => Local(LocalFlags::TOSTOP),
        59 => Local(LocalFlags::IEXTEN),
        60 => Local(LocalFlags::ECHOCTL),
        61 => Local(LocalFlags::ECHOKE),
        62 => Local(LocalFlags::PENDIN),
        70 => Output(OutputFlags::OPOST),
        71 => Output(OutputFlags::OLCUC),
        72 => Output(OutputFlags::ONLCR),
        73 => Output(OutputFlags::OCRNL),
        74 => Output(OutputFlags::ONOCR),
        75 => Output(OutputFlags::ONLRET),
        90 => CharSize(ControlFlags::CS7),
        91 => CharSize(ControlFlags::CS8),
        92 => Control(ControlFlags::PARENB),
        93 => Control(ControlFlags::PARODD),
        128 => InputSpeed,
        129 => OutputSpeed,
        _ => return None,
    })
}

/// On the wire, 255 in a character slot means "disabled"; Linux spells that 0.
const WIRE_DISABLED: u32 = 255;
const POSIX_VDISABLE: u8 = 0;

/// Applies the modes termios knows to `termios`, in order, ignoring the rest.
pub(crate) fn apply(termios: &mut Termios, modes: &[(u8, u32)]) {
    for &(opcode, value) in modes {
        let Some(target) = target(opcode) else {
            continue;
        };
        let on = value != 0;
        match target {
            Target::Char(index) => {
                let byte = if value == WIRE_DISABLED { Some(POSIX_VDISABLE) } else { u8::try_from(value).ok() };
                if let Some(byte) = byte {
                    termios.control_chars[index as usize] = byte;
                }
            }
            Target::Input(flag) => termios.input_flags.set(flag, on),
            Target::Local(flag) => termios.local_flags.set(flag, on),
            Target::Output(flag) => termios.output_flags.set(flag, on),
            Target::Control(flag) => termios.control_flags.set(flag, on),
            Target::CharSize(size) => {
                if on {
                    termios.control_flags.remove(ControlFlags::CSIZE);
                    termios.control_flags.insert(size);
                }
            }
            Target::InputSpeed => {
                if let Some(rate) = baud_rate(value) {
                    // Only fails for rates the platform lacks; a speed is cosmetic on a pty.
                    let _ = cfsetispeed(termios, rate);
                }
            }
            Target::OutputSpeed => {
                if let Some(rate) = baud_rate(value) {
                    let _ = cfsetospeed(termios, rate);
                }
            }
        }
    }
}

/// The termios rate for a speed in bits per second, if it is a standard one.
fn baud_rate(bps: u32) -> Option<BaudRate> {
    use BaudRate::*;
    Some(match bps {
        0 => B0,
        50 => B50,
        75 => B75,
        110 => B110,
        134 => B134,
        150 => B150,
        200 => B200,
        300 => B300,
        600 => B600,
        1200 => B1200,
        1800 => B1800,
        2400 => B2400,
        4800 => B4800,
        9600 => B9600,
        19200 => B19200,
        38400 => B38400,
        57600 => B57600,
        115200 => B115200,
        230400 => B230400,
        460800 => B460800,
        921600 => B921600,
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use std::os::fd::AsFd;

    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    use nix::sys::stat::Mode;
    use nix::sys::termios::{cfgetispeed, cfgetospeed, tcgetattr};

    use super::*;

    /// Termios comes only from a real terminal: read a fresh pty's defaults.
    fn fresh_termios() -> Termios {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).expect("posix_openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let path = ptsname_r(&master).expect("ptsname_r");
        let slave = nix::fcntl::open(path.as_str(), OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
            .expect("open slave");
        tcgetattr(slave.as_fd()).expect("tcgetattr")
    }

    #[test]
    fn characters_flags_size_and_speed() {
        let mut t = fresh_termios();
        apply(
            &mut t,
            &[
                (1, 0x07),   // VINTR = ^G
                (3, 0x7f),   // VERASE = DEL
                (4, 255),    // VKILL disabled
                (5, 0x1234), // VEOF out of range: ignored
                (53, 0),     // -ECHO
                (51, 1),     // ICANON
                (36, 0),     // -ICRNL
                (42, 1),     // IUTF8
                (72, 0),     // -ONLCR
                (90, 1),     // CS7
                (92, 1),     // PARENB
                (128, 9600),
                (129, 9600),
                (11, 1),  // VDSUSP: Linux has none
                (200, 7), // unknown
            ],
        );
        assert_eq!(t.control_chars[Cc::VINTR as usize], 0x07);
        assert_eq!(t.control_chars[Cc::VERASE as usize], 0x7f);
        assert_eq!(t.control_chars[Cc::VKILL as usize], 0);
        assert_eq!(t.control_chars[Cc::VEOF as usize], 0x04, "default ^D kept");
        assert!(!t.local_flags.contains(LocalFlags::ECHO));
        assert!(t.local_flags.contains(LocalFlags::ICANON));
        assert!(!t.input_flags.contains(InputFlags::ICRNL));
        assert!(t.input_flags.contains(InputFlags::IUTF8));
        assert!(!t.output_flags.contains(OutputFlags::ONLCR));
        assert_eq!(t.control_flags & ControlFlags::CSIZE, ControlFlags::CS7);
        assert!(t.control_flags.contains(ControlFlags::PARENB));
        // glibc on Linux keeps one speed for both directions, so both are set alike.
        assert_eq!(cfgetispeed(&t), BaudRate::B9600);
        assert_eq!(cfgetospeed(&t), BaudRate::B9600);
    }

    #[test]
    fn odd_speeds_are_ignored() {
        let mut t = fresh_termios();
        let before = cfgetospeed(&t);
        apply(&mut t, &[(129, 12345), (129, u32::MAX)]);
        assert_eq!(cfgetospeed(&t), before);
    }
}
