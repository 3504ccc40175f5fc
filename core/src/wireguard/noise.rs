//! The Noise IKpsk2 handshake through `snow`, made deterministic and auditable.
//!
//! snow draws ephemeral keys from the resolver's RNG: ours is seeded from the core's
//! [`Rng`], so a simulated handshake is reproducible. Its X25519 is ours too, which lets us
//! (a) reject all-zero shared secrets (a low-order point from the peer), (b) count
//! Diffie-Hellman operations, the resource an attacker tries to exhaust, and (c) reuse the
//! static-static secret of each known peer, computed once when the peer is added (as
//! wireguard-go and boringtun do): a handshake then costs four DH operations, not six.
//!
//! Every secret this module holds (our static key, the resolver's RNG seed, ephemeral
//! keys, cached static-static secrets) is wiped on drop. snow 0.10 itself does not wipe
//! its chaining key, handshake hash, PSK copy or handshake cipher keys.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::keys::{base_point_mul, PrivateKey, PublicKey};
use crate::ct;
use crate::rng::Rng;

const PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// Builds handshake states for one static key.
pub struct NoiseFactory {
    params: NoiseParams,
    /// Shared with handshakes in flight rather than copied into each.
    private: Arc<PrivateKey>,
    public: PublicKey,
    dh_ops: Arc<AtomicU64>,
    static_static: Arc<StaticStatic>,
}

/// DH(our static, peer static) per known peer's public key; shared read-only with
/// handshakes in flight and replaced (copy on write) when peers change. Every copy of a
/// secret is wiped when its map goes.
type StaticStatic = BTreeMap<[u8; 32], Zeroizing<[u8; 32]>>;

/// X25519 of `private` and `public`, in a buffer wiped on drop (the scalar's working copy
/// is wiped with the `StaticSecret` holding it).
fn diffie_hellman(private: &[u8; 32], public: [u8; 32]) -> Zeroizing<[u8; 32]> {
    let shared = x25519_dalek::StaticSecret::from(*private).diffie_hellman(&x25519_dalek::PublicKey::from(public));
    Zeroizing::new(*shared.as_bytes())
}

impl std::fmt::Debug for NoiseFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseFactory").field("public", &self.public).finish()
    }
}

impl NoiseFactory {
    pub fn new(private: PrivateKey) -> Result<Self, snow::Error> {
        let public = private.public_key();
        Ok(Self {
            params: PATTERN.parse()?,
            private: Arc::new(private),
            public,
            dh_ops: Arc::default(),
            static_static: Arc::default(),
        })
    }

    /// Precompute the static-static secret with a new peer. A low-order key (all-zero
    /// result) is not cached, so handshakes with it fail in the DH as they must.
    pub fn remember_peer(&mut self, peer: &PublicKey) {
        let shared = diffie_hellman(self.private.as_bytes(), peer.0);
        if !ct::is_zero(&shared) {
            Arc::make_mut(&mut self.static_static).insert(peer.0, shared);
        }
    }

    /// Drop a removed peer's precomputed secret.
    pub fn forget_peer(&mut self, peer: &PublicKey) {
        Arc::make_mut(&mut self.static_static).remove(&peer.0);
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Diffie-Hellman operations performed so far (excluding key generation).
    pub fn dh_ops(&self) -> u64 {
        self.dh_ops.load(Ordering::Relaxed)
    }

    fn builder(&self, rng: &mut Rng) -> Builder<'_> {
        let resolver = Resolver {
            seed: Zeroizing::new(rng.gen_bytes()),
            private: self.private.clone(),
            public: self.public,
            dh_ops: self.dh_ops.clone(),
            static_static: self.static_static.clone(),
        };
        Builder::with_resolver(self.params.clone(), Box::new(resolver))
    }

    /// An initiator handshake towards `peer`.
    pub fn initiator(&self, rng: &mut Rng, peer: &PublicKey, psk: &[u8; 32]) -> Result<HandshakeState, snow::Error> {
        self.builder(rng)
            .local_private_key(self.private.as_bytes())?
            .remote_public_key(&peer.0)?
            .prologue(PROLOGUE)?
            .psk(2, psk)?
            .build_initiator()
    }

    /// A responder handshake; the PSK is set once message 1 revealed the peer.
    pub fn responder(&self, rng: &mut Rng) -> Result<HandshakeState, snow::Error> {
        self.builder(rng).local_private_key(self.private.as_bytes())?.prologue(PROLOGUE)?.build_responder()
    }
}

/// A `snow` builder for another Noise protocol (the control channel's) with the same
/// primitives as WireGuard's: the ephemeral key drawn from `rng` (so the simulator can
/// replay the handshake), our X25519 that refuses all-zero results. `private` is the static
/// key the caller then hands to the builder. Without a static-static cache: such a
/// connection makes one handshake.
pub(crate) fn builder<'a>(params: NoiseParams, private: Arc<PrivateKey>, rng: &mut Rng) -> Builder<'a> {
    let public = private.public_key();
    let resolver = Resolver {
        seed: Zeroizing::new(rng.gen_bytes()),
        private,
        public,
        dh_ops: Arc::default(),
        static_static: Arc::default(),
    };
    Builder::with_resolver(params, Box::new(resolver))
}

/// The transport keys of a finished handshake: (initiator to responder, responder to
/// initiator), wiped on drop, as is the copy snow returns.
pub fn split(state: &mut HandshakeState) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mut raw = state.dangerously_get_raw_split();
    let keys = (Zeroizing::new(raw.0), Zeroizing::new(raw.1));
    raw.zeroize();
    keys
}

