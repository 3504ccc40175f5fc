//! The wg-quick file format: `[Interface]` and `[Peer]` sections of `Key = Value` lines,
//! `#` comments, keys and section names case-insensitive (as `wg` and `wg-quick` read them).
//!
//! The input is hostile: the text is bounded ([`MAX_FILE_LEN`], [`MAX_LINE_LEN`],
//! [`MAX_PEERS`], [`MAX_ALLOWED_IPS`]) and every error names its line.

use std::net::{IpAddr, SocketAddr};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mesh_core::wireguard::{IpPrefix, PresharedKey, PrivateKey, PublicKey};
use thiserror::Error;

use super::{Endpoint, Interface, InterfaceAddress, Peer, WgQuick};

/// Longest file read (a wg-quick file with thousands of peers stays far below).
pub const MAX_FILE_LEN: usize = 4 << 20;
/// Longest line.
pub const MAX_LINE_LEN: usize = 64 << 10;
/// Most `[Peer]` sections.
pub const MAX_PEERS: usize = 10_000;
/// Most allowed IPs over all peers, and most interface addresses.
pub const MAX_ALLOWED_IPS: usize = 100_000;
/// wg-quick keys that configure the host around the tunnel: accepted and not acted on
/// (hooks are shell commands, which meshd never runs).
const IGNORED_INTERFACE_KEYS: [&str; 8] =
    ["dns", "table", "preup", "postup", "predown", "postdown", "saveconfig", "fwmark"];

/// What is wrong, and on which line (1-based).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseErrorKind {
    #[error("file longer than {MAX_FILE_LEN} bytes")]
    FileTooLong,
    #[error("line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("unknown section [{0}] (expected [Interface] or [Peer])")]
    UnknownSection(String),
    #[error("malformed section header")]
    BadSectionHeader,
    #[error("a second [Interface] section")]
    SecondInterface,
    #[error("`{0}` outside of a section")]
    OutsideSection(String),
    #[error("expected `Key = Value`")]
    NoEquals,
    #[error("unknown key `{key}` in [{section}]")]
    UnknownKey { key: String, section: &'static str },
    #[error("`{0}` given twice")]
    Duplicate(&'static str),
    #[error("`{key}`: {message}")]
    BadValue { key: &'static str, message: String },
    #[error("[Interface] has no PrivateKey")]
    MissingPrivateKey,
    #[error("[Peer] has no PublicKey")]
    MissingPublicKey,
    #[error("no [Interface] section")]
    MissingInterface,
    #[error("more than {MAX_PEERS} peers")]
    TooManyPeers,
    #[error("more than {MAX_ALLOWED_IPS} addresses")]
    TooManyAddresses,
    #[error("peer {0} appears twice")]
    DuplicatePeer(String),
}

fn at(line: usize, kind: ParseErrorKind) -> ParseError {
    ParseError { line, kind }
}

fn bad(key: &'static str, message: impl Into<String>) -> ParseErrorKind {
    ParseErrorKind::BadValue { key, message: message.into() }
}

/// A section being read, with the line of its header.
enum Section {
    None,
    Interface(usize, InterfaceDraft),
    Peer(usize, PeerDraft),
}

#[derive(Default)]
struct InterfaceDraft {
    private_key: Option<PrivateKey>,
    listen_port: Option<u16>,
    addresses: Vec<InterfaceAddress>,
    mtu: Option<u16>,
    ignored: Vec<String>,
}

#[derive(Default)]
struct PeerDraft {
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    endpoint: Option<Endpoint>,
    allowed_ips: Vec<IpPrefix>,
    persistent_keepalive: Option<Option<u16>>,
}

/// Parse a whole wg-quick file.
pub fn parse(bytes: &[u8]) -> Result<WgQuick, ParseError> {
    if bytes.len() > MAX_FILE_LEN {
        return Err(at(1, ParseErrorKind::FileTooLong));
    }
    let mut parser = Parser { interface: None, peers: Vec::new(), addresses: 0 };
    let mut section = Section::None;
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        if raw.len() > MAX_LINE_LEN {
            return Err(at(line, ParseErrorKind::LineTooLong));
        }
        let text = std::str::from_utf8(raw).map_err(|_| at(line, ParseErrorKind::NotUtf8))?;
        let text = text.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        if let Some(rest) = text.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or(at(line, ParseErrorKind::BadSectionHeader))?.trim();
            let next = if name.eq_ignore_ascii_case("interface") {
                if parser.interface.is_some() || matches!(section, Section::Interface(..)) {
                    return Err(at(line, ParseErrorKind::SecondInterface));
                }
                Section::Interface(line, InterfaceDraft::default())
            } else if name.eq_ignore_ascii_case("peer") {
                Section::Peer(line, PeerDraft::default())
            } else {
                return Err(at(line, ParseErrorKind::UnknownSection(name.chars().take(64).collect())));
            };
            parser.finish(std::mem::replace(&mut section, next))?;
            continue;
        }
        let (key, value) = text.split_once('=').ok_or(at(line, ParseErrorKind::NoEquals))?;
        let (key, value) = (key.trim(), value.trim());
        let lower = key.to_ascii_lowercase();
        let result = match &mut section {
            Section::None => Err(ParseErrorKind::OutsideSection(key.chars().take(64).collect())),
            Section::Interface(_, draft) => interface_key(draft, &lower, key, value),
            Section::Peer(_, draft) => peer_key(draft, &lower, key, value, &mut parser.addresses),
        };
        result.map_err(|kind| at(line, kind))?;
    }
    parser.finish(section)?;
    let interface = parser.interface.ok_or(at(1, ParseErrorKind::MissingInterface))?;
    Ok(WgQuick { interface, peers: parser.peers })
}

