// Shared fixture of the WireGuard targets: a device with one known peer.
use std::net::SocketAddr;

use mesh_core::rng::Rng;
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::{Config, IpPrefix, PeerConfig, PrivateKey, WireGuard};

pub const PEER_ADDR: ([u8; 4], u16) = ([192, 0, 2, 2], 51820);

pub fn peer_key() -> PrivateKey {
    PrivateKey::from_bytes([0x22; 32])
}

pub fn device_key() -> PrivateKey {
    PrivateKey::from_bytes([0x11; 32])
}

pub fn device() -> WireGuard {
    let now = Instant::from_micros(1_000_000);
    let mut wg = WireGuard::new(
        Config::new(device_key()),
        Rng::new([1; 32]),
        now,
        UnixTime(std::time::Duration::from_secs(1_700_000_000)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut pc = PeerConfig::new(peer_key().public_key(), vec![IpPrefix::host([100, 64, 0, 2].into())]);
    pc.endpoint = Some(SocketAddr::from(PEER_ADDR));
    wg.add_peer(now, pc).unwrap_or_else(|e| panic!("{e}"));
    wg
}
