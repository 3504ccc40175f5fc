//! MagicDNS: the node answers names of the tailnet itself, at 100.100.100.100:53.
//!
//! [`MagicDns::answer`] takes one DNS message (as carried by TCP, without its length
//! prefix; [`tcp`] does the framing) and returns the response message;
//! [`MagicDns::answer_udp`] does the same within UDP's size limit (truncated with TC set
//! beyond it, so the client retries over TCP). Names come from the netmap:
//! `<node>` and `<node>.<tailnet domain>` resolve to the node's mesh addresses (A and
//! AAAA), mesh addresses resolve back (PTR); unknown names inside the domain or the mesh
//! address ranges get NXDOMAIN, anything else REFUSED (no forwarder yet). Messages are parsed
//! by `simple-dns`; a message that cannot be parsed gets FORMERR when its header is
//! readable and no answer otherwise.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::{RData, A, AAAA, PTR};
use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, OPCODE, QCLASS, QTYPE, RCODE, TYPE};
use thiserror::Error;

use crate::wireguard::IpPrefix;

/// Where MagicDNS listens.
pub const MAGIC_DNS_ADDR: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);
/// TTL of every answer: short, since the netmap changes.
pub const ANSWER_TTL: u32 = 600;
/// Largest response sent over UDP without EDNS (RFC 1035); longer ones are truncated (TC).
pub const UDP_RESPONSE_LIMIT: usize = 512;
/// Largest response sent over UDP whatever buffer a client's EDNS advertises: the size
/// that avoids IP fragmentation on any path (DNS Flag Day 2020).
pub const EDNS_RESPONSE_LIMIT: usize = 1232;

pub mod tcp;

/// Why no response can be made.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DnsError {
    #[error("not a DNS message (shorter than a header)")]
    NoHeader,
    #[error("is a response, not a query")]
    NotAQuery,
    #[error("cannot encode the response: {0}")]
    Encode(String),
}

/// The addresses of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostAddrs {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// The MagicDNS responder of one node.
#[derive(Clone, Debug)]
pub struct MagicDns {
    /// Lowercase, without the trailing dot (e.g. `tail.mesh`).
    domain: String,
    hosts: BTreeMap<String, HostAddrs>,
    names: BTreeMap<IpAddr, String>,
    /// Address ranges the mesh allocates from: reverse lookups inside them are ours.
    mesh_ranges: Vec<IpPrefix>,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The address a reverse-lookup name stands for (`4.3.2.1.in-addr.arpa`, nibbles of
/// `ip6.arpa`).
fn reverse_addr(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        for (i, p) in parts.iter().rev().enumerate() {
            octets[i] = p.parse().ok()?;
        }
        return Some(IpAddr::from(octets));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut bits = 0u128;
    for n in nibbles.iter().rev() {
        if n.len() != 1 {
            return None;
        }
        bits = (bits << 4) | u128::from(u8::from_str_radix(n, 16).ok()?);
    }
    Some(IpAddr::from(bits.to_be_bytes()))
}

impl MagicDns {
    /// A responder for `domain`, answering reverse lookups for `mesh_ranges`.
    pub fn new(domain: &str, mesh_ranges: Vec<IpPrefix>) -> Self {
        Self { domain: normalize(domain), hosts: BTreeMap::new(), names: BTreeMap::new(), mesh_ranges }
    }

    /// Replace the known hosts (from a new netmap). Names are single DNS labels.
    pub fn set_hosts<'a>(&mut self, hosts: impl IntoIterator<Item = (&'a str, HostAddrs)>) {
        self.hosts.clear();
        self.names.clear();
        for (name, addrs) in hosts {
            let name = normalize(name);
            let fqdn = format!("{name}.{}", self.domain);
            if let Some(v4) = addrs.v4 {
                self.names.insert(v4.into(), fqdn.clone());
            }
            if let Some(v6) = addrs.v6 {
                self.names.insert(v6.into(), fqdn);
            }
            self.hosts.insert(name, addrs);
        }
    }

    /// The response to one query message over TCP (no size limit but the message's own).
    pub fn answer(&self, query: &[u8]) -> Result<Vec<u8>, DnsError> {
        self.respond(query, false)
    }

    /// The response to one query datagram: at most [`UDP_RESPONSE_LIMIT`] bytes, or the
    /// buffer size the query's EDNS OPT record advertises (at most [`EDNS_RESPONSE_LIMIT`]).
    /// A longer one goes out truncated: TC set, the question kept, no records.
    pub fn answer_udp(&self, query: &[u8]) -> Result<Vec<u8>, DnsError> {
        self.respond(query, true)
    }

