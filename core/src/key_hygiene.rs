//! Key hygiene checks across the crate: every type holding key material is wiped on drop
//! (checked at compile time: [`assert_zod`] accepts only `ZeroizeOnDrop` types) and never
//! shows its bytes in `Debug`. Types private to a module are checked in that module's
//! tests with the helpers here.

use std::fmt::Debug;
use std::net::Ipv4Addr;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::control::{ChannelClient, ChannelConfig, ChannelServer};
use crate::node::NodeConfig;
use crate::ssh::cipher::PacketCipher;
use crate::ssh::client::{ClientConfig, ClientSession};
use crate::ssh::kex::{self, ClientKex, Curve25519, HashInputs, KEncoding, KexHash, KexMethod, SharedSecret};
use crate::ssh::kexinit::{CIPHER_AES128_GCM, CIPHER_AES256_GCM, CIPHER_CHACHA20_POLY1305};
use crate::ssh::server::{ServerConfig, ServerSession};
use crate::time::{Instant, UnixTime};
use crate::wireguard::cookie::{CookieChecker, CookieStamper};
use crate::wireguard::{Config, IpPrefix, PeerConfig, PresharedKey, PrivateKey, WireGuard};

/// Compiles only for a type that is wiped on drop.
pub(crate) fn assert_zod<T: ZeroizeOnDrop>() {}

/// Compiles only for a type that can be wiped (for dependencies that wipe in `Drop`
/// without implementing the `ZeroizeOnDrop` marker).
fn assert_zeroize<T: Zeroize>() {}

/// Compiles only for a value of a type that is wiped on drop (a function's result).
pub(crate) fn assert_zod_value<T: ZeroizeOnDrop>(_: &T) {}

/// 64 distinctive secret bytes (0xa1, 0xa3, ...), unlikely to appear in any output by chance.
pub(crate) const SECRET: [u8; 64] = {
    let mut s = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        s[i] = 0xa1u8.wrapping_add(i as u8 * 3);
        i += 1;
    }
    s
};

/// The first 32 secret bytes, for 32-byte keys.
pub(crate) fn secret32() -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(&SECRET[..32]);
    k
}

/// Panics if `value`'s `Debug` (plain or `{:#?}`) shows any 4 consecutive bytes of `secret`
/// in hex (either case) or as a decimal array.
pub(crate) fn assert_redacted(what: &str, value: &impl Debug, secret: &[u8]) {
    for shown in [format!("{value:?}"), format!("{value:#?}")] {
        let compact: String = shown.chars().filter(|c| !c.is_whitespace()).collect();
        let lower = compact.to_ascii_lowercase();
        for window in secret.windows(4) {
            let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
            let decimal = window.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
            assert!(!lower.contains(&hex), "{what} shows secret bytes in hex: {shown}");
            assert!(!compact.contains(&decimal), "{what} shows secret bytes in decimal: {shown}");
        }
    }
}

#[test]
fn the_helper_catches_a_leak() {
    let leaky = std::panic::catch_unwind(|| assert_redacted("a raw array", &secret32(), &SECRET[..32]));
    assert!(leaky.is_err());
    let hex: String = SECRET[8..12].iter().map(|b| format!("{b:02X}")).collect();
    assert!(std::panic::catch_unwind(|| assert_redacted("upper hex", &hex, &SECRET)).is_err());
}

#[test]
fn secret_types_are_wiped_on_drop() {
    assert_zod::<PrivateKey>();
    assert_zod::<PresharedKey>();
    assert_zod::<CookieChecker>();
    assert_zod::<CookieStamper>();
    assert_zod::<PacketCipher>();
    assert_zod::<Curve25519>();
    assert_zod::<SharedSecret>();
    // The post-quantum halves: ml-kem wipes its decapsulation key with its `zeroize`
    // feature (a compile error here without it), sntrup761 its key and secret always.
    assert_zod::<ml_kem::DecapsulationKey768>();
    assert_zod::<sntrup761::DecapsulationKey>();
    assert_zod::<sntrup761::SharedSecret>();
    // Dependencies' types, which hold our keys: these fail to compile without their
    // `zeroize` features.
    assert_zod::<SigningKey>();
    // x25519-dalek wipes these in `Drop` (`zeroize(drop)`) without the marker trait.
    assert_zeroize::<x25519_dalek::StaticSecret>();
    assert_zeroize::<x25519_dalek::SharedSecret>();
    assert_zod::<chacha20poly1305::ChaCha20Poly1305>();
    assert_zod::<chacha20poly1305::XChaCha20Poly1305>();
    assert_zod::<chacha20::ChaCha20Legacy>();
    assert_zod::<aes::Aes128>();
    assert_zod::<aes::Aes256>();
}

#[test]
fn key_exchange_results_are_wiped_on_drop() {
    let mut rng = crate::rng::test_rng(1);
    let (a, b) = (Curve25519::generate(&mut rng), Curve25519::generate(&mut rng));
    let shared = a.shared(&b.public).unwrap_or_else(|e| panic!("{e}"));
    assert_zod_value(&shared);
    assert_zod_value(&kex::mpint(&SECRET));
    assert_zod_value(&kex::derive(&secret(), &[1; 32], b'C', &[1; 32], 64));
    for method in [KexMethod::MlKem768X25519Sha256, KexMethod::Sntrup761X25519Sha512, KexMethod::Curve25519Sha256] {
        let client = ClientKex::start(method, &mut rng);
        let (reply, k) = kex::server_respond(method, client.public(), &mut rng).unwrap_or_else(|e| panic!("{e}"));
        let ours = client.finish(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ours.raw(), k.raw());
        assert_redacted("SharedSecret", &k, k.raw());
        assert_redacted("ClientKex", &client, ours.raw());
        assert_zod_value(&k);
    }
}

