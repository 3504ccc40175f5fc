//! The daemon's local API (`meshctl` talks to it): line-delimited JSON on a Unix socket,
//! callers checked by peer credentials. [`protocol`] holds the messages, [`server`] the
//! listener the runtime's loop drives, [`client`] the blocking client `meshctl` uses.

pub mod client;
pub mod protocol;
pub mod server;

pub use protocol::{PeerStatus, PingReport, Request, Response, Status, MAX_REQUEST};
pub use server::{LocalApi, LocalApiError};
