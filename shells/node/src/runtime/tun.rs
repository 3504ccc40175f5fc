//! The TUN device (tun-rs, plain IP packets, non-blocking) and its link configuration over
//! netlink. Dropping a [`Tun`] removes the link, and with it its addresses and routes.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use mesh_core::wireguard::IpPrefix;
use thiserror::Error;
use tracing::{info, warn};
use tun_rs::{DeviceBuilder, SyncDevice};

use super::netlink::{Netlink, NetlinkError};
use std::net::IpAddr;

/// What the TUN device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunConfig {
    pub name: String,
    pub mtu: u16,
    /// Addresses with the prefix length of their subnet.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Prefixes routed into the device.
    pub routes: Vec<IpPrefix>,
}

#[derive(Debug, Error)]
pub enum TunError {
    #[error("TUN name `{0}` is not valid (1 to 15 characters, no '/', ':' or whitespace)")]
    BadName(String),
    #[error("TUN name `{0}` is already in use by another network interface")]
    NameInUse(String),
    #[error("cannot create TUN device `{name}`: {error}")]
    Create { name: String, error: io::Error },
    #[error("TUN device `{name}`: {error}")]
    Configure { name: String, error: NetlinkError },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// A configured TUN device, removed on drop.
pub struct Tun {
    device: SyncDevice,
    name: String,
    index: u32,
    netlink: Netlink,
}

impl Tun {
    pub fn create(config: &TunConfig) -> Result<Self, TunError> {
        let name = &config.name;
        let valid = !name.is_empty()
            && name.len() <= 15
            && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !valid {
            return Err(TunError::BadName(name.clone()));
        }
        let netlink = Netlink::open()?;
        // TUNSETIFF would attach to an existing persistent TUN of that name: refuse any
        // existing interface instead.
        if netlink.link_index(name)?.is_some() {
            return Err(TunError::NameInUse(name.clone()));
        }
        let device = DeviceBuilder::new()
            .name(name.as_str())
            .enable(false)
            .build_sync()
            .map_err(|error| TunError::Create { name: name.clone(), error })?;
        device.set_nonblocking(true).map_err(|error| TunError::Create { name: name.clone(), error })?;
        let index = netlink.link_index(name)?.ok_or_else(|| TunError::Create {
            name: name.clone(),
            error: io::Error::other("vanished after creation"),
        })?;
        let tun = Self { device, name: name.clone(), index, netlink };
        tun.netlink
            .configure(index, &config.addresses, config.mtu, &config.routes)
            .map_err(|error| TunError::Configure { name: name.clone(), error })?;
        info!(name, index, mtu = config.mtu, addresses = ?config.addresses, routes = config.routes.len(), "TUN up");
        Ok(tun)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Read one packet (`WouldBlock` when there is none).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.device.recv(buf)
    }

    /// Write one packet.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.device.send(packet)
    }
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun").field("name", &self.name).field("index", &self.index).finish_non_exhaustive()
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.device.as_raw_fd()
    }
}

impl Drop for Tun {
    fn drop(&mut self) {
        match self.netlink.delete_link(self.index) {
            Ok(()) => info!(name = self.name, "TUN removed"),
            Err(error) => warn!(name = self.name, %error, "TUN removal failed (it goes when meshd exits)"),
        }
    }
}
