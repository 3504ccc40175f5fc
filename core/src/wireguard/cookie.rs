//! mac1, mac2 and cookies (WireGuard paper, section 5.4.4 and 5.4.7).
//!
//! mac1 proves the sender knows our public key and is checked before any Diffie-Hellman.
//! Under load, mac2 must also be valid: it is keyed by a cookie that binds the sender's
//! address to a secret we rotate every two minutes, so a flood from spoofed addresses gets
//! only cheap cookie replies.

use blake2::digest::consts::U16;
use blake2::digest::{Digest, FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::XChaCha20Poly1305;
use std::net::{IpAddr, SocketAddr};

use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::constants::COOKIE_SECRET_LIFETIME;
use super::keys::PublicKey;
use super::messages::{mac1_offset, write_type, COOKIE_REPLY_LEN, MSG_COOKIE_REPLY};
use crate::ct;
use crate::rng::Rng;
use crate::time::Instant;

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// BLAKE2s-256 of `label || key`.
fn hash_with_label(label: &[u8], key: &PublicKey) -> [u8; 32] {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, label);
    Digest::update(&mut h, key.0);
    h.finalize().into()
}

/// Keyed BLAKE2s with a 128-bit output.
fn mac(key: &[u8], data: &[u8]) -> [u8; 16] {
    // Keys are 16 or 32 bytes here, always valid for BLAKE2s.
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable_key());
    Update::update(&mut m, data);
    m.finalize_fixed().into()
}

#[cold]
fn unreachable_key() -> Blake2sMac<U16> {
    // A BLAKE2s key of 16 or 32 bytes is always accepted; this only keeps the code panic-free.
    <Blake2sMac<U16> as KeyInit>::new(&Default::default())
}

