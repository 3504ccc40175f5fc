//! X25519 (RFC 7748) as SSH uses it: alone in `curve25519-sha256` (RFC 8731), and as the
//! classical half of both hybrid methods. The ephemeral secret and the shared secret are
//! wiped on drop; an all-zero result (a low-order peer point) is refused everywhere.

use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::KexError;
use crate::ct;
use crate::rng::Rng;

/// Bytes of an X25519 public value.
pub const PUBLIC_LEN: usize = 32;

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

    /// The raw X25519 result with the peer's public value.
    pub fn shared(&self, peer_public: &[u8]) -> Result<Zeroizing<[u8; 32]>, KexError> {
        let q: [u8; 32] = peer_public.try_into().map_err(|_| KexError::BadLength {
            what: "X25519 public value",
            expected: PUBLIC_LEN,
            got: peer_public.len(),
        })?;
        let k = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(q));
        if ct::is_zero(k.as_bytes()) {
            return Err(KexError::ZeroSecret);
        }
        Ok(Zeroizing::new(*k.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(a.shared(&[1u8; 31]), Err(KexError::BadLength { got: 31, .. })));
    }
}