    fn respond(&self, query: &[u8], udp: bool) -> Result<Vec<u8>, DnsError> {
        let id = match query {
            [a, b, ..] if query.len() >= 12 => u16::from_be_bytes([*a, *b]),
            _ => return Err(DnsError::NoHeader),
        };
        if query[2] & 0x80 != 0 {
            return Err(DnsError::NotAQuery);
        }
        let Ok(packet) = Packet::parse(query) else {
            return Self::error_reply(id, RCODE::FormatError);
        };
        if packet.opcode() != OPCODE::StandardQuery {
            return Self::error_reply(id, RCODE::NotImplemented);
        }
        let [question] = packet.questions.as_slice() else {
            return Self::error_reply(id, RCODE::FormatError);
        };
        let mut reply = Packet::new_reply(id);
        if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
            reply.set_flags(PacketFlag::RECURSION_DESIRED);
        }
        reply.questions.push(question.clone());
        let name = normalize(&question.qname.to_string());
        let rcode = self.resolve(&name, question, &mut reply.answers);
        if rcode != RCODE::Refused {
            reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
        }
        *reply.rcode_mut() = rcode;
        let bytes = reply.build_bytes_vec().map_err(|e| DnsError::Encode(e.to_string()))?;
        if !udp || bytes.len() <= udp_limit(&packet) {
            return Ok(bytes);
        }
        reply.answers.clear();
        reply.name_servers.clear();
        reply.additional_records.clear();
        reply.set_flags(PacketFlag::TRUNCATION);
        reply.build_bytes_vec().map_err(|e| DnsError::Encode(e.to_string()))
    }

    /// Fill `answers` and return the response code for `name` (normalized).
    fn resolve<'a>(&self, name: &str, question: &Question<'a>, answers: &mut Vec<ResourceRecord<'a>>) -> RCODE {
        let wants = |t: TYPE| question.qtype == QTYPE::TYPE(t) || question.qtype == QTYPE::ANY;
        if question.qclass != QCLASS::CLASS(CLASS::IN) && question.qclass != QCLASS::ANY {
            return RCODE::Refused;
        }
        if let Some(addr) = reverse_addr(name) {
            return match self.names.get(&addr) {
                Some(fqdn) if wants(TYPE::PTR) => {
                    match Name::new(fqdn) {
                        Ok(target) => answers.push(ResourceRecord::new(
                            question.qname.clone(),
                            CLASS::IN,
                            ANSWER_TTL,
                            RData::PTR(PTR(target.into_owned())),
                        )),
                        Err(_) => return RCODE::ServerFailure,
                    }
                    RCODE::NoError
                }
                Some(_) => RCODE::NoError,
                None if self.mesh_ranges.iter().any(|r| r.contains(addr)) => RCODE::NameError,
                None => RCODE::Refused,
            };
        }
        let host = if let Some(label) = name.strip_suffix(&self.domain).and_then(|n| n.strip_suffix('.')) {
            Some(label)
        } else if name == self.domain {
            return RCODE::NoError;
        } else if !name.contains('.') {
            Some(name)
        } else {
            None
        };
        let Some(host) = host else { return RCODE::Refused };
        let Some(addrs) = self.hosts.get(host) else { return RCODE::NameError };
        if let Some(v4) = addrs.v4.filter(|_| wants(TYPE::A)) {
            answers.push(ResourceRecord::new(question.qname.clone(), CLASS::IN, ANSWER_TTL, RData::A(A::from(v4))));
        }
        if let Some(v6) = addrs.v6.filter(|_| wants(TYPE::AAAA)) {
            answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                ANSWER_TTL,
                RData::AAAA(AAAA::from(v6)),
            ));
        }
        RCODE::NoError
    }

    fn error_reply(id: u16, rcode: RCODE) -> Result<Vec<u8>, DnsError> {
        let mut reply = Packet::new_reply(id);
        *reply.rcode_mut() = rcode;
        reply.build_bytes_vec().map_err(|e| DnsError::Encode(e.to_string()))
    }
}

/// The largest UDP response `query`'s sender takes: 512 bytes without EDNS, else what it
/// advertises, never below 512 (RFC 6891 6.2.5) nor above [`EDNS_RESPONSE_LIMIT`].
fn udp_limit(query: &Packet) -> usize {
    query.opt().map_or(UDP_RESPONSE_LIMIT, |opt| {
        usize::from(opt.udp_packet_size).clamp(UDP_RESPONSE_LIMIT, EDNS_RESPONSE_LIMIT)
    })
}

#[cfg(test)]
mod tests;
