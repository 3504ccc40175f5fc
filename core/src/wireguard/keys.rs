//! Static keys. The private key never leaves this type except into the handshake.
//!
//! Secret types here are wiped on drop ([`ZeroizeOnDrop`]), are `Clone` but not `Copy`
//! (so copies are explicit and each one is wiped too), and print as `..` in `Debug`.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A peer's static X25519 public key: its identity on the mesh.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// A static X25519 private key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// Wrap 32 bytes (clamping happens inside X25519). The caller's array is a copy: wipe
    /// it if it lives on.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for the handshake.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(base_point_mul(&self.0))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// A peer's preshared key, mixed into the handshake (WireGuard's post-quantum hedge).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    /// What the handshake mixes in when a peer has no preshared key.
    pub(crate) const NONE: [u8; 32] = [0; 32];

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

/// X25519 public key of a private scalar, through the precomputed base-point table (several
/// times faster than the generic ladder). The scalar's working copy is wiped with the
/// `StaticSecret` holding it.
pub(crate) fn base_point_mul(private: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*private)).to_bytes()
}
