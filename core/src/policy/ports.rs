//! Ports (`*`, `22`, `80,443`, `1000-2000`) and protocols (`tcp`, `6`, ...) of rules.

use crate::ip::filter::PortRange;
use crate::ip::packet::Proto;

/// Parses the port part of a destination. Port 0 and service names are errors.
pub(crate) fn parse_ports(text: &str) -> Result<Vec<PortRange>, String> {
    if text == "*" {
        return Ok(vec![PortRange::ALL]);
    }
    if text.is_empty() {
        return Err("missing ports (use \"*\" for every port)".into());
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        let range = match part.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (port(a, text)?, port(b, text)?);
                if first > last {
                    return Err(format!("port range {part:?} is backwards"));
                }
                PortRange { first, last }
            }
            None => PortRange::single(port(part, text)?),
        };
        out.push(range);
    }
    Ok(out)
}

fn port(text: &str, whole: &str) -> Result<u16, String> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} in {whole:?} is not a port number (names are not accepted)"));
    }
    match text.parse::<u16>() {
        Ok(0) => Err(format!("port 0 in {whole:?} is not a port")),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("port {text} in {whole:?} is above 65535")),
    }
}

/// IANA numbers of the protocol names the policy format knows.
const NAMES: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipv4", 4),
    ("ip-in-ip", 4),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("sctp", 132),
];

/// A protocol as named in a rule, with its IANA number kept for port checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NamedProto {
    pub number: u8,
}

impl NamedProto {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some((_, n)) = NAMES.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)) {
            return Ok(Self { number: *n });
        }
        if !text.is_empty() && text.len() <= 3 && text.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(number) = text.parse::<u8>() {
                return Ok(Self { number });
            }
        }
        Err(format!("unknown protocol {text:?} (a name such as tcp, udp, icmp, or a number 0-255)"))
    }

    /// Only TCP, UDP and SCTP have ports.
    pub fn has_ports(self) -> bool {
        matches!(self.number, 6 | 17 | 132)
    }

    /// The filter's protocol (ICMPv4 and ICMPv6 are one class there).
    pub fn proto(self) -> Proto {
        match self.number {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            1 | 58 => Proto::Icmp,
            n => Proto::Other(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forms() {
        assert_eq!(parse_ports("*"), Ok(vec![PortRange::ALL]));
        assert_eq!(parse_ports("22"), Ok(vec![PortRange::single(22)]));
        assert_eq!(
            parse_ports("80,443,8000-8999"),
            Ok(vec![PortRange::single(80), PortRange::single(443), PortRange { first: 8000, last: 8999 }])
        );
        for bad in ["0", "http", "", "1-0", "65536", "22,", "-5", "5-", "1,0", " 22"] {
            assert!(parse_ports(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn protocol_forms() {
        assert_eq!(NamedProto::parse("tcp").map(NamedProto::proto), Ok(Proto::Tcp));
        assert_eq!(NamedProto::parse("17").map(NamedProto::proto), Ok(Proto::Udp));
        assert_eq!(NamedProto::parse("ipv6-icmp").map(NamedProto::proto), Ok(Proto::Icmp));
        assert_eq!(NamedProto::parse("gre").map(NamedProto::proto), Ok(Proto::Other(47)));
        assert_eq!(NamedProto::parse("255").map(NamedProto::proto), Ok(Proto::Other(255)));
        assert!(NamedProto::parse("sctp").is_ok_and(NamedProto::has_ports));
        assert!(NamedProto::parse("esp").is_ok_and(|p| !p.has_ports()));
        for bad in ["256", "", "tcpp", "-1", "0x6"] {
            assert!(NamedProto::parse(bad).is_err(), "{bad:?}");
        }
    }
}