fn address_bytes(addr: SocketAddr, out: &mut [u8; 18]) -> usize {
    let n = match addr.ip() {
        IpAddr::V4(ip) => {
            out[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            out[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    out[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
    n + 2
}

/// The responder side: verifies mac1/mac2 of messages sent to us and makes cookie replies.
/// The secret is wiped on drop (the two keys derive from our public key: not secret).
#[derive(ZeroizeOnDrop)]
pub struct CookieChecker {
    #[zeroize(skip)]
    mac1_key: [u8; 32],
    #[zeroize(skip)]
    cookie_key: [u8; 32],
    secret: [u8; 32],
    #[zeroize(skip)]
    secret_born: Option<Instant>,
}

impl std::fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieChecker(..)")
    }
}

impl CookieChecker {
    /// For messages addressed to `our_public`.
    pub fn new(our_public: &PublicKey) -> Self {
        Self {
            mac1_key: hash_with_label(LABEL_MAC1, our_public),
            cookie_key: hash_with_label(LABEL_COOKIE, our_public),
            secret: [0; 32],
            secret_born: None,
        }
    }

    /// Whether the message's mac1 is valid. Costs one BLAKE2s over the message.
    pub fn check_mac1(&self, msg: &[u8]) -> bool {
        let at = mac1_offset(msg.len());
        ct::eq(&mac(&self.mac1_key, &msg[..at]), &msg[at..at + 16])
    }

    /// Whether the message's mac2 is valid for a sender at `src`.
    pub fn check_mac2(&mut self, now: Instant, rng: &mut Rng, msg: &[u8], src: SocketAddr) -> bool {
        let cookie = self.cookie_for(now, rng, src);
        let at = mac1_offset(msg.len()) + 16;
        ct::eq(&mac(&cookie[..], &msg[..at]), &msg[at..at + 16])
    }

    /// The cookie reply to `msg` (whose mac1 was valid) from `src`, whose sender index is
    /// `receiver`.
    pub fn make_reply(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        msg: &[u8],
        receiver: u32,
        src: SocketAddr,
    ) -> [u8; COOKIE_REPLY_LEN] {
        let cookie = self.cookie_for(now, rng, src);
        let at = mac1_offset(msg.len());
        let mut out = [0u8; COOKIE_REPLY_LEN];
        write_type(&mut out, MSG_COOKIE_REPLY);
        out[4..8].copy_from_slice(&receiver.to_le_bytes());
        let nonce: [u8; 24] = rng.gen_bytes();
        out[8..32].copy_from_slice(&nonce);
        out[32..48].copy_from_slice(&cookie[..]);
        let aead = XChaCha20Poly1305::new(&self.cookie_key.into());
        // Encrypting 16 bytes cannot fail (the only error is a message beyond 256 GiB).
        if let Ok(tag) = aead.encrypt_in_place_detached(&nonce.into(), &msg[at..at + 16], &mut out[32..48]) {
            out[48..64].copy_from_slice(&tag);
        }
        out
    }

    /// Tau = MAC(secret, address), with the secret rotated lazily every two minutes.
    fn cookie_for(&mut self, now: Instant, rng: &mut Rng, src: SocketAddr) -> Zeroizing<[u8; 16]> {
        let expired = self.secret_born.is_none_or(|born| now.saturating_duration_since(born) >= COOKIE_SECRET_LIFETIME);
        if expired {
            // Overwritten in place: the old secret leaves no copy behind.
            rng.fill_bytes(&mut self.secret);
            self.secret_born = Some(now);
        }
        let mut addr = [0u8; 18];
        let n = address_bytes(src, &mut addr);
        Zeroizing::new(mac(&self.secret, &addr[..n]))
    }
}

/// The initiator side, one per peer: stamps mac1/mac2 on messages we send to that peer and
/// stores the cookie the peer gives us (wiped on drop; it travels encrypted, and whoever
/// holds it can pass our mac2 for that address).
#[derive(ZeroizeOnDrop)]
pub struct CookieStamper {
    #[zeroize(skip)]
    mac1_key: [u8; 32],
    #[zeroize(skip)]
    cookie_key: [u8; 32],
    #[zeroize(skip)]
    last_mac1: Option<[u8; 16]>,
    cookie: [u8; 16],
    /// When `cookie` arrived; `None` while we hold none.
    #[zeroize(skip)]
    cookie_received: Option<Instant>,
}

impl std::fmt::Debug for CookieStamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieStamper(..)")
    }
}

impl CookieStamper {
    /// For messages addressed to `peer_public`.
    pub fn new(peer_public: &PublicKey) -> Self {
        Self {
            mac1_key: hash_with_label(LABEL_MAC1, peer_public),
            cookie_key: hash_with_label(LABEL_COOKIE, peer_public),
            last_mac1: None,
            cookie: [0; 16],
            cookie_received: None,
        }
    }

    /// Fill in mac1 and (when a fresh cookie is held) mac2 of a handshake message.
    pub fn stamp(&mut self, now: Instant, msg: &mut [u8]) {
        let at = mac1_offset(msg.len());
        let mac1 = mac(&self.mac1_key, &msg[..at]);
        msg[at..at + 16].copy_from_slice(&mac1);
        self.last_mac1 = Some(mac1);
        let mac2 = match self.cookie_received {
            Some(born) if now.saturating_duration_since(born) < COOKIE_SECRET_LIFETIME => {
                mac(&self.cookie, &msg[..at + 16])
            }
            _ => [0; 16],
        };
        msg[at + 16..at + 32].copy_from_slice(&mac2);
    }

    /// Take a cookie reply to the last message we stamped. Returns whether it was accepted.
    pub fn consume_reply(&mut self, now: Instant, reply: &[u8]) -> bool {
        let Some(last_mac1) = self.last_mac1 else { return false };
        if reply.len() != COOKIE_REPLY_LEN {
            return false;
        }
        let mut cookie = Zeroizing::new([0u8; 16]);
        cookie.copy_from_slice(&reply[32..48]);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&reply[8..32]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&reply[48..64]);
        let aead = XChaCha20Poly1305::new(&self.cookie_key.into());
        if aead.decrypt_in_place_detached(&nonce.into(), &last_mac1, &mut cookie[..], &tag.into()).is_err() {
            return false;
        }
        self.cookie = *cookie;
        self.cookie_received = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hygiene::{assert_redacted, secret32, SECRET};

    #[test]
    fn secrets_are_never_printed() {
        let public = PublicKey([3; 32]);
        let mut checker = CookieChecker::new(&public);
        checker.secret = secret32();
        checker.secret_born = Some(Instant::from_micros(0));
        assert_redacted("CookieChecker", &checker, &SECRET[..32]);
        let mut stamper = CookieStamper::new(&public);
        stamper.cookie.copy_from_slice(&SECRET[..16]);
        stamper.cookie_received = Some(Instant::from_micros(0));
        assert_redacted("CookieStamper", &stamper, &SECRET[..16]);
    }

    #[test]
    fn a_cookie_round_trip_still_passes_mac2() {
        let mut rng = crate::rng::test_rng(1);
        let public = PublicKey([3; 32]);
        let (mut checker, mut stamper) = (CookieChecker::new(&public), CookieStamper::new(&public));
        let now = Instant::from_micros(1_000_000);
        let src: SocketAddr = ([192, 0, 2, 1], 51820).into();
        let mut msg = [0u8; super::super::messages::INITIATION_LEN];
        stamper.stamp(now, &mut msg);
        assert!(checker.check_mac1(&msg));
        assert!(!checker.check_mac2(now, &mut rng, &msg, src));
        let reply = checker.make_reply(now, &mut rng, &msg, 7, src);
        assert!(stamper.consume_reply(now, &reply));
        stamper.stamp(now, &mut msg);
        assert!(checker.check_mac2(now, &mut rng, &msg, src));
        let other: SocketAddr = ([192, 0, 2, 9], 51820).into();
        assert!(!checker.check_mac2(now, &mut rng, &msg, other), "the cookie is bound to the address");
    }
}
