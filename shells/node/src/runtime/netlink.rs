//! Link configuration over rtnetlink: addresses, MTU, link up, routes, and removing the
//! link. rtnetlink is asynchronous; a current-thread tokio runtime runs each request to
//! completion (configuration happens at start and stop, never on the data path).

use std::net::IpAddr;

use futures::TryStreamExt as _;
use mesh_core::wireguard::IpPrefix;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// Packets the kernel queues for the daemon to read from the TUN (its default of 500 drops
/// TCP ACKs while the loop is busy sealing a burst; wireguard-go sets 1000).
const TX_QUEUE_LEN: u32 = 1000;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("netlink: {what}: {error}")]
    Request { what: String, error: rtnetlink::Error },
    #[error("netlink: {0}")]
    Route(String),
}

/// A netlink connection.
#[derive(Debug)]
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(NetlinkError::Socket)?;
        let (connection, handle) = rt
            .block_on(async { rtnetlink::new_connection().map(|(connection, handle, _messages)| (connection, handle)) })
            .map_err(NetlinkError::Socket)?;
        rt.spawn(connection);
        Ok(Self { rt, handle })
    }

    /// The index of the link named `name`, if there is one.
    pub fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let handle = self.handle.clone();
        let result = self
            .rt
            .block_on(async move { handle.link().get().match_name(name.to_string()).execute().try_next().await });
        match result {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            // The kernel answers ENODEV for a name it does not know.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -rustix::io::Errno::NODEV.raw_os_error() => {
                Ok(None)
            }
            Err(error) => Err(NetlinkError::Request { what: format!("look up link {name}"), error }),
        }
    }

    /// Give link `index` exactly these addresses (others it has are removed, IPv6
    /// link-local ones aside; present ones are kept), its MTU and queue length, bring it
    /// up, and route `routes` to it. Safe to call again with the same arguments.
    pub fn configure(
        &self,
        index: u32,
        addresses: &[(IpAddr, u8)],
        mtu: u16,
        routes: &[IpPrefix],
    ) -> Result<(), NetlinkError> {
        let handle = self.handle.clone();
        self.rt.block_on(async move {
            let request = |what: String| move |error| NetlinkError::Request { what, error };
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .mtu(u32::from(mtu))
                        .append_extra_attribute(LinkAttribute::TxQueueLen(TX_QUEUE_LEN))
                        .build(),
                )
                .execute()
                .await
                .map_err(request(format!("set MTU {mtu}")))?;
            let mut existing = handle.address().get().set_link_index_filter(index).execute();
            let mut stale = Vec::new();
            while let Some(message) = existing.try_next().await.map_err(request("list addresses".into()))? {
                let addr = message.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(addr) => Some(*addr),
                    _ => None,
                });
                let Some(addr) = addr else { continue };
                let link_local = matches!(addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
                if !link_local && !addresses.contains(&(addr, message.header.prefix_len)) {
                    stale.push((addr, message));
                }
            }
            for (addr, message) in stale {
                handle.address().del(message).execute().await.map_err(request(format!("remove address {addr}")))?;
            }
            for &(addr, len) in addresses {
                handle
                    .address()
                    .add(index, addr, len)
                    .replace()
                    .execute()
                    .await
                    .map_err(request(format!("add address {addr}/{len}")))?;
            }
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(request("link up".into()))?;
            for route in routes {
                let message = RouteMessageBuilder::<IpAddr>::new()
                    .destination_prefix(route.addr(), route.len())
                    .map_err(|e| NetlinkError::Route(e.to_string()))?
                    .output_interface(index)
                    .build();
                // Replace: a route the address's own subnet already gives is not an error.
                handle.route().add(message).replace().execute().await.map_err(request(format!(
                    "add route {}/{}",
                    route.addr(),
                    route.len()
                )))?;
            }
            Ok(())
        })
    }

    /// Remove link `index` (its addresses and routes go with it).
    pub fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        let handle = self.handle.clone();
        self.rt
            .block_on(async move { handle.link().del(index).execute().await })
            .map_err(|error| NetlinkError::Request { what: format!("delete link {index}"), error })
    }
}
