//! Encoded terminal modes of a `pty-req` (RFC 4254 section 8): a sequence of (opcode u8,
//! argument u32) pairs ended by `TTY_OP_END` (0). Opcodes 160-255 are undefined and stop
//! parsing (the RFC's rule), so a client's future modes are skipped, not fatal.

use thiserror::Error;

use super::wire::{Reader, WireError};

/// `TTY_OP_END`.
pub const TTY_OP_END: u8 = 0;
/// First undefined opcode.
const FIRST_UNDEFINED: u8 = 160;
/// More pairs than there are defined opcodes is not a terminal.
pub const MAX_MODES: usize = 160;

/// Terminal modes that cannot be parsed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ModesError {
    #[error("terminal modes truncated")]
    Truncated,
    #[error("more than {MAX_MODES} terminal modes")]
    TooMany,
}

impl From<WireError> for ModesError {
    fn from(_: WireError) -> Self {
        ModesError::Truncated
    }
}

/// The (opcode, argument) pairs of an encoded-modes string, in order.
pub fn parse_modes(encoded: &[u8]) -> Result<Vec<(u8, u32)>, ModesError> {
    let mut r = Reader::new(encoded);
    let mut modes = Vec::new();
    while r.remaining() > 0 {
        let opcode = r.u8()?;
        if opcode == TTY_OP_END || opcode >= FIRST_UNDEFINED {
            break;
        }
        if modes.len() == MAX_MODES {
            return Err(ModesError::TooMany);
        }
        modes.push((opcode, r.u32()?));
    }
    Ok(modes)
}

/// Encode `modes` (for our client's `pty-req`).
pub fn encode_modes(modes: &[(u8, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(modes.len() * 5 + 1);
    for &(opcode, value) in modes {
        out.push(opcode);
        out.extend_from_slice(&value.to_be_bytes());
    }
    out.push(TTY_OP_END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_end_rules() {
        let modes = vec![(1, 3), (53, 1), (128, 38400)];
        assert_eq!(parse_modes(&encode_modes(&modes)), Ok(modes.clone()));
        assert_eq!(parse_modes(&[]), Ok(vec![]));
        // An undefined opcode stops parsing; what follows is not read.
        let mut with_future = encode_modes(&modes[..1]);
        with_future.pop();
        with_future.extend_from_slice(&[200, 0xff]);
        assert_eq!(parse_modes(&with_future), Ok(vec![(1, 3)]));
        assert_eq!(parse_modes(&[1, 0, 0]), Err(ModesError::Truncated));
        let many: Vec<(u8, u32)> = (0..200).map(|i| ((i % 159 + 1) as u8, i)).collect();
        assert_eq!(parse_modes(&encode_modes(&many)), Err(ModesError::TooMany));
    }
}
