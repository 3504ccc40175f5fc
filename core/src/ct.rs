//! Constant-time comparisons, the one place they are made (through `subtle`).
//!
//! A MAC, a tag or a cookie compared with `==` stops at the first differing byte, which
//! tells a network attacker how much of a forgery was right; an early exit on an X25519
//! result does the same for a secret. Lengths are public and may end the comparison early.

use subtle::ConstantTimeEq;

/// Whether `a` and `b` hold the same bytes, in time that depends only on their lengths.
pub(crate) fn eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Whether an X25519 result is all zeros (the peer sent a low-order point and so
/// contributed nothing), without branching on the secret's bytes.
pub(crate) fn is_zero(secret: &[u8; 32]) -> bool {
    secret.ct_eq(&[0u8; 32]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_and_zero() {
        assert!(eq(b"abc", b"abc"));
        assert!(!eq(b"abc", b"abd"));
        assert!(!eq(b"abc", b"ab"));
        assert!(eq(b"", b""));
        assert!(is_zero(&[0; 32]));
        let mut last = [0u8; 32];
        last[31] = 1;
        assert!(!is_zero(&last));
    }
}
