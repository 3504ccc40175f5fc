//! The policy after reading and checking: what every later stage (compile, tests,
//! the control server) works on. Every selector is classified and every name defined.

use std::collections::BTreeMap;

use super::alias::Alias;
use super::hujson::Pos;
use crate::ip::filter::PortRange;
use crate::ip::packet::Proto;
use crate::wireguard::IpPrefix;

/// A checked policy file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `group:x` -> its users.
    pub groups: BTreeMap<String, Vec<String>>,
    pub hosts: BTreeMap<String, IpPrefix>,
    /// `tag:x` -> who may assign it (users, groups, tags, `autogroup:admin|member`).
    pub tag_owners: BTreeMap<String, Vec<String>>,
    /// `acls` and `grants`, in file order (acls first).
    pub rules: Vec<NetRule>,
    /// `ssh`, in file order.
    pub ssh: Vec<SshRule>,
    pub auto_approvers: AutoApprovers,
    pub node_attrs: Vec<NodeAttr>,
    pub tests: Vec<AclTest>,
    pub ssh_tests: Vec<SshTest>,
    /// Things the file says that this system does not act on, each with its place.
    pub warnings: Vec<Warning>,
}

/// Where a rule came from, for messages (`acls[3]` at 12:5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `acls[3]`, `grants[0]`, `ssh[1]`.
    pub path: String,
    pub pos: Pos,
}

/// Traffic from `srcs` to `dsts` on `ports` over `protos` is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    pub srcs: Vec<Alias>,
    pub dsts: Vec<Alias>,
    pub ports: Vec<PortRange>,
    /// Empty means TCP, UDP and ICMP.
    pub protos: Vec<Proto>,
    pub origin: Origin,
}

/// `accept`, or `check` (the user must have re-authenticated within the period).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SshAction {
    Accept,
    Check,
}

/// How recent a check-mode authentication must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckPeriod {
    /// Re-authenticate for every login.
    Always,
    /// An approval lasts this many seconds.
    Seconds(u64),
}

impl CheckPeriod {
    /// Tailscale's default: 12 hours.
    pub const DEFAULT: CheckPeriod = CheckPeriod::Seconds(12 * 3600);
    /// The longest period accepted: one week.
    pub const MAX_SECONDS: u64 = 168 * 3600;
}

/// One entry of an ssh rule's `users`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SshUser {
    /// `root`.
    Root,
    /// `autogroup:nonroot`: the login name as asked, never uid 0.
    NonRoot,
    /// `localpart:*@domain`: each user of that domain as the local part of their name.
    Localpart { domain: String },
    /// A local account name.
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshRule {
    pub action: SshAction,
    pub srcs: Vec<Alias>,
    pub dsts: Vec<Alias>,
    pub users: Vec<SshUser>,
    /// Only meaningful for `check`.
    pub check_period: CheckPeriod,
    /// Environment variable name globs the client may set.
    pub accept_env: Vec<String>,
    /// `allowAgentForwarding`, `allowLocalPortForwarding`, `allowRemotePortForwarding`
    /// (this project's extension, named as Tailscale's SSH action fields; each defaults to
    /// true, as Tailscale's accept allows all three).
    pub forwarding: SshForwarding,
    pub origin: Origin,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoApprovers {
    /// A route -> who may advertise it without an admin's approval.
    pub routes: BTreeMap<IpPrefix, Vec<Alias>>,
    pub exit_node: Vec<Alias>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAttr {
    pub targets: Vec<Alias>,
    pub attrs: Vec<String>,
}

/// A `tests` entry: from `src`, each of `accept` must be allowed and each of `deny` not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclTest {
    pub src: Alias,
    /// Empty: the test's ports are checked for TCP (Tailscale's behaviour).
    pub protos: Vec<Proto>,
    pub accept: Vec<TestTarget>,
    pub deny: Vec<TestTarget>,
    pub origin: Origin,
}

/// `host:port` in a test, as written and classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestTarget {
    pub text: String,
    pub dst: Alias,
    pub port: u16,
}

/// An `sshTests` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTest {
    pub src: Alias,
    pub dsts: Vec<Alias>,
    pub accept: Vec<String>,
    pub check: Vec<String>,
    pub deny: Vec<String>,
    pub origin: Origin,
}

/// Something in the file the system reads but does not act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub pos: Pos,
    pub message: String,
}

/// The forwarding a rule's logins may use (all of it unless the policy's rule says
/// otherwise, as Tailscale's accept carries all three). A `check` login gets the same once
/// approved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SshForwarding {
    /// `auth-agent-req@openssh.com` (`ssh -A`).
    pub agent: bool,
    /// `direct-tcpip` (`ssh -L`, `-D`, `-W`).
    pub local: bool,
    /// `tcpip-forward` (`ssh -R`).
    pub remote: bool,
}

impl SshForwarding {
    pub const ALL: SshForwarding = SshForwarding { agent: true, local: true, remote: true };
    pub const NONE: SshForwarding = SshForwarding { agent: false, local: false, remote: false };
}
