//! Randomness from the operating system: seeds for the core's RNG, CSRF tokens, salts.

use thiserror::Error;

#[derive(Debug, Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// `N` bytes from the OS.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| RandomError(e.to_string()))?;
    Ok(out)
}

/// 32 random bytes as 64 lowercase hex characters.
pub fn token() -> Result<String, RandomError> {
    Ok(hex(&bytes::<32>()?))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
