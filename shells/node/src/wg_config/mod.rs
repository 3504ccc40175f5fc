//! `meshd --wg-config FILE`: a wg-quick file read into what the runtime runs, so that plain
//! WireGuard peers talk to meshd without a coordination server.
//!
//! [`parse`] reads the text (bounded, every error with its line); [`WgQuick::runtime_config`]
//! turns it into a [`RuntimeConfig`]: the node's key and addresses, one netmap peer per
//! `[Peer]` (its allowed IPs become the peer's addresses and routes), the preshared keys and
//! keepalives as [`PeerOptions`], an allow-all filter (plain WireGuard filters nothing), and
//! the TUN's addresses, MTU and routes.

pub mod parse;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::ip::{Filter, FilterRule, PortRange, Proto};
use mesh_core::node::{NetmapPeer, NodeConfig, PeerOptions};
use mesh_core::wireguard::{IpPrefix, PresharedKey, PrivateKey, PublicKey};
use thiserror::Error;

pub use parse::{parse, ParseError, ParseErrorKind};

use crate::runtime::{RuntimeConfig, TunConfig};

/// wg-quick's MTU when the file sets none.
pub const DEFAULT_MTU: u16 = 1420;
/// wg's listen port when the file sets none (0 would pick a random one; a fixed default
/// keeps the node reachable).
pub const DEFAULT_LISTEN_PORT: u16 = 51820;

/// A whole wg-quick file.
#[derive(Debug)]
pub struct WgQuick {
    pub interface: Interface,
    pub peers: Vec<Peer>,
}

/// The `[Interface]` section.
#[derive(Debug)]
pub struct Interface {
    pub private_key: PrivateKey,
    pub listen_port: Option<u16>,
    pub addresses: Vec<InterfaceAddress>,
    pub mtu: Option<u16>,
    /// wg-quick keys accepted but not acted on (DNS, Table, hooks, ...).
    pub ignored: Vec<String>,
}

/// An `Address` entry: the address and the prefix of its subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A `[Peer]` section.
#[derive(Debug)]
pub struct Peer {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<Endpoint>,
    pub allowed_ips: Vec<IpPrefix>,
    /// Seconds; `None` is off.
    pub persistent_keepalive: Option<u16>,
}

/// Where a peer is: an address, or a name resolved when the file is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

/// Why a wg-quick file cannot be run. `Display` is `FILE:LINE: message` for parse errors
/// and `FILE: message` for the others.
#[derive(Debug, Error)]
pub enum WgConfigError {
    #[error("{}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}:{error}", path.display())]
    Parse { path: PathBuf, error: ParseError },
    #[error("{}: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
    #[error("{}: peer endpoint `{host}:{port}` does not resolve: {error}", path.display())]
    Resolve { path: PathBuf, host: String, port: u16, error: std::io::Error },
}

/// Read and parse a wg-quick file (at most [`parse::MAX_FILE_LEN`] bytes are read).
pub fn load(path: &Path) -> Result<WgQuick, WgConfigError> {
    let read = |error| WgConfigError::Read { path: path.to_path_buf(), error };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(parse::MAX_FILE_LEN as u64 + 1).read_to_end(&mut bytes).map_err(read)?;
    parse(&bytes).map_err(|error| WgConfigError::Parse { path: path.to_path_buf(), error })
}

