//! The TUN device (tun-rs, non-blocking) and its link configuration over netlink. Dropping
//! a [`Tun`] removes the link, and with it its addresses and routes.
//!
//! With offload (`IFF_VNET_HDR` and TSO/USO, when the kernel has them) one read brings a
//! TCP or UDP train of up to 64 KiB that tun-rs splits into MTU-sized packets
//! ([`Tun::recv_multiple`]), and one write carries packets tun-rs coalesced (GRO,
//! [`Tun::send_multiple`]), so a system call moves many packets each way.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use bytes::BytesMut;
use mesh_core::wireguard::IpPrefix;
use thiserror::Error;
use tracing::{info, warn};
use tun_rs::{DeviceBuilder, GROTable, SyncDevice};

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
    offload: bool,
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
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(name.as_str())
                .enable(false)
                .with(|b| {
                    b.offload(offload);
                })
                .build_sync()
        };
        let device = match build(true) {
            Ok(device) => device,
            Err(error) => {
                warn!(%error, "TUN offload unavailable; one packet per system call");
                build(false).map_err(|error| TunError::Create { name: name.clone(), error })?
            }
        };
        device.set_nonblocking(true).map_err(|error| TunError::Create { name: name.clone(), error })?;
        let index = netlink.link_index(name)?.ok_or_else(|| TunError::Create {
            name: name.clone(),
            error: io::Error::other("vanished after creation"),
        })?;
        let offload = device.tcp_gso();
        let tun = Self { device, name: name.clone(), index, netlink, offload };
        tun.netlink
            .configure(index, &config.addresses, config.mtu, &config.routes)
            .map_err(|error| TunError::Configure { name: name.clone(), error })?;
        info!(name, index, offload, mtu = config.mtu, addresses = ?config.addresses, routes = config.routes.len(), "TUN up");
        Ok(tun)
    }

    /// Give the configured device exactly these addresses (and routes), as `create` would
    /// have: addresses it had before and not now are removed.
    pub fn set_addresses(&self, addresses: &[(IpAddr, u8)], mtu: u16, routes: &[IpPrefix]) -> Result<(), TunError> {
        self.netlink
            .configure(self.index, addresses, mtu, routes)
            .map_err(|error| TunError::Configure { name: self.name.clone(), error })?;
        info!(name = self.name, ?addresses, routes = routes.len(), "TUN addresses");
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether reads and writes go through [`Tun::recv_multiple`] and [`Tun::send_multiple`].
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// One read, split into packets at `bufs[i][offset..offset + sizes[i]]`; returns how
    /// many (offload only; `raw` holds the read, at least 64 KiB and a virtio header).
    pub fn recv_multiple(
        &self,
        raw: &mut [u8],
        bufs: &mut [BytesMut],
        sizes: &mut [usize],
        offset: usize,
    ) -> io::Result<usize> {
        self.device.recv_multiple(raw, bufs, sizes, offset)
    }

    /// Write packets at `bufs[i][offset..]` (`offset` >= the virtio header), coalesced where
    /// they can be (offload only). Returns the bytes written.
    pub fn send_multiple(&self, gro: &mut GROTable, bufs: &mut [BytesMut], offset: usize) -> io::Result<usize> {
        self.device.send_multiple(gro, bufs, offset)
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