/// What one handshake's primitives come from. Wiped on drop: the seed determines the
/// ephemeral key.
#[derive(ZeroizeOnDrop)]
struct Resolver {
    seed: Zeroizing<[u8; 32]>,
    /// Our static key pair, so building a handshake skips a base-point multiplication.
    #[zeroize(skip)]
    private: Arc<PrivateKey>,
    #[zeroize(skip)]
    public: PublicKey,
    #[zeroize(skip)]
    dh_ops: Arc<AtomicU64>,
    #[zeroize(skip)]
    static_static: Arc<StaticStatic>,
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        // `Rng::new` wipes the copy it is given.
        Some(Box::new(SeededRandom(Rng::new(*self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                private: [0; 32],
                public: [0; 32],
                is_static: false,
                our_private: self.private.clone(),
                our_public: self.public,
                dh_ops: self.dh_ops.clone(),
                static_static: self.static_static.clone(),
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

struct SeededRandom(Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// snow's view of one X25519 key (static or ephemeral); the private bytes are wiped on
/// drop and when replaced.
#[derive(ZeroizeOnDrop)]
struct X25519 {
    private: [u8; 32],
    public: [u8; 32],
    /// Whether `private` is our static key (so the static-static cache applies).
    is_static: bool,
    #[zeroize(skip)]
    our_private: Arc<PrivateKey>,
    #[zeroize(skip)]
    our_public: PublicKey,
    #[zeroize(skip)]
    dh_ops: Arc<AtomicU64>,
    #[zeroize(skip)]
    static_static: Arc<StaticStatic>,
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        self.private.zeroize();
        let n = privkey.len().min(32);
        self.private[..n].copy_from_slice(&privkey[..n]);
        self.is_static = ct::eq(&self.private, self.our_private.as_bytes());
        self.public = if self.is_static { self.our_public.0 } else { base_point_mul(&self.private) };
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut self.private)?;
        self.is_static = false;
        self.public = base_point_mul(&self.private);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let theirs: [u8; 32] = pubkey.get(..32).and_then(|p| p.try_into().ok()).ok_or(snow::Error::Dh)?;
        let cached = if self.is_static { self.static_static.get(&theirs) } else { None };
        let computed;
        let shared = match cached {
            Some(shared) => shared,
            None => {
                self.dh_ops.fetch_add(1, Ordering::Relaxed);
                computed = diffie_hellman(&self.private, theirs);
                &computed
            }
        };
        // A low-order point yields all zeros: the peer contributed nothing; refuse.
        if ct::is_zero(shared) {
            return Err(snow::Error::Dh);
        }
        out.get_mut(..32).ok_or(snow::Error::Dh)?.copy_from_slice(&shared[..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hygiene::{assert_redacted, assert_zod, assert_zod_value, secret32, SECRET};

    fn values_zod<K, V: ZeroizeOnDrop>(_: &BTreeMap<K, V>) {}

    #[test]
    fn secrets_are_wiped_and_never_printed() {
        assert_zod::<Resolver>();
        assert_zod::<X25519>();
        let mut factory = NoiseFactory::new(PrivateKey::from_bytes(secret32())).unwrap_or_else(|e| panic!("{e}"));
        let peer = PrivateKey::from_bytes([7; 32]).public_key();
        factory.remember_peer(&peer);
        values_zod(&factory.static_static);
        let shared = factory.static_static.get(&peer.0).map(|s| **s).unwrap_or_default();
        assert_redacted("NoiseFactory", &factory, &SECRET[..32]);
        assert_redacted("NoiseFactory", &factory, &shared);
    }

    #[test]
    fn split_keys_are_wiped_and_match_the_peer() {
        let mut rng = crate::rng::test_rng(1);
        let (a, b) = (PrivateKey::from_bytes([1; 32]), PrivateKey::from_bytes([2; 32]));
        let (mut fa, mut fb) = (NoiseFactory::new(a.clone()), NoiseFactory::new(b.clone()));
        let (Ok(fa), Ok(fb)) = (fa.as_mut(), fb.as_mut()) else { panic!("factories") };
        fa.remember_peer(&b.public_key());
        fb.remember_peer(&a.public_key());
        let psk = [5; 32];
        let mut init = fa.initiator(&mut rng, &b.public_key(), &psk).unwrap_or_else(|e| panic!("{e}"));
        let mut resp = fb.responder(&mut rng).unwrap_or_else(|e| panic!("{e}"));
        let (mut m1, mut m2, mut buf) = ([0u8; 256], [0u8; 256], [0u8; 256]);
        let n1 = init.write_message(b"ts", &mut m1).unwrap_or_else(|e| panic!("{e}"));
        resp.read_message(&m1[..n1], &mut buf).unwrap_or_else(|e| panic!("{e}"));
        resp.set_psk(2, &psk).unwrap_or_else(|e| panic!("{e}"));
        let n2 = resp.write_message(&[], &mut m2).unwrap_or_else(|e| panic!("{e}"));
        init.read_message(&m2[..n2], &mut buf).unwrap_or_else(|e| panic!("{e}"));
        let (ka, kb) = (split(&mut init), split(&mut resp));
        assert_zod_value(&ka);
        assert_eq!((*ka.0, *ka.1), (*kb.0, *kb.1));
    }

    #[test]
    fn low_order_peer_keys_are_refused() {
        let mut factory = NoiseFactory::new(PrivateKey::from_bytes([1; 32])).unwrap_or_else(|e| panic!("{e}"));
        factory.remember_peer(&PublicKey([0; 32]));
        assert!(factory.static_static.is_empty(), "an all-zero static-static secret is not cached");
    }
}
