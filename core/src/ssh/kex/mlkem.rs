//! `mlkem768x25519-sha256` (draft-ietf-sshm-mlkem-hybrid-kex; OpenSSH
//! kexmlkem768x25519.c): ML-KEM-768 (FIPS 203) and X25519, the post-quantum part first.
//!
//! Q_C = ek (1184 bytes) || X25519 public (32), Q_S = ciphertext (1088) || X25519 public
//! (32), K = SHA-256(K_pq || K_x25519), hashed into H as a `string`. The peer's
//! encapsulation key is decoded with ml-kem's checked decoding (the FIPS 203 section 7.2
//! modulus check: every coefficient below q), so a malformed key ends the exchange.
//!
//! Randomness comes from the core's [`Rng`] through ml-kem's deterministic functions (key
//! generation from a 64-byte seed, encapsulation from 32 bytes), so a simulated run stays
//! a function of its seed. Seeds, the decapsulation key and both halves of the secret are
//! wiped.

use ml_kem::{Decapsulate, DecapsulationKey768, EncapsulationKey768, KeyExport, Seed, B32};
use zeroize::{Zeroize, Zeroizing};

use super::curve25519::{self, Curve25519};
use super::{KEncoding, KexError, KexHash, SharedSecret};
use crate::rng::Rng;

/// Bytes of an ML-KEM-768 encapsulation key.
pub const EK_LEN: usize = 1184;
/// Bytes of an ML-KEM-768 ciphertext.
pub const CT_LEN: usize = 1088;
/// Bytes of the client's Q_C.
pub const CLIENT_LEN: usize = EK_LEN + curve25519::PUBLIC_LEN;
/// Bytes of the server's Q_S.
pub const SERVER_LEN: usize = CT_LEN + curve25519::PUBLIC_LEN;

const HASH: KexHash = KexHash::Sha256;

/// K = SHA-256(K_pq || K_x25519).
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

/// The client's half: an ML-KEM-768 key pair and an X25519 key pair.
pub struct MlKemClient {
    dk: DecapsulationKey768,
    x25519: Curve25519,
    public: Vec<u8>,
}

impl std::fmt::Debug for MlKemClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MlKemClient(..)")
    }
}

impl MlKemClient {
    pub fn generate(rng: &mut Rng) -> Self {
        let mut seed = Seed::default();
        rng.fill_bytes(&mut seed);
        let dk = DecapsulationKey768::from_seed(seed);
        seed.as_mut_slice().zeroize();
        let x25519 = Curve25519::generate(rng);
        let mut public = Vec::with_capacity(CLIENT_LEN);
        public.extend_from_slice(&dk.encapsulation_key().to_bytes());
        public.extend_from_slice(&x25519.public);
        Self { dk, x25519, public }
    }

    /// Q_C.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// K from the server's Q_S. (ML-KEM decapsulation never fails: a bad ciphertext gives
    /// an unrelated secret and the host key signature over H then fails.)
    pub fn shared(&self, server_public: &[u8]) -> Result<SharedSecret, KexError> {
        check_len("mlkem768x25519 reply", server_public, SERVER_LEN)?;
        let (ct, x) = server_public.split_at(CT_LEN);
        let classical = self.x25519.shared(x)?;
        let mut pq = self.dk.decapsulate_slice(ct).map_err(|_| KexError::BadLength {
            what: "ML-KEM-768 ciphertext",
            expected: CT_LEN,
            got: ct.len(),
        })?;
        let k = combine(&pq, &*classical);
        pq.as_mut_slice().zeroize();
        Ok(k)
    }
}

/// The server's half: encapsulate to the client's key, answer with our X25519 share.
/// Returns Q_S and K.
pub fn respond(client_public: &[u8], rng: &mut Rng) -> Result<(Vec<u8>, SharedSecret), KexError> {
    check_len("mlkem768x25519 init", client_public, CLIENT_LEN)?;
    let (ek, x) = client_public.split_at(EK_LEN);
    let ek = ml_kem::Key::<EncapsulationKey768>::try_from(ek).map_err(|_| KexError::BadLength {
        what: "ML-KEM-768 key",
        expected: EK_LEN,
        got: ek.len(),
    })?;
    let ek = EncapsulationKey768::new(&ek).map_err(|_| KexError::InvalidMlKemKey)?;
    let x25519 = Curve25519::generate(rng);
    let classical = x25519.shared(x)?;
    let mut m = Zeroizing::new(B32::default());
    rng.fill_bytes(&mut m);
    let (ct, mut pq) = ek.encapsulate_deterministic(&m);
    let k = combine(&pq, &*classical);
    pq.as_mut_slice().zeroize();
    let mut public = Vec::with_capacity(SERVER_LEN);
    public.extend_from_slice(&ct);
    public.extend_from_slice(&x25519.public);
    Ok((public, k))
}
