//! Selectors: the names a policy uses for sets of nodes and addresses (`alice@example.com`,
//! `group:eng`, `tag:web`, host aliases, CIDRs, `*`, autogroups), and where each may appear.

use std::fmt;
use std::net::IpAddr;

use crate::wireguard::IpPrefix;

/// One selector as written, classified. Host aliases are resolved to their prefix when
/// parsed, but keep their name for messages and tests.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alias {
    /// `alice@example.com`, or `alice@` for a user without a domain (headscale's form).
    User(String),
    /// `group:eng`, the whole name.
    Group(String),
    /// `tag:web`, the whole name.
    Tag(String),
    /// A name from `hosts` and the prefix it stands for.
    Host(String, IpPrefix),
    /// An address or CIDR.
    Prefix(IpPrefix),
    /// `*`: every node (as a source: every address).
    All,
    /// `autogroup:member`: every node owned by a user (not tagged).
    Member,
    /// `autogroup:tagged`: every tagged node.
    Tagged,
    /// `autogroup:self`: the source user's own nodes (destinations only).
    SelfNodes,
    /// `autogroup:internet`: the internet through exit nodes (destinations only).
    Internet,
    /// `autogroup:danger-all`: any address at all, inside the tailnet or not (sources only).
    DangerAll,
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alias::User(s) | Alias::Group(s) | Alias::Tag(s) | Alias::Host(s, _) => f.write_str(s),
            Alias::Prefix(p) if p.len() == if p.addr().is_ipv4() { 32 } else { 128 } => write!(f, "{}", p.addr()),
            Alias::Prefix(p) => write!(f, "{p}"),
            Alias::All => f.write_str("*"),
            Alias::Member => f.write_str("autogroup:member"),
            Alias::Tagged => f.write_str("autogroup:tagged"),
            Alias::SelfNodes => f.write_str("autogroup:self"),
            Alias::Internet => f.write_str("autogroup:internet"),
            Alias::DangerAll => f.write_str("autogroup:danger-all"),
        }
    }
}

/// Where a selector is used: each place allows a different subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// `acls[].src`, `grants[].src`.
    Src,
    /// `acls[].dst`, `grants[].dst`.
    Dst,
    /// `ssh[].src`.
    SshSrc,
    /// `ssh[].dst`.
    SshDst,
    /// `tests[].src`, `sshTests[].src`: one identity.
    TestSrc,
    /// `tests[].accept`/`deny` hosts and `sshTests[].dst`.
    TestDst,
}

/// Looks up host aliases while parsing.
pub(crate) trait Hosts {
    fn host(&self, name: &str) -> Option<IpPrefix>;
}

/// Classifies `text` and checks that it may appear at `place`.
pub(crate) fn parse(text: &str, place: Place, hosts: &dyn Hosts) -> Result<Alias, String> {
    let alias = classify(text, hosts)?;
    let allowed = match (&alias, place) {
        (Alias::SelfNodes, Place::Dst | Place::SshDst | Place::TestDst) => true,
        (Alias::SelfNodes, _) => return Err(format!("{text} may only be used as a destination")),
        (Alias::Internet, Place::Dst) => true,
        (Alias::Internet, _) => return Err(format!("{text} may only be used as an acl or grant destination")),
        (Alias::DangerAll, Place::Src) => true,
        (Alias::DangerAll, _) => return Err(format!("{text} may only be used as an acl or grant source")),
        (_, Place::Src | Place::Dst) => true,
        (Alias::User(_) | Alias::Group(_) | Alias::Tag(_) | Alias::Member | Alias::Tagged, Place::SshSrc) => true,
        (_, Place::SshSrc) => false,
        (Alias::Tag(_) | Alias::User(_), Place::SshDst) => true,
        (Alias::All, Place::SshDst) => {
            return Err("ssh destinations cannot be \"*\"; name tags or autogroup:self".into())
        }
        (Alias::Host(..) | Alias::Prefix(_), Place::SshDst) => {
            return Err(format!("ssh destinations cannot be hosts or addresses ({text}); name tags or autogroup:self"))
        }
        (_, Place::SshDst) => false,
        (Alias::User(_) | Alias::Group(_) | Alias::Tag(_) | Alias::Host(..) | Alias::Prefix(_), Place::TestSrc) => true,
        (_, Place::TestSrc) => false,
        (Alias::User(_) | Alias::Tag(_) | Alias::Host(..) | Alias::Prefix(_), Place::TestDst) => true,
        (_, Place::TestDst) => false,
    };
    if allowed {
        Ok(alias)
    } else {
        Err(format!("{text} cannot be used here"))
    }
}

