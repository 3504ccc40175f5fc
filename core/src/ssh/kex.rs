//! `curve25519-sha256` key exchange (RFC 8731) pieces: the ephemeral key pair, the shared
//! secret (all-zero results refused), the exchange hash H (RFC 4253 section 8) and key
//! derivation (RFC 4253 section 7.2).
//!
//! The ephemeral secret, the shared secret K (raw and as an `mpint`) and every derived key
//! are wiped on drop. (sha2 0.10 does not wipe its own block buffer.)

use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::wire::{peer_text, Writer};
use crate::ct;
use crate::rng::Rng;

/// The key exchange cannot complete.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum KexError {
    #[error("peer's public value is not 32 bytes")]
    BadPublic,
    #[error("shared secret is all zeros (low-order point)")]
    ZeroSecret,
}

/// Our ephemeral X25519 key pair for one exchange (the secret wipes itself on drop).
#[derive(ZeroizeOnDrop)]
pub struct Curve25519 {
    secret: x25519_dalek::StaticSecret,
    #[zeroize(skip)]
    pub public: [u8; 32],
}

impl std::fmt::Debug for Curve25519 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Curve25519(..)")
    }
}

impl Curve25519 {
    pub fn generate(rng: &mut Rng) -> Self {
        let secret = x25519_dalek::StaticSecret::from(rng.gen_bytes::<32>());
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The shared secret K with the peer's public value `Q`.
    pub fn shared(&self, peer_public: &[u8]) -> Result<Zeroizing<[u8; 32]>, KexError> {
        let q: [u8; 32] = peer_public.try_into().map_err(|_| KexError::BadPublic)?;
        let k = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(q));
        if ct::is_zero(k.as_bytes()) {
            return Err(KexError::ZeroSecret);
        }
        Ok(Zeroizing::new(*k.as_bytes()))
    }
}

/// `bytes` (unsigned, big-endian) as an SSH `mpint` (RFC 4251 section 5): leading zeros
/// dropped, a 0x00 prepended when the top bit is set, length-prefixed. Wiped on drop: the
/// only `mpint` here is the shared secret.
pub fn mpint(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let digits = &bytes[first..];
    let pad = digits.first().is_some_and(|&b| b & 0x80 != 0);
    let len = digits.len() + usize::from(pad);
    // Sized up front: growing would leave copies behind in freed memory.
    let mut out = Zeroizing::new(Vec::with_capacity(4 + len));
    out.extend_from_slice(&(len as u32).to_be_bytes());
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// What the exchange hash covers. (`Debug` leaves out the shared secret.)
#[derive(Clone, Copy)]
pub struct HashInputs<'a> {
    pub client_id: &'a [u8],
    pub server_id: &'a [u8],
    pub client_kexinit: &'a [u8],
    pub server_kexinit: &'a [u8],
    pub host_key: &'a [u8],
    pub client_public: &'a [u8],
    pub server_public: &'a [u8],
    /// The shared secret, raw (encoded as mpint here).
    pub shared: &'a [u8],
}

impl std::fmt::Debug for HashInputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashInputs")
            .field("client_id", &peer_text(self.client_id, 255, false))
            .field("server_id", &peer_text(self.server_id, 255, false))
            .finish_non_exhaustive()
    }
}

/// H = SHA-256(V_C || V_S || I_C || I_S || K_S || Q_C || Q_S || K), each a `string` except
/// K, an `mpint` (hashed from its own wiped buffer, not copied after the public parts).
pub fn exchange_hash(i: &HashInputs<'_>) -> [u8; 32] {
    let mut w = Writer::new();
    for s in
        [i.client_id, i.server_id, i.client_kexinit, i.server_kexinit, i.host_key, i.client_public, i.server_public]
    {
        w.string(s);
    }
    Sha256::new().chain_update(w.finish()).chain_update(&*mpint(i.shared)).finalize().into()
}

/// Key material `letter` ('A'..='F') of `len` bytes: K1 = HASH(K || H || letter ||
/// session_id), K(n+1) = HASH(K || H || K1 || ... || Kn). Each block is hashed straight
/// into the wiped output (no digest copies left on the stack).
pub fn derive(shared: &[u8], h: &[u8; 32], letter: u8, session_id: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    const BLOCK: usize = 32;
    let k = mpint(shared);
    let blocks = len.div_ceil(BLOCK).max(1);
    let mut out = Zeroizing::new(vec![0u8; blocks * BLOCK]);
    let (first, _) = out.split_at_mut(BLOCK);
    Sha256::new()
        .chain_update(&*k)
        .chain_update(h)
        .chain_update([letter])
        .chain_update(session_id)
        .finalize_into(GenericArray::from_mut_slice(first));
    for n in 1..blocks {
        let (done, rest) = out.split_at_mut(n * BLOCK);
        Sha256::new()
            .chain_update(&*k)
            .chain_update(h)
            .chain_update(&*done)
            .finalize_into(GenericArray::from_mut_slice(&mut rest[..BLOCK]));
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpint_matches_rfc_4251_examples() {
        assert_eq!(*mpint(&[]), vec![0, 0, 0, 0]);
        assert_eq!(*mpint(&[0, 0]), vec![0, 0, 0, 0]);
        assert_eq!(
            *mpint(&[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]),
            vec![0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]
        );
        assert_eq!(*mpint(&[0x80]), vec![0, 0, 0, 2, 0, 0x80]);
        assert_eq!(*mpint(&[0, 0x7f]), vec![0, 0, 0, 1, 0x7f]);
    }

    #[test]
    fn the_ephemeral_secret_is_never_printed() {
        let mut rng = crate::rng::test_rng(2);
        let ours = Curve25519::generate(&mut rng);
        crate::key_hygiene::assert_redacted("Curve25519", &ours, &ours.secret.to_bytes());
    }

    #[test]
    fn both_sides_agree_and_low_order_points_are_refused() {
        let mut rng = crate::rng::test_rng(1);
        let (a, b) = (Curve25519::generate(&mut rng), Curve25519::generate(&mut rng));
        assert_eq!(a.shared(&b.public), b.shared(&a.public));
        assert_eq!(a.shared(&[0u8; 32]), Err(KexError::ZeroSecret));
        assert_eq!(a.shared(&[1u8; 31]), Err(KexError::BadPublic));
    }

    #[test]
    fn derivation_extends_by_rehashing_and_depends_on_every_input() {
        let h = [7u8; 32];
        let long = derive(&[1, 2, 3], &h, b'C', &h, 64);
        let short = derive(&[1, 2, 3], &h, b'C', &h, 32);
        assert_eq!(&long[..32], &short[..]);
        let k = mpint(&[1, 2, 3]);
        let second: [u8; 32] = Sha256::new().chain_update(&*k).chain_update(h).chain_update(&*short).finalize().into();
        assert_eq!(&long[32..], &second[..]);
        assert_ne!(derive(&[1, 2, 3], &h, b'D', &h, 32), short);
        assert_ne!(derive(&[1, 2, 4], &h, b'C', &h, 32), short);
    }
}
