//! IP packets as the node sees them: header parsing ([`packet`]), the packet filter with
//! its rules ([`filter`]) and connection tracking ([`flows`]).

pub mod build;
pub mod echo;
pub mod filter;
pub mod flows;
pub mod packet;

pub use filter::{Filter, FilterRule, PortRange};
pub use flows::{FlowKey, FlowTable, Origin};
pub use packet::{IcmpKind, PacketInfo, ParseError, Proto, TcpFlags};