fn classify(text: &str, hosts: &dyn Hosts) -> Result<Alias, String> {
    if text.is_empty() {
        return Err("empty selector".into());
    }
    if text == "*" {
        return Ok(Alias::All);
    }
    if let Some(name) = text.strip_prefix("autogroup:") {
        return match name {
            "member" => Ok(Alias::Member),
            "tagged" => Ok(Alias::Tagged),
            "self" => Ok(Alias::SelfNodes),
            "internet" => Ok(Alias::Internet),
            "danger-all" => Ok(Alias::DangerAll),
            "nonroot" => Err("autogroup:nonroot may only be used in ssh users".into()),
            _ => Err(format!("unknown autogroup {text:?} (known: member, tagged, self, internet, danger-all)")),
        };
    }
    if text.starts_with("group:") {
        check_group_name(text)?;
        return Ok(Alias::Group(text.to_string()));
    }
    if text.starts_with("tag:") {
        check_tag_name(text)?;
        return Ok(Alias::Tag(text.to_string()));
    }
    if text.contains('@') {
        check_user_name(text)?;
        return Ok(Alias::User(text.to_string()));
    }
    if let Some(prefix) = hosts.host(text) {
        return Ok(Alias::Host(text.to_string(), prefix));
    }
    parse_prefix(text)
        .map(Alias::Prefix)
        .map_err(|_| format!("{text:?} is not a user, group, tag, host alias or address"))
}

/// An address or CIDR as the policy writes them.
pub(crate) fn parse_prefix(text: &str) -> Result<IpPrefix, String> {
    match text.split_once('/') {
        Some((addr, len)) => {
            let addr: IpAddr = addr.parse().map_err(|_| format!("{text:?} is not a CIDR"))?;
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
                return Err(format!("{text:?} has a bad prefix length"));
            }
            let len: u8 = len.parse().map_err(|_| format!("{text:?} has a bad prefix length"))?;
            IpPrefix::new(addr, len).map_err(|e| format!("{text:?}: {e}"))
        }
        None => text.parse::<IpAddr>().map(IpPrefix::host).map_err(|_| format!("{text:?} is not an address")),
    }
}

pub(crate) fn check_tag_name(text: &str) -> Result<(), String> {
    let name = text.strip_prefix("tag:").unwrap_or(text);
    let mut chars = name.chars();
    let good = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if good && name.len() <= 63 {
        Ok(())
    } else {
        Err(format!("{text:?} is not a valid tag (tag:<letter>[letters, digits, - or _], at most 63)"))
    }
}

pub(crate) fn check_group_name(text: &str) -> Result<(), String> {
    let name = text.strip_prefix("group:").unwrap_or(text);
    let good = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if good {
        Ok(())
    } else {
        Err(format!("{text:?} is not a valid group name"))
    }
}

pub(crate) fn check_user_name(text: &str) -> Result<(), String> {
    let Some((local, domain)) = text.split_once('@') else {
        return Err(format!("{text:?} is not a user (user@domain)"));
    };
    let good = !local.is_empty()
        && text.len() <= 256
        && !domain.contains('@')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | ',' | '*'));
    if good {
        Ok(())
    } else {
        Err(format!("{text:?} is not a valid user (user@domain)"))
    }
}

/// Whether a policy user name (`alice@example.com`, `alice@`) names the account `user`.
///
/// `alice@` (no domain) matches an account named `alice` or `alice@`.
pub fn user_matches(selector: &str, user: &str) -> bool {
    selector == user || selector.strip_suffix('@').is_some_and(|bare| bare == user)
}
