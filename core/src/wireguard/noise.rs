//! The Noise IKpsk2 handshake through `snow`, made deterministic and auditable.
//!
//! snow draws ephemeral keys from the resolver's RNG: ours is seeded from the core's
//! [`Rng`], so a simulated handshake is reproducible. Its X25519 is ours too, which lets us
//! (a) reject all-zero shared secrets (a low-order point from the peer), (b) count
//! Diffie-Hellman operations, the resource an attacker tries to exhaust, and (c) reuse the
//! static-static secret of each known peer, computed once when the peer is added (as
//! wireguard-go and boringtun do): a handshake then costs four DH operations, not six.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};

use super::keys::{base_point_mul, PrivateKey, PublicKey};
use crate::rng::Rng;

const PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// Builds handshake states for one static key.
pub struct NoiseFactory {
    params: NoiseParams,
    private: PrivateKey,
    public: PublicKey,
    dh_ops: Arc<AtomicU64>,
    /// DH(our static, peer static) per known peer; shared read-only with handshakes in
    /// flight and replaced (copy on write) when peers change.
    static_static: Arc<BTreeMap<[u8; 32], [u8; 32]>>,
}

impl std::fmt::Debug for NoiseFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseFactory").field("public", &self.public).finish()
    }
}

impl NoiseFactory {
    pub fn new(private: PrivateKey) -> Result<Self, snow::Error> {
        let public = private.public_key();
        Ok(Self { params: PATTERN.parse()?, private, public, dh_ops: Arc::default(), static_static: Arc::default() })
    }

    /// Precompute the static-static secret with a new peer. A low-order key (all-zero
    /// result) is not cached, so handshakes with it fail in the DH as they must.
    pub fn remember_peer(&mut self, peer: &PublicKey) {
        let shared = x25519_dalek::x25519(*self.private.as_bytes(), peer.0);
        if !is_all_zero(&shared) {
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
            seed: rng.gen_bytes(),
            static_pair: (*self.private.as_bytes(), self.public.0),
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

struct Resolver {
    seed: [u8; 32],
    /// Our static key pair, so building a handshake skips a base-point multiplication.
    static_pair: ([u8; 32], [u8; 32]),
    dh_ops: Arc<AtomicU64>,
    static_static: Arc<BTreeMap<[u8; 32], [u8; 32]>>,
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(Rng::new(self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                private: [0; 32],
                public: [0; 32],
                is_static: false,
                static_pair: self.static_pair,
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

struct X25519 {
    private: [u8; 32],
    public: [u8; 32],
    /// Whether `private` is our static key (so the static-static cache applies).
    is_static: bool,
    static_pair: ([u8; 32], [u8; 32]),
    dh_ops: Arc<AtomicU64>,
    static_static: Arc<BTreeMap<[u8; 32], [u8; 32]>>,
}

fn is_all_zero(bytes: &[u8; 32]) -> bool {
    bytes.iter().fold(0u8, |acc, b| acc | b) == 0
}

impl Drop for X25519 {
    fn drop(&mut self) {
        self.private = [0; 32];
        self.static_pair.0 = [0; 32];
    }
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
        self.private = [0; 32];
        let n = privkey.len().min(32);
        self.private[..n].copy_from_slice(&privkey[..n]);
        self.is_static = self.private == self.static_pair.0;
        self.public = if self.is_static { self.static_pair.1 } else { base_point_mul(self.private) };
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut private = [0u8; 32];
        rng.try_fill_bytes(&mut private)?;
        self.private = private;
        self.is_static = false;
        self.public = base_point_mul(private);
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
        let cached = if self.is_static { self.static_static.get(&theirs).copied() } else { None };
        let shared = match cached {
            Some(shared) => shared,
            None => {
                self.dh_ops.fetch_add(1, Ordering::Relaxed);
                x25519_dalek::x25519(self.private, theirs)
            }
        };
        // A low-order point yields all zeros: the peer contributed nothing; refuse.
        if is_all_zero(&shared) {
            return Err(snow::Error::Dh);
        }
        out.get_mut(..32).ok_or(snow::Error::Dh)?.copy_from_slice(&shared);
        Ok(())
    }
}