impl WgQuick {
    /// What the runtime runs for this file, with the TUN named `tun_name`. Host-name
    /// endpoints are resolved here (the first address wins).
    pub fn runtime_config(&self, path: &Path, tun_name: &str) -> Result<RuntimeConfig, WgConfigError> {
        let unsupported = |message: String| WgConfigError::Unsupported { path: path.to_path_buf(), message };
        let iface = &self.interface;
        let v4: Vec<&InterfaceAddress> = iface.addresses.iter().filter(|a| a.addr.is_ipv4()).collect();
        let v6: Vec<&InterfaceAddress> = iface.addresses.iter().filter(|a| a.addr.is_ipv6()).collect();
        let mesh_v4 = match v4.as_slice() {
            [one] => match one.addr {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => return Err(unsupported("internal: address family".into())),
            },
            [] => return Err(unsupported("[Interface] needs an IPv4 Address".into())),
            _ => return Err(unsupported("meshd takes one IPv4 and at most one IPv6 Address".into())),
        };
        let mesh_v6 = match v6.as_slice() {
            [] => None,
            [one] => match one.addr {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            },
            _ => return Err(unsupported("meshd takes one IPv4 and at most one IPv6 Address".into())),
        };
        let mut node = NodeConfig::new(iface.private_key.clone(), mesh_v4, "wg");
        node.mesh_v6 = mesh_v6;

        let mut peers = Vec::with_capacity(self.peers.len());
        let mut options = Vec::new();
        let mut routes = Vec::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let endpoint = match &peer.endpoint {
                None => None,
                Some(Endpoint::Addr(a)) => Some(*a),
                Some(Endpoint::Host { host, port }) => Some(resolve(path, host, *port)?),
            };
            peers.push(netmap_peer(format!("peer{}", i + 1), peer, endpoint));
            if peer.preshared_key.is_some() || peer.persistent_keepalive.is_some() {
                options.push((
                    peer.public_key,
                    PeerOptions {
                        preshared_key: peer.preshared_key.clone(),
                        persistent_keepalive: peer.persistent_keepalive.map(|s| Duration::from_secs(u64::from(s))),
                    },
                ));
            }
            routes.extend(peer.allowed_ips.iter().copied().filter(|p| !p.is_empty()));
        }
        routes.sort();
        routes.dedup();
        let tun = TunConfig {
            name: tun_name.to_string(),
            mtu: iface.mtu.unwrap_or(DEFAULT_MTU),
            addresses: iface.addresses.iter().map(|a| (a.addr, a.prefix_len)).collect(),
            routes,
        };
        Ok(RuntimeConfig {
            node,
            peers,
            peer_options: options,
            filter: allow_all(),
            listen_port: iface.listen_port.unwrap_or(DEFAULT_LISTEN_PORT),
            tun: Some(tun),
        })
    }

    /// Allowed IPs of length 0 (a default route), which meshd does not install as a route
    /// (wg-quick's policy routing for them is not done here).
    pub fn default_routes(&self) -> impl Iterator<Item = &IpPrefix> {
        self.peers.iter().flat_map(|p| p.allowed_ips.iter()).filter(|p| p.is_empty())
    }
}

/// A `[Peer]` as a netmap entry: the first IPv4 (IPv6) host prefix becomes its address,
/// every other allowed IP a route. WireGuard then allows exactly the allowed IPs (plus
/// 0.0.0.0/32 for a peer without any IPv4 prefix, which no packet carries as a source).
fn netmap_peer(name: String, peer: &Peer, endpoint: Option<SocketAddr>) -> NetmapPeer {
    let is_host = |p: &&IpPrefix| p.len() == if p.addr().is_ipv4() { 32 } else { 128 };
    let v4_host = peer.allowed_ips.iter().filter(|p| p.addr().is_ipv4()).find(is_host);
    let v4_any = peer.allowed_ips.iter().find(|p| p.addr().is_ipv4());
    let v6_host = peer.allowed_ips.iter().filter(|p| p.addr().is_ipv6()).find(is_host);
    let mesh_v4 = match v4_host.or(v4_any).map(IpPrefix::addr) {
        Some(IpAddr::V4(a)) => a,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let mesh_v6 = match v6_host.map(IpPrefix::addr) {
        Some(IpAddr::V6(a)) => Some(a),
        _ => None,
    };
    let routes = peer.allowed_ips.iter().filter(|p| Some(*p) != v4_host && Some(*p) != v6_host).copied().collect();
    NetmapPeer { name, public_key: peer.public_key, endpoint, mesh_v4, mesh_v6, routes }
}

fn resolve(path: &Path, host: &str, port: u16) -> Result<SocketAddr, WgConfigError> {
    let err = |error| WgConfigError::Resolve { path: path.to_path_buf(), host: host.to_string(), port, error };
    let mut addrs = (host, port).to_socket_addrs().map_err(err)?;
    addrs.next().ok_or_else(|| err(std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))
}

/// Everything from everywhere (plain WireGuard has no filter; the allowed IPs already bound
/// who may send what).
fn allow_all() -> Filter {
    let any = |addr: IpAddr| IpPrefix::new(addr, 0).ok();
    let prefixes: Vec<IpPrefix> =
        [any(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), any(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))]
            .into_iter()
            .flatten()
            .collect();
    let srcs: Arc<[IpPrefix]> = prefixes.clone().into();
    let dsts: Vec<(IpPrefix, PortRange)> = prefixes.into_iter().map(|p| (p, PortRange::ALL)).collect();
    // An empty list means TCP, UDP and ICMP; every other protocol is named.
    let others = (0..=u8::MAX).filter(|n| ![1, 6, 17, 58].contains(n)).map(Proto::Other).collect();
    Filter::new(vec![
        FilterRule { srcs: srcs.clone(), dsts: dsts.clone(), protos: Vec::new() },
        FilterRule { srcs, dsts, protos: others },
    ])
}