/// A shared secret of the test bytes, curve25519's way.
fn secret() -> SharedSecret {
    SharedSecret::new(KexHash::Sha256, KEncoding::Mpint, zeroize::Zeroizing::new(SECRET.to_vec()))
}

#[test]
fn wireguard_configuration_hides_keys() {
    let private = PrivateKey::from_bytes(secret32());
    assert_redacted("PrivateKey", &private, &SECRET[..32]);
    let psk = PresharedKey::from_bytes(secret32());
    assert_redacted("PresharedKey", &psk, &SECRET[..32]);
    let mut peer = PeerConfig::new(PrivateKey::from_bytes([9; 32]).public_key(), vec![]);
    peer.preshared_key = Some(psk);
    assert_redacted("PeerConfig", &peer, &SECRET[..32]);
    let config = Config::new(private.clone());
    assert_redacted("wireguard::Config", &config, &SECRET[..32]);
    let node = NodeConfig::new(private.clone(), Ipv4Addr::new(100, 64, 0, 1), "tail.mesh");
    assert_redacted("NodeConfig", &node, &SECRET[..32]);
    let now = Instant::from_micros(1_000_000);
    let wg = WireGuard::new(config, crate::rng::test_rng(2), now, UnixTime(Duration::from_secs(1_700_000_000)));
    let mut wg = wg.unwrap_or_else(|e| panic!("{e}"));
    peer.allowed_ips = vec![IpPrefix::host(Ipv4Addr::new(100, 64, 0, 2).into())];
    wg.add_peer(now, peer).unwrap_or_else(|e| panic!("{e}"));
    assert_redacted("WireGuard", &wg, &SECRET[..32]);
}

#[test]
fn ssh_ciphers_hide_keys() {
    for name in [CIPHER_CHACHA20_POLY1305, CIPHER_AES128_GCM, CIPHER_AES256_GCM] {
        let cipher = PacketCipher::new(name, &SECRET, &SECRET[..12]).unwrap_or_else(|e| panic!("{e}"));
        assert_redacted(name, &cipher, &SECRET);
    }
    let derived = kex::derive(&secret(), &[1; 32], b'C', &[1; 32], 64);
    assert_redacted("derived key", &derived, &derived);
    let inputs = HashInputs {
        client_id: b"SSH-2.0-a",
        server_id: b"SSH-2.0-b",
        client_kexinit: &[],
        server_kexinit: &[],
        host_key: &[],
        client_public: &[],
        server_public: &[],
        shared: &secret(),
    };
    assert_redacted("HashInputs", &inputs, &SECRET[..32]);
}

#[test]
fn ssh_sessions_hide_user_and_host_keys() {
    let now = Instant::from_micros(1_000_000);
    let config =
        ClientConfig { user: "alice".into(), key: Some(SigningKey::from_bytes(&secret32())), ..Default::default() };
    assert_redacted("ClientConfig", &config, &SECRET[..32]);
    let client = ClientSession::new(config, crate::rng::test_rng(3), now);
    assert_redacted("ClientSession", &client, &SECRET[..32]);
    let host_key = SigningKey::from_bytes(&secret32());
    assert_redacted("SigningKey", &host_key, &SECRET[..32]);
    let server = ServerSession::new(host_key.clone(), ServerConfig::default(), crate::rng::test_rng(4), now);
    assert_redacted("ServerSession", &server, &SECRET[..32]);
    // The node's SSH server configuration, and a node serving SSH with it.
    let ssh = crate::node::SshServerConfig::new(host_key);
    assert_redacted("SshServerConfig", &ssh, &SECRET[..32]);
    let mut config = NodeConfig::new(PrivateKey::from_bytes([5; 32]), Ipv4Addr::new(100, 64, 0, 1), "tail.mesh");
    config.ssh = Some(ssh);
    assert_redacted("NodeConfig with SSH", &config, &SECRET[..32]);
    let node = crate::node::Node::new(config, [6; 32], now, UnixTime(Duration::from_secs(1_700_000_000)));
    assert_redacted("Node", &node.unwrap_or_else(|e| panic!("{e}")), &SECRET[..32]);
}

#[test]
fn control_channels_hide_keys() {
    let mut rng = crate::rng::test_rng(5);
    let server_key = PrivateKey::from_bytes(secret32());
    let mut server = ChannelServer::new(server_key.clone(), &mut rng, ChannelConfig::default());
    let server = server.as_mut().unwrap_or_else(|e| panic!("{e}"));
    assert_redacted("ChannelServer", &server, &SECRET[..32]);
    let machine_key = PrivateKey::from_bytes(secret32());
    let client = ChannelClient::new(machine_key, server_key.public_key(), &mut rng, ChannelConfig::default());
    let mut client = client.unwrap_or_else(|e| panic!("{e}"));
    assert_redacted("ChannelClient", &client, &SECRET[..32]);
    // And once established, with transport keys in place.
    while let Some(bytes) = client.poll_transmit() {
        server.handle_input(&bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    while let Some(bytes) = server.poll_transmit() {
        client.handle_input(&bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(client.is_established());
    assert_redacted("ChannelClient", &client, &SECRET[..32]);
    assert_redacted("ChannelServer", &server, &SECRET[..32]);
}