struct Parser {
    interface: Option<Interface>,
    peers: Vec<Peer>,
    /// Addresses read so far (interface and allowed IPs), against [`MAX_ALLOWED_IPS`].
    addresses: usize,
}

impl Parser {
    /// Check a finished section and keep it.
    fn finish(&mut self, section: Section) -> Result<(), ParseError> {
        match section {
            Section::None => Ok(()),
            Section::Interface(line, d) => {
                let private_key = d.private_key.ok_or(at(line, ParseErrorKind::MissingPrivateKey))?;
                self.interface = Some(Interface {
                    private_key,
                    listen_port: d.listen_port,
                    addresses: d.addresses,
                    mtu: d.mtu,
                    ignored: d.ignored,
                });
                Ok(())
            }
            Section::Peer(line, d) => {
                let public_key = d.public_key.ok_or(at(line, ParseErrorKind::MissingPublicKey))?;
                if self.peers.len() >= MAX_PEERS {
                    return Err(at(line, ParseErrorKind::TooManyPeers));
                }
                if self.peers.iter().any(|p| p.public_key == public_key) {
                    return Err(at(line, ParseErrorKind::DuplicatePeer(STANDARD.encode(public_key.0))));
                }
                self.peers.push(Peer {
                    public_key,
                    preshared_key: d.preshared_key,
                    endpoint: d.endpoint,
                    allowed_ips: d.allowed_ips,
                    persistent_keepalive: d.persistent_keepalive.flatten(),
                });
                Ok(())
            }
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), ParseErrorKind> {
    if slot.is_some() {
        return Err(ParseErrorKind::Duplicate(key));
    }
    *slot = Some(value);
    Ok(())
}

fn interface_key(d: &mut InterfaceDraft, lower: &str, key: &str, value: &str) -> Result<(), ParseErrorKind> {
    match lower {
        "privatekey" => set_once(&mut d.private_key, "PrivateKey", PrivateKey::from_bytes(key32("PrivateKey", value)?)),
        "listenport" => {
            let port = value.parse::<u16>().map_err(|_| bad("ListenPort", "expected a port number (0-65535)"))?;
            set_once(&mut d.listen_port, "ListenPort", port)
        }
        "mtu" => {
            let mtu = value.parse::<u16>().map_err(|_| bad("MTU", "expected a number"))?;
            if !(1280..=9000).contains(&mtu) {
                return Err(bad("MTU", "must be between 1280 and 9000"));
            }
            set_once(&mut d.mtu, "MTU", mtu)
        }
        "address" => {
            for item in list(value) {
                if d.addresses.len() >= MAX_ALLOWED_IPS {
                    return Err(ParseErrorKind::TooManyAddresses);
                }
                let (addr, prefix_len) = prefix("Address", item)?;
                d.addresses.push(InterfaceAddress { addr, prefix_len });
            }
            Ok(())
        }
        _ if IGNORED_INTERFACE_KEYS.contains(&lower) => {
            d.ignored.push(key.to_string());
            Ok(())
        }
        _ => Err(ParseErrorKind::UnknownKey { key: key.chars().take(64).collect(), section: "Interface" }),
    }
}

fn peer_key(d: &mut PeerDraft, lower: &str, key: &str, value: &str, count: &mut usize) -> Result<(), ParseErrorKind> {
    match lower {
        "publickey" => set_once(&mut d.public_key, "PublicKey", PublicKey(key32("PublicKey", value)?)),
        "presharedkey" => {
            set_once(&mut d.preshared_key, "PresharedKey", PresharedKey::from_bytes(key32("PresharedKey", value)?))
        }
        "endpoint" => set_once(&mut d.endpoint, "Endpoint", endpoint(value)?),
        "allowedips" => {
            for item in list(value) {
                if *count >= MAX_ALLOWED_IPS {
                    return Err(ParseErrorKind::TooManyAddresses);
                }
                *count += 1;
                let (addr, len) = prefix("AllowedIPs", item)?;
                let prefix = IpPrefix::new(addr, len).map_err(|e| bad("AllowedIPs", e.to_string()))?;
                d.allowed_ips.push(prefix);
            }
            Ok(())
        }
        "persistentkeepalive" => {
            let interval = if value.eq_ignore_ascii_case("off") {
                None
            } else {
                let secs = value
                    .parse::<u16>()
                    .map_err(|_| bad("PersistentKeepalive", "expected seconds (0-65535) or `off`"))?;
                (secs != 0).then_some(secs)
            };
            set_once(&mut d.persistent_keepalive, "PersistentKeepalive", interval)
        }
        _ => Err(ParseErrorKind::UnknownKey { key: key.chars().take(64).collect(), section: "Peer" }),
    }
}

/// A comma-separated list, empty items skipped.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A 32-byte key in standard base64 (44 characters).
fn key32(key: &'static str, value: &str) -> Result<[u8; 32], ParseErrorKind> {
    if value.len() != 44 {
        return Err(bad(key, "expected 32 bytes in base64 (44 characters)"));
    }
    let mut out = [0u8; 33];
    match STANDARD.decode_slice(value, &mut out) {
        Ok(32) => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&out[..32]);
            Ok(k)
        }
        _ => Err(bad(key, "expected 32 bytes in base64 (44 characters)")),
    }
}

/// `addr` or `addr/len` (a bare address is a host prefix).
fn prefix(key: &'static str, item: &str) -> Result<(IpAddr, u8), ParseErrorKind> {
    let (addr, len) = match item.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (item, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad(key, format!("`{}` is not an IP address", clip(addr))))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(l) if l <= max => l,
            _ => return Err(bad(key, format!("`{}` is not a prefix length for {addr}", clip(l)))),
        },
    };
    Ok((addr, len))
}

/// `ip:port`, `[ipv6]:port` or `host:port`.
fn endpoint(value: &str) -> Result<Endpoint, ParseErrorKind> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(Endpoint::Addr(addr));
    }
    let (host, port) = value.rsplit_once(':').ok_or(bad("Endpoint", "expected host:port"))?;
    let port = port.parse::<u16>().map_err(|_| bad("Endpoint", "expected host:port"))?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid_host {
        return Err(bad("Endpoint", format!("`{}` is neither an address nor a host name", clip(host))));
    }
    Ok(Endpoint::Host { host: host.to_string(), port })
}

/// At most 64 characters of a value, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}
