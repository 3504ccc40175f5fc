//! Key exchange methods (RFC 4253 section 7, RFC 8731, RFC 9941,
//! draft-ietf-sshm-mlkem-hybrid-kex) behind one interface: the client starts with
//! [`ClientKex::start`] and sends [`ClientKex::public`] (Q_C) in KEX_ECDH_INIT; the server
//! answers with [`server_respond`] (Q_S in KEX_ECDH_REPLY); both get a [`SharedSecret`]
//! that carries its method's hash and K encoding into [`exchange_hash`] and [`derive`].
//!
//! All methods use messages 30/31 with Q_C and Q_S as `string`s; they differ in the
//! lengths of Q_C/Q_S (checked exactly), how K is made, its encoding (`mpint` for
//! curve25519, `string` for the hybrids) and the hash (SHA-256, or SHA-512 for sntrup761).

pub mod curve25519;
pub mod hash;
pub mod mlkem;
pub mod sntrup;

use thiserror::Error;
use zeroize::Zeroizing;

pub use self::curve25519::Curve25519;
pub use self::hash::{derive, exchange_hash, mpint, HashInputs, KEncoding, KexHash, SharedSecret};
use self::mlkem::MlKemClient;
use self::sntrup::SntrupClient;
use crate::rng::Rng;

pub const KEX_MLKEM768X25519: &str = "mlkem768x25519-sha256";
pub const KEX_SNTRUP761X25519: &str = "sntrup761x25519-sha512";
pub const KEX_SNTRUP761X25519_OPENSSH: &str = "sntrup761x25519-sha512@openssh.com";
pub const KEX_CURVE25519: &str = "curve25519-sha256";
pub const KEX_CURVE25519_LIBSSH: &str = "curve25519-sha256@libssh.org";

/// Our key exchange names, preferred first: post-quantum hybrids before curve25519 alone
/// (a recorded session stays secret against a later quantum computer).
pub const KEX_METHODS: [&str; 5] =
    [KEX_MLKEM768X25519, KEX_SNTRUP761X25519, KEX_SNTRUP761X25519_OPENSSH, KEX_CURVE25519, KEX_CURVE25519_LIBSSH];

/// The key exchange cannot complete.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum KexError {
    #[error("peer's {what} is {got} bytes, not {expected}")]
    BadLength { what: &'static str, expected: usize, got: usize },
    #[error("peer's ML-KEM-768 encapsulation key is invalid (FIPS 203 modulus check)")]
    InvalidMlKemKey,
    #[error("shared secret is all zeros (low-order point)")]
    ZeroSecret,
    #[error("key exchange method not supported")]
    Unsupported,
}

/// A key exchange method (each name maps to one; the aliases share theirs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KexMethod {
    MlKem768X25519Sha256,
    Sntrup761X25519Sha512,
    Curve25519Sha256,
}

impl KexMethod {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            KEX_MLKEM768X25519 => Some(Self::MlKem768X25519Sha256),
            KEX_SNTRUP761X25519 | KEX_SNTRUP761X25519_OPENSSH => Some(Self::Sntrup761X25519Sha512),
            KEX_CURVE25519 | KEX_CURVE25519_LIBSSH => Some(Self::Curve25519Sha256),
            _ => None,
        }
    }

    /// The hash of H and of key derivation.
    pub const fn hash(self) -> KexHash {
        match self {
            Self::Sntrup761X25519Sha512 => KexHash::Sha512,
            Self::MlKem768X25519Sha256 | Self::Curve25519Sha256 => KexHash::Sha256,
        }
    }

    /// How K is encoded where it is hashed.
    pub const fn k_encoding(self) -> KEncoding {
        match self {
            Self::Curve25519Sha256 => KEncoding::Mpint,
            Self::MlKem768X25519Sha256 | Self::Sntrup761X25519Sha512 => KEncoding::String,
        }
    }

    /// Bytes of Q_C.
    pub const fn client_public_len(self) -> usize {
        match self {
            Self::MlKem768X25519Sha256 => mlkem::CLIENT_LEN,
            Self::Sntrup761X25519Sha512 => sntrup::CLIENT_LEN,
            Self::Curve25519Sha256 => curve25519::PUBLIC_LEN,
        }
    }

    /// Bytes of Q_S.
    pub const fn server_public_len(self) -> usize {
        match self {
            Self::MlKem768X25519Sha256 => mlkem::SERVER_LEN,
            Self::Sntrup761X25519Sha512 => sntrup::SERVER_LEN,
            Self::Curve25519Sha256 => curve25519::PUBLIC_LEN,
        }
    }
}

/// The client's ephemeral state from KEX_ECDH_INIT until the reply (secrets wipe
/// themselves on drop).
#[derive(Debug)]
pub enum ClientKex {
    MlKem(Box<MlKemClient>),
    Sntrup(Box<SntrupClient>),
    Curve25519(Curve25519),
}

impl ClientKex {
    pub fn start(method: KexMethod, rng: &mut Rng) -> Self {
        match method {
            KexMethod::MlKem768X25519Sha256 => Self::MlKem(Box::new(MlKemClient::generate(rng))),
            KexMethod::Sntrup761X25519Sha512 => Self::Sntrup(Box::new(SntrupClient::generate(rng))),
            KexMethod::Curve25519Sha256 => Self::Curve25519(Curve25519::generate(rng)),
        }
    }

    pub fn method(&self) -> KexMethod {
        match self {
            Self::MlKem(_) => KexMethod::MlKem768X25519Sha256,
            Self::Sntrup(_) => KexMethod::Sntrup761X25519Sha512,
            Self::Curve25519(_) => KexMethod::Curve25519Sha256,
        }
    }

    /// Q_C.
    pub fn public(&self) -> &[u8] {
        match self {
            Self::MlKem(c) => c.public(),
            Self::Sntrup(c) => c.public(),
            Self::Curve25519(c) => &c.public,
        }
    }

    /// K from the server's Q_S.
    pub fn finish(&self, server_public: &[u8]) -> Result<SharedSecret, KexError> {
        match self {
            Self::MlKem(c) => c.shared(server_public),
            Self::Sntrup(c) => c.shared(server_public),
            Self::Curve25519(c) => Ok(curve25519_secret(&*c.shared(server_public)?)),
        }
    }
}

fn curve25519_secret(raw: &[u8; 32]) -> SharedSecret {
    let method = KexMethod::Curve25519Sha256;
    SharedSecret::new(method.hash(), method.k_encoding(), Zeroizing::new(raw.to_vec()))
}

/// The server's side of `method` for the client's Q_C: Q_S and K.
pub fn server_respond(
    method: KexMethod,
    client_public: &[u8],
    rng: &mut Rng,
) -> Result<(Vec<u8>, SharedSecret), KexError> {
    match method {
        KexMethod::MlKem768X25519Sha256 => mlkem::respond(client_public, rng),
        KexMethod::Sntrup761X25519Sha512 => sntrup::respond(client_public, rng),
        KexMethod::Curve25519Sha256 => {
            let ours = Curve25519::generate(rng);
            let k = curve25519_secret(&*ours.shared(client_public)?);
            Ok((ours.public.to_vec(), k))
        }
    }
}

#[cfg(test)]
mod tests;
