//! `sntrup761x25519-sha512` (also `sntrup761x25519-sha512@openssh.com`; RFC 9941, OpenSSH
//! kexsntrup761x25519.c): Streamlined NTRU Prime 761 and X25519, the post-quantum part
//! first.
//!
//! Q_C = public key (1158 bytes) || X25519 public (32), Q_S = ciphertext (1039) || X25519
//! public (32), K = SHA-512(ss_sntrup || ss_x25519), hashed into H as a `string`; SHA-512
//! is then also H's hash (64 bytes) and the key derivation's.
//!
//! Randomness comes from the core's [`Rng`] through the crate's deterministic functions
//! (32-byte seeds for key generation and encapsulation), so a simulated run stays a
//! function of its seed. Seeds, the secret key and both halves of the secret are wiped
//! (the crate's key and secret types wipe themselves on drop).
//!
//! The `sntrup761` crate turns on sha2's `asm` feature on x86, x86_64 and aarch64, and
//! Cargo's feature unification turns it on for the whole workspace: SHA-2 everywhere
//! (host key signatures, HKDF-like derivations) then runs the assembly compression
//! function built by `sha2-asm` (a C compiler at build time). Accepted: it is the same
//! function, faster, and forking the crate to avoid it would cost more than it saves.

use sntrup761::{Ciphertext, DecapsulationKey, EncapsulationKey};
use zeroize::Zeroizing;

use super::curve25519::{self, Curve25519};
use super::{KEncoding, KexError, KexHash, SharedSecret};
use crate::rng::Rng;

/// Bytes of an sntrup761 public key.
pub const PK_LEN: usize = sntrup761::PUBLIC_KEY_SIZE;
/// Bytes of an sntrup761 ciphertext.
pub const CT_LEN: usize = sntrup761::CIPHERTEXT_SIZE;
/// Bytes of the client's Q_C.
pub const CLIENT_LEN: usize = PK_LEN + curve25519::PUBLIC_LEN;
/// Bytes of the server's Q_S.
pub const SERVER_LEN: usize = CT_LEN + curve25519::PUBLIC_LEN;

const HASH: KexHash = KexHash::Sha512;

/// K = SHA-512(ss_sntrup || ss_x25519).
fn combine(pq: &[u8], classical: &[u8]) -> SharedSecret {
    SharedSecret::new(HASH, KEncoding::String, HASH.hash(&[pq, classical]))
}

fn check_len(what: &'static str, bytes: &[u8], expected: usize) -> Result<(), KexError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(KexError::BadLength { what, expected, got: bytes.len() })
    }
}

/// The client's half: an sntrup761 key pair and an X25519 key pair.
pub struct SntrupClient {
    sk: DecapsulationKey,
    x25519: Curve25519,
    public: Vec<u8>,
}

impl std::fmt::Debug for SntrupClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SntrupClient(..)")
    }
}

impl SntrupClient {
    pub fn generate(rng: &mut Rng) -> Self {
        let seed = Zeroizing::new(rng.gen_bytes::<32>());
        let (pk, sk) = sntrup761::generate_key_from_seed(*seed);
        let x25519 = Curve25519::generate(rng);
        let mut public = Vec::with_capacity(CLIENT_LEN);
        public.extend_from_slice(pk.as_ref());
        public.extend_from_slice(&x25519.public);
        Self { sk, x25519, public }
    }

    /// Q_C.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// K from the server's Q_S. (Decapsulation never fails: a bad ciphertext gives an
    /// unrelated secret, and the host key signature over H then fails.)
    pub fn shared(&self, server_public: &[u8]) -> Result<SharedSecret, KexError> {
        check_len("sntrup761x25519 reply", server_public, SERVER_LEN)?;
        let (ct, x) = server_public.split_at(CT_LEN);
        let classical = self.x25519.shared(x)?;
        let ct = Ciphertext::try_from(ct).map_err(|_| KexError::BadLength {
            what: "sntrup761 ciphertext",
            expected: CT_LEN,
            got: ct.len(),
        })?;
        let pq = self.sk.decapsulate(&ct);
        Ok(combine(pq.as_ref(), &*classical))
    }
}

/// The server's half: encapsulate to the client's key, answer with our X25519 share.
/// Returns Q_S and K.
pub fn respond(client_public: &[u8], rng: &mut Rng) -> Result<(Vec<u8>, SharedSecret), KexError> {
    check_len("sntrup761x25519 init", client_public, CLIENT_LEN)?;
    let (pk, x) = client_public.split_at(PK_LEN);
    let pk = EncapsulationKey::try_from(pk).map_err(|_| KexError::BadLength {
        what: "sntrup761 public key",
        expected: PK_LEN,
        got: pk.len(),
    })?;
    let x25519 = Curve25519::generate(rng);
    let classical = x25519.shared(x)?;
    let seed = Zeroizing::new(rng.gen_bytes::<32>());
    let (ct, pq) = pk.encapsulate_deterministic(*seed);
    let k = combine(pq.as_ref(), &*classical);
    let mut public = Vec::with_capacity(SERVER_LEN);
    public.extend_from_slice(ct.as_ref());
    public.extend_from_slice(&x25519.public);
    Ok((public, k))
}
