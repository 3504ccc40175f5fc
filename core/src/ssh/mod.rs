//! SSH (RFC 4253/4252/4254 plus OpenSSH extensions) as sans-IO state machines, for the
//! server `meshd` runs on port 22 of the mesh address and for the client.
//!
//! Layers, bottom up: the wire types ([`wire`]), the identification exchange
//! ([`version`]), packet framing ([`packet`], [`cipher`]), key exchange ([`kexinit`],
//! [`kex`]), the transport with rekeying for both roles ([`transport`]), the connection
//! protocol ([`connection`], [`channel`], [`terminal`]); [`server`] and [`client`] put
//! them together with authentication and report [`event::SessionEvent`]s.

pub mod channel;
pub mod cipher;
pub mod client;
pub mod connection;
pub mod event;
pub mod kex;
pub mod kexinit;
pub mod packet;
pub mod server;
pub mod terminal;
pub mod transport;
pub mod validate;
pub mod version;
pub mod wire;

/// Message numbers (RFC 4250 section 4.1).
pub mod msg {
    pub const DISCONNECT: u8 = 1;
    pub const IGNORE: u8 = 2;
    pub const UNIMPLEMENTED: u8 = 3;
    pub const DEBUG: u8 = 4;
    pub const SERVICE_REQUEST: u8 = 5;
    pub const SERVICE_ACCEPT: u8 = 6;
    pub const EXT_INFO: u8 = 7;
    pub const KEXINIT: u8 = 20;
    pub const NEWKEYS: u8 = 21;
    pub const KEX_ECDH_INIT: u8 = 30;
    pub const KEX_ECDH_REPLY: u8 = 31;
    pub const USERAUTH_REQUEST: u8 = 50;
    pub const USERAUTH_FAILURE: u8 = 51;
    pub const USERAUTH_SUCCESS: u8 = 52;
    pub const USERAUTH_BANNER: u8 = 53;
    pub const GLOBAL_REQUEST: u8 = 80;
    pub const REQUEST_SUCCESS: u8 = 81;
    pub const REQUEST_FAILURE: u8 = 82;
    pub const CHANNEL_OPEN: u8 = 90;
    pub const CHANNEL_OPEN_CONFIRMATION: u8 = 91;
    pub const CHANNEL_OPEN_FAILURE: u8 = 92;
    pub const CHANNEL_WINDOW_ADJUST: u8 = 93;
    pub const CHANNEL_DATA: u8 = 94;
    pub const CHANNEL_EXTENDED_DATA: u8 = 95;
    pub const CHANNEL_EOF: u8 = 96;
    pub const CHANNEL_CLOSE: u8 = 97;
    pub const CHANNEL_REQUEST: u8 = 98;
    pub const CHANNEL_SUCCESS: u8 = 99;
    pub const CHANNEL_FAILURE: u8 = 100;
}

#[cfg(test)]
mod tests;
