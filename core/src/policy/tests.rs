//! Policy tests: every selector, port and protocol form compiled for a small tailnet and
//! checked through the real packet filter; SSH rules; visibility; the file's own tests;
//! and malformed files, each rejected at the right line.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::ip::filter::Filter;
use crate::ip::packet::{IcmpKind, PacketInfo, Proto, TcpFlags};
use crate::wireguard::IpPrefix;

fn parse(text: &str) -> Policy {
    Policy::parse("policy.hujson", text).unwrap_or_else(|e| panic!("{e}"))
}

fn reject(text: &str) -> PolicyError {
    match Policy::parse("policy.hujson", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

fn prefix(s: &str) -> IpPrefix {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e:?}"))
}

/// The test tailnet. Index order matters for the helpers below.
fn tailnet() -> Vec<NodeInfo> {
    let node = |id: u64, name: &str, user: &str, tags: &[&str], last: u8, routes: &[&str]| NodeInfo {
        id: NodeId(id),
        name: name.into(),
        user: user.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        addresses: vec![
            IpAddr::from([100, 64, 0, last]),
            IpAddr::from([0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, u16::from(last)]),
        ],
        routes: routes.iter().map(|r| prefix(r)).collect(),
        idp_groups: vec![],
    };
    vec![
        node(1, "alice-laptop", "alice@example.com", &[], 1, &[]),
        node(2, "alice-phone", "alice@example.com", &[], 2, &[]),
        node(3, "bob-desktop", "bob@example.com", &[], 3, &[]),
        node(4, "carol-laptop", "carol@other.org", &[], 4, &[]),
        node(10, "web", "alice@example.com", &["tag:web"], 10, &[]),
        node(11, "db", "bob@example.com", &["tag:db"], 11, &[]),
        node(12, "router", "bob@example.com", &["tag:router"], 12, &["192.168.1.0/24"]),
        node(13, "exit", "bob@example.com", &["tag:exit"], 13, &["0.0.0.0/0", "::/0"]),
    ]
}

fn index(nodes: &[NodeInfo], name: &str) -> usize {
    nodes.iter().position(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
}

/// A policy with the tailnet's definitions and the given `acls`/`grants`/`ssh` body.
fn with_defs(body: &str) -> String {
    format!(
        r#"{{
  "groups": {{"group:eng": ["alice@example.com", "bob@example.com"], "group:empty": []}},
  "hosts": {{"web-host": "100.64.0.10", "lan": "192.168.1.0/24"}},
  "tagOwners": {{
    "tag:web": ["alice@example.com"], "tag:db": ["group:eng"], "tag:router": ["tag:db"],
    "tag:exit": ["autogroup:admin"],
  }},
  {body}
}}"#
    )
}

struct Net {
    nodes: Vec<NodeInfo>,
    compiled: Compiled,
}

impl Net {
    fn new(policy: &str) -> Self {
        let nodes = tailnet();
        let compiled = compile(&parse(policy), &nodes);
        Self { nodes, compiled }
    }

    fn filter(&self, name: &str) -> Filter {
        Filter::new((*self.compiled.nodes[index(&self.nodes, name)].filter).clone())
    }

    fn v4(&self, name: &str) -> IpAddr {
        self.nodes[index(&self.nodes, name)].addresses[0]
    }

    /// Whether a new flow from `from` to `to` on `proto`/`port` passes `to`'s filter.
    fn reaches(&self, from: &str, to: &str, proto: Proto, port: u16) -> bool {
        self.reaches_addr(self.v4(from), to, self.v4(to), proto, port)
    }

    fn reaches_addr(&self, src: IpAddr, node: &str, dst: IpAddr, proto: Proto, port: u16) -> bool {
        let info = PacketInfo {
            src,
            dst,
            proto,
            src_port: 40000,
            dst_port: port,
            tcp: TcpFlags { syn: proto == Proto::Tcp, ..TcpFlags::default() },
            icmp: (proto == Proto::Icmp).then_some(IcmpKind::Error),
            total_len: 60,
        };
        self.filter(node).allows(&info)
    }

    fn tcp(&self, from: &str, to: &str, port: u16) -> bool {
        self.reaches(from, to, Proto::Tcp, port)
    }

    fn peers(&self, name: &str) -> Vec<String> {
        let p = &self.compiled.nodes[index(&self.nodes, name)];
        p.peers().into_iter().map(|i| self.nodes[i].name.clone()).collect()
    }

    fn ssh(&self, name: &str) -> &[NodeSshRule] {
        &self.compiled.nodes[index(&self.nodes, name)].ssh
    }

    fn ids(&self, names: &[&str]) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = names.iter().map(|n| self.nodes[index(&self.nodes, n)].id).collect();
        ids.sort();
        ids
    }
}

fn acl(src: &str, dst: &str) -> String {
    with_defs(&format!(r#""acls": [{{"action": "accept", "src": [{src}], "dst": [{dst}]}}]"#))
}

/// (from, to, TCP port, allowed).
type Checks<'a> = &'a [(&'a str, &'a str, u16, bool)];

#[test]
fn every_selector_form_reaches_exactly_what_it_names() {
    let cases: &[(&str, &str, Checks)] = &[
        (
            r#""alice@example.com""#,
            r#""tag:web:443""#,
            &[
                ("alice-laptop", "web", 443, true),
                ("alice-phone", "web", 443, true),
                ("bob-desktop", "web", 443, false),
                ("alice-laptop", "web", 80, false),
                ("alice-laptop", "db", 443, false),
            ],
        ),
        (
            r#""group:eng""#,
            r#""tag:db:5432""#,
            &[
                ("alice-laptop", "db", 5432, true),
                ("bob-desktop", "db", 5432, true),
                ("carol-laptop", "db", 5432, false),
            ],
        ),
        // A tagged node is not its user's: alice's tagged web server is not "alice".
        (
            r#""alice@example.com""#,
            r#""alice@example.com:22""#,
            &[("web", "alice-laptop", 22, false), ("alice-phone", "alice-laptop", 22, true)],
        ),
        (r#""tag:web""#, r#""tag:db:5432""#, &[("web", "db", 5432, true), ("alice-laptop", "db", 5432, false)]),
        (r#""web-host""#, r#""tag:db:*""#, &[("web", "db", 1, true), ("router", "db", 1, false)]),
        (
            r#""100.64.0.0/30""#,
            r#""tag:db:*""#,
            &[("alice-laptop", "db", 9, true), ("bob-desktop", "db", 9, true), ("carol-laptop", "db", 9, false)],
        ),
        (
            r#""100.64.0.4""#,
            r#""web-host:80""#,
            &[("carol-laptop", "web", 80, true), ("bob-desktop", "web", 80, false)],
        ),
        (
            r#""*""#,
            r#""tag:web:80,443""#,
            &[("carol-laptop", "web", 80, true), ("db", "web", 443, true), ("db", "web", 81, false)],
        ),
        (
            r#""autogroup:member""#,
            r#""tag:web:8000-8999""#,
            &[("carol-laptop", "web", 8500, true), ("db", "web", 8500, false), ("carol-laptop", "web", 9000, false)],
        ),
        (r#""autogroup:tagged""#, r#""tag:web:*""#, &[("db", "web", 1, true), ("alice-laptop", "web", 1, false)]),
        (
            r#""autogroup:member""#,
            r#""autogroup:member:22""#,
            &[
                ("carol-laptop", "alice-laptop", 22, true),
                ("web", "alice-laptop", 22, false),
                ("alice-laptop", "web", 22, false),
            ],
        ),
        (
            r#""autogroup:member""#,
            r#""autogroup:tagged:22""#,
            &[("carol-laptop", "web", 22, true), ("carol-laptop", "bob-desktop", 22, false)],
        ),
        (
            r#""group:eng""#,
            r#""autogroup:self:*""#,
            &[
                ("alice-laptop", "alice-phone", 1, true),
                ("alice-laptop", "bob-desktop", 1, false),
                ("carol-laptop", "carol-laptop", 1, false),
            ],
        ),
        (r#""autogroup:danger-all""#, r#""tag:web:443""#, &[("carol-laptop", "web", 443, true)]),
        (
            r#""*""#,
            r#""*:22""#,
            &[("carol-laptop", "db", 22, true), ("web", "alice-phone", 22, true), ("web", "alice-phone", 23, false)],
        ),
        (r#""group:empty""#, r#""*:*""#, &[("alice-laptop", "db", 22, false)]),
    ];
    for (src, dst, checks) in cases {
        let net = Net::new(&acl(src, dst));
        for (from, to, port, allowed) in *checks {
            assert_eq!(net.tcp(from, to, *port), *allowed, "src {src} dst {dst}: {from} -> {to}:{port}");
        }
    }
}

#[test]
fn address_destinations_reach_subnet_routers_and_the_internet_exit_nodes() {
    let net = Net::new(&acl(r#""alice@example.com""#, r#""lan:22", "autogroup:internet:443""#));
    let lan_host = IpAddr::from([192, 168, 1, 7]);
    let alice = net.v4("alice-laptop");
    assert!(net.reaches_addr(alice, "router", lan_host, Proto::Tcp, 22));
    assert!(!net.reaches_addr(alice, "router", lan_host, Proto::Tcp, 23));
    assert!(!net.reaches_addr(alice, "router", net.v4("router"), Proto::Tcp, 22), "the router itself is not in lan");
    assert!(net.reaches_addr(alice, "exit", IpAddr::from([1, 1, 1, 1]), Proto::Tcp, 443));
    assert!(net.reaches_addr(alice, "exit", IpAddr::from([223, 255, 255, 254]), Proto::Tcp, 443));
    let alice6 = net.nodes[index(&net.nodes, "alice-laptop")].addresses.iter().copied().find(IpAddr::is_ipv6);
    let alice6 = alice6.unwrap_or(alice);
    assert!(net.reaches_addr(alice6, "exit", "2606:4700::1111".parse().unwrap_or(alice), Proto::Tcp, 443));
    assert!(!net.reaches_addr(alice, "web", IpAddr::from([1, 1, 1, 1]), Proto::Tcp, 443));
    // The internet is not the tailnet (the exit node itself stays closed), nor private or
    // link-local space.
    assert!(!net.reaches_addr(alice, "exit", net.v4("exit"), Proto::Tcp, 443), "the exit node itself");
    for private in
        [[10, 1, 2, 3], [172, 16, 0, 1], [172, 31, 255, 255], [192, 168, 1, 1], [169, 254, 1, 1], [127, 0, 0, 1]]
    {
        assert!(!net.reaches_addr(alice, "exit", IpAddr::from(private), Proto::Tcp, 443), "{private:?}");
    }
    assert!(net.reaches_addr(alice, "exit", IpAddr::from([172, 32, 0, 1]), Proto::Tcp, 443));
    let ula = net.nodes[index(&net.nodes, "exit")].addresses.iter().copied().find(IpAddr::is_ipv6);
    if let Some(ula) = ula {
        assert!(!net.reaches_addr(alice6, "exit", ula, Proto::Tcp, 443), "the exit node's tailnet IPv6");
    }
    assert!(net.peers("alice-laptop").contains(&"router".to_string()));
    assert!(!net.peers("alice-laptop").contains(&"db".to_string()));
}

#[test]
fn protocols_by_name_and_number_and_the_default_of_tcp_udp_icmp() {
    let body = |proto: &str, dst: &str| {
        with_defs(&format!(r#""acls": [{{"action": "accept", "src": ["*"], "proto": {proto}, "dst": ["{dst}"]}}]"#))
    };
    let net = Net::new(&body(r#""udp""#, "tag:db:53"));
    assert!(net.reaches("web", "db", Proto::Udp, 53));
    assert!(!net.reaches("web", "db", Proto::Tcp, 53));
    let net = Net::new(&body(r#""17""#, "tag:db:53"));
    assert!(net.reaches("web", "db", Proto::Udp, 53));
    let net = Net::new(&body(r#""gre""#, "tag:db:*"));
    assert!(net.reaches("web", "db", Proto::Other(47), 0));
    assert!(!net.reaches("web", "db", Proto::Other(50), 0));
    let net = Net::new(&body("50", "tag:db:*"));
    assert!(net.reaches("web", "db", Proto::Other(50), 0));
    let net = Net::new(&body(r#""icmp""#, "tag:db:*"));
    assert!(net.reaches("web", "db", Proto::Icmp, 0));
    assert!(!net.reaches("web", "db", Proto::Tcp, 1));
    // No proto: TCP, UDP and ICMP, nothing else.
    let net = Net::new(&acl(r#""*""#, r#""tag:db:*""#));
    for p in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        assert!(net.reaches("web", "db", p, 7), "{p:?}");
    }
    assert!(!net.reaches("web", "db", Proto::Other(47), 0));
    // Ports only with tcp, udp, sctp.
    let e = reject(&body(r#""icmp""#, "tag:db:22"));
    assert!(e.message.contains("has no ports"), "{e}");
    parse(&body(r#""sctp""#, "tag:db:*"));
}

#[test]
fn grants_in_the_ip_form_compile_like_acls() {
    let net = Net::new(&with_defs(
        r#""grants": [
            {"src": ["group:eng"], "dst": ["tag:db"], "ip": ["tcp:5432", "udp:53", "icmp:*"]},
            {"src": ["carol@other.org"], "dst": ["tag:web"], "ip": ["443"]},
            {"src": ["tag:web"], "dst": ["tag:db"], "ip": ["*"]},
        ]"#,
    ));
    assert!(net.tcp("bob-desktop", "db", 5432));
    assert!(!net.tcp("bob-desktop", "db", 53));
    assert!(net.reaches("bob-desktop", "db", Proto::Udp, 53));
    assert!(net.reaches("bob-desktop", "db", Proto::Icmp, 0));
    assert!(net.tcp("carol-laptop", "web", 443) && net.reaches("carol-laptop", "web", Proto::Udp, 443));
    assert!(!net.tcp("carol-laptop", "web", 444));
    assert!(net.tcp("web", "db", 1) && net.tcp("web", "db", 65535));
    let e = reject(&with_defs(r#""grants": [{"src": ["*"], "dst": ["*"], "app": {"example.com/cap": [{}]}}]"#));
    assert!(e.message.contains("application capabilities are not supported"), "{e}");
    let e = reject(&with_defs(r#""grants": [{"src": ["*"], "dst": ["*"], "ip": []}]"#));
    assert!(e.message.contains("ip is required"), "{e}");
}

#[test]
fn a_peer_is_visible_when_either_may_reach_the_other() {
    let net = Net::new(&acl(r#""alice@example.com""#, r#""tag:web:443""#));
    assert_eq!(net.peers("alice-laptop"), vec!["web"]);
    assert_eq!(net.peers("web"), vec!["alice-laptop", "alice-phone"]);
    assert!(net.peers("bob-desktop").is_empty());
    assert!(net.compiled.nodes[index(&net.nodes, "web")].sees(index(&net.nodes, "alice-phone")));
    // Self: each user sees their own nodes only.
    let net = Net::new(&acl(r#""autogroup:member""#, r#""autogroup:self:*""#));
    assert_eq!(net.peers("alice-laptop"), vec!["alice-phone"]);
    assert!(net.peers("bob-desktop").is_empty());
    assert!(net.peers("web").is_empty());
}

#[test]
fn the_default_policy_keeps_each_user_to_their_own_nodes_with_check_ssh() {
    let policy = Policy::default_policy();
    assert_eq!(policy, parse(DEFAULT_POLICY));
    let nodes = tailnet();
    let net = Net { compiled: compile(&policy, &nodes), nodes };
    assert!(net.tcp("alice-laptop", "alice-phone", 22));
    assert!(!net.tcp("alice-laptop", "bob-desktop", 22));
    assert!(!net.tcp("web", "alice-laptop", 22));
    let rules = net.ssh("alice-phone");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].action, NodeSshAction::Check);
    assert_eq!(&*rules[0].principals, net.ids(&["alice-laptop", "alice-phone"]).as_slice());
    let users: BTreeMap<String, String> =
        [("*".into(), "=".into()), ("root".into(), "root".into())].into_iter().collect();
    assert_eq!(*rules[0].users, users);
    assert!(net.ssh("web").is_empty(), "tagged nodes get no default SSH");
}

#[test]
fn an_ssh_rule_may_withhold_forwarding() {
    let net = Net::new(&with_defs(
        r#""ssh": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:web"], "users": ["deploy"],
                    "allowLocalPortForwarding": false, "allowAgentForwarding": false}]"#,
    ));
    let rule = &net.ssh("web")[0];
    assert_eq!(rule.forwarding, SshForwarding { agent: false, local: false, remote: true });
    let bad = r#"{"ssh": [{"action": "accept", "src": ["*"], "dst": ["*"], "users": ["x"],
                 "allowRemotePortForwarding": "no"}]}"#;
    let error = reject(bad).to_string();
    assert!(error.contains("allowRemotePortForwarding: expected true or false"), "{error}");
}

#[test]
fn ssh_user_maps_nonroot_root_and_named_users() {
    let ssh = |users: &str| {
        with_defs(&format!(
            r#""ssh": [{{"action": "accept", "src": ["group:eng"], "dst": ["tag:web"], "users": [{users}]}}]"#
        ))
    };
    let net = Net::new(&ssh(r#""autogroup:nonroot""#));
    let rule = &net.ssh("web")[0];
    assert_eq!(rule.users.get("*").map(String::as_str), Some("="));
    assert_eq!(rule.users.get("root").map(String::as_str), Some(""), "root is never implied");
    assert_eq!(&*rule.principals, net.ids(&["alice-laptop", "alice-phone", "bob-desktop"]).as_slice());
    assert_eq!(rule.action, NodeSshAction::Accept);
    assert_eq!(rule.forwarding, SshForwarding::ALL, "accept allows all forwarding unless the rule says otherwise");
    let net = Net::new(&ssh(r#""root", "deploy""#));
    let rule = &net.ssh("web")[0];
    assert_eq!(rule.users.get("root").map(String::as_str), Some("root"));
    assert_eq!(rule.users.get("deploy").map(String::as_str), Some("deploy"));
    assert!(rule.users.get("*").is_none());
    assert!(net.ssh("db").is_empty(), "only the destinations receive the rule");
    for bad in [r#""*""#, "", r#""autogroup:admin""#, r#""0""#, r#""-rf""#, r#""localpart:alice""#] {
        reject(&ssh(bad));
    }
}

#[test]
fn localpart_expands_to_one_rule_per_user_with_only_their_nodes() {
    let net = Net::new(&with_defs(
        r#""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web"],
                    "users": ["localpart:*@example.com"]}]"#,
    ));
    let rules = net.ssh("web");
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert_eq!(&*rules[0].principals, net.ids(&["alice-laptop", "alice-phone"]).as_slice());
    assert_eq!(rules[0].users.iter().collect::<Vec<_>>(), vec![(&"alice".to_string(), &"alice".to_string())]);
    assert_eq!(&*rules[1].principals, net.ids(&["bob-desktop"]).as_slice());
    assert_eq!(rules[1].users.get("bob").map(String::as_str), Some("bob"));
    assert!(rules.iter().all(|r| !r.principals.contains(&NodeId(4))), "carol is not @example.com");
}

#[test]
fn check_rules_come_before_accept_rules_and_check_period_is_checked() {
    let net = Net::new(&with_defs(
        r#""ssh": [
            {"action": "accept", "src": ["group:eng"], "dst": ["tag:web"], "users": ["deploy"], "acceptEnv": ["GIT_*", "LANG"]},
            {"action": "check", "src": ["group:eng"], "dst": ["tag:web"], "users": ["root"], "checkPeriod": "always"},
        ]"#,
    ));
    let rules = net.ssh("web");
    assert_eq!(rules[0].action, NodeSshAction::Check);
    assert_eq!(rules[0].rule, 1);
    assert_eq!(rules[1].rule, 0);
    assert_eq!(&*rules[1].accept_env, &["GIT_*".to_string(), "LANG".to_string()]);
    let period = |p: &str| {
        Policy::parse(
            "p",
            &with_defs(&format!(
                r#""ssh": [{{"action": "check", "src": ["group:eng"], "dst": ["tag:web"], "users": ["root"]{p}}}]"#
            )),
        )
        .map(|policy| policy.ssh[0].check_period)
    };
    assert_eq!(period(""), Ok(CheckPeriod::Seconds(12 * 3600)));
    assert_eq!(period(r#", "checkPeriod": "always""#), Ok(CheckPeriod::Always));
    assert_eq!(period(r#", "checkPeriod": "168h""#), Ok(CheckPeriod::Seconds(168 * 3600)));
    assert_eq!(period(r#", "checkPeriod": "1h30m""#), Ok(CheckPeriod::Seconds(5400)));
    for bad in ["169h", "0h", "12", "1d", "-1h", "h"] {
        let e = period(&format!(r#", "checkPeriod": "{bad}""#)).err().unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(e.message.contains("checkPeriod"), "{e}");
    }
}

#[test]
fn ssh_destinations_follow_tailscale_rules() {
    let ssh = |src: &str, dst: &str| {
        Policy::parse(
            "p",
            &with_defs(&format!(
                r#""ssh": [{{"action": "accept", "src": [{src}], "dst": [{dst}], "users": ["root"]}}]"#
            )),
        )
    };
    assert!(ssh(r#""alice@example.com""#, r#""alice@example.com""#).is_ok());
    assert!(ssh(r#""bob@example.com""#, r#""alice@example.com""#).is_err(), "another user's nodes");
    assert!(ssh(r#""tag:web""#, r#""autogroup:self""#).is_err(), "tags to user-owned nodes");
    assert!(ssh(r#""tag:web""#, r#""alice@example.com""#).is_err());
    assert!(ssh(r#""tag:web""#, r#""tag:db""#).is_ok());
    for dst in [r#""*""#, r#""web-host""#, r#""100.64.0.1""#, r#""group:eng""#] {
        let e = ssh(r#""group:eng""#, dst).err().unwrap_or_else(|| panic!("{dst} accepted"));
        assert!(e.message.contains("ssh[0].dst[0]"), "{e}");
    }
    assert!(ssh(r#""*""#, r#""tag:db""#).is_err(), "ssh sources are identities");
    // Self for SSH: each user to their own nodes only.
    let net = Net::new(&with_defs(
        r#""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}]"#,
    ));
    assert_eq!(&*net.ssh("bob-desktop")[0].principals, net.ids(&["bob-desktop"]).as_slice());
    assert_eq!(&*net.ssh("alice-laptop")[0].principals, net.ids(&["alice-laptop", "alice-phone"]).as_slice());
}

#[test]
fn tests_and_ssh_tests_pass_or_reject_the_policy_naming_the_test() {
    let body = |tests: &str| {
        with_defs(&format!(
            r#""acls": [{{"action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432", "autogroup:self:*"]}}],
  "ssh": [
    {{"action": "check", "src": ["group:eng"], "dst": ["tag:db"], "users": ["root"]}},
    {{"action": "accept", "src": ["group:eng"], "dst": ["tag:db"], "users": ["autogroup:nonroot"]}},
  ],
  {tests}"#
        ))
    };
    let good = body(
        r#""tests": [
      {"src": "alice@example.com", "accept": ["tag:db:5432", "alice@example.com:22"], "deny": ["tag:db:22", "bob@example.com:22"]},
      {"src": "carol@other.org", "deny": ["tag:db:5432"]},
      {"src": "group:eng", "proto": "tcp", "accept": ["tag:db:5432"]},
    ],
    "sshTests": [
      {"src": "bob@example.com", "dst": ["tag:db"], "accept": ["postgres"], "check": ["root"]},
      {"src": "carol@other.org", "dst": ["tag:db"], "deny": ["root", "postgres"]},
    ]"#,
    );
    let policy = parse(&good);
    assert_eq!(policy.tests.len(), 3);
    let failing = [
        (r#""tests": [{"src": "alice@example.com", "accept": ["tag:db:22"]}]"#, "tests[0] failed"),
        (r#""tests": [{"src": "alice@example.com", "deny": ["tag:db:5432"]}]"#, "tests[0] failed"),
        (r#""tests": [{"src": "bob@example.com", "proto": "udp", "deny": ["tag:db:5432"]}]"#, "tests[0] failed"),
        (r#""sshTests": [{"src": "bob@example.com", "dst": ["tag:db"], "accept": ["root"]}]"#, "sshTests[0] failed"),
        (
            r#""sshTests": [{"src": "alice@example.com", "dst": ["tag:db"], "check": ["postgres"]}]"#,
            "sshTests[0] failed",
        ),
        (r#""sshTests": [{"src": "carol@other.org", "dst": ["tag:db"], "accept": ["x"]}]"#, "sshTests[0] failed"),
    ];
    for (tests, expect) in failing {
        let e = reject(&body(tests));
        assert!(e.message.contains(expect), "{e}");
        assert!(e.to_string().starts_with("policy.hujson:"), "{e}");
    }
    let e = reject(&body(r#""sshTests": [{"src": "bob@example.com", "dst": ["tag:db:22"], "accept": ["x"]}]"#));
    assert!(e.message.contains("without ports"), "{e}");
}

#[test]
fn unused_sections_are_warnings_not_silence() {
    let policy = parse(
        r#"{
  "randomizeClientPort": true,
  "nodeAttrs": [{"target": ["*"], "attr": ["funnel"]}],
  "autoApprovers": {"routes": {"10.0.0.0/8": ["alice@example.com"]}, "exitNode": ["alice@example.com"]},
}"#,
    );
    assert_eq!(policy.warnings.len(), 2, "{:?}", policy.warnings);
    let funnel = policy.warnings.iter().find(|w| w.message.contains("funnel")).unwrap_or_else(|| panic!("no warning"));
    assert_eq!(funnel.pos.line, 3);
    assert_eq!(policy.auto_approvers.routes.len(), 1);
}

#[test]
fn legacy_and_case_insensitive_keys_of_older_policy_files() {
    let policy = parse(r#"{"ACLs": [{"Action": "accept", "Users": ["*"], "Ports": ["*:22"]}], "Groups": {}}"#);
    assert_eq!(policy.rules.len(), 1);
    assert_eq!(policy.rules[0].srcs, vec![Alias::All]);
}

#[test]
fn tag_ownership() {
    let policy = parse(&with_defs(""));
    assert!(policy.may_own_tag("tag:web", "alice@example.com", &[]));
    assert!(!policy.may_own_tag("tag:web", "bob@example.com", &[]));
    assert!(policy.may_own_tag("tag:db", "bob@example.com", &[]), "through group:eng");
    assert!(policy.may_own_tag("tag:router", "x@y", &["tag:db".into()]), "owned by a tag");
    assert!(!policy.may_own_tag("tag:unknown", "alice@example.com", &[]));
}

/// Malformed policies: each rejected, at the line of the fault.
#[test]
fn malformed_policies_are_rejected_at_the_right_line() {
    let cases: &[(&str, u32, &str)] = &[
        ("{\n  \"acls\": [\n    {\"action\": \"deny\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}\n  ]\n}", 3, "only \"accept\""),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:0\"]}\n  ]\n}", 3, "port 0"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:http\"]}\n  ]\n}", 3, "names are not accepted"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"],\n     \"dst\": [\"*:22\"], \"proto\": \"tcpx\"}\n  ]\n}", 4, "unknown protocol"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"], \"proto\": \"256\"}\n  ]\n}", 3, "unknown protocol"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\",\n     \"src\": [\"group:nope\"], \"dst\": [\"*:22\"]}\n  ]\n}", 4, "not defined in groups"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"tag:ghost\"], \"dst\": [\"*:22\"]}\n  ]\n}", 3, "not defined in tagOwners"),
        ("{\n  \"groups\": {\n    \"group:a\": [\"group:b\"]\n  }\n}", 3, "groups cannot contain groups"),
        ("{\n  \"groups\": {\n    \"eng\": []\n  }\n}", 3, "must start with"),
        ("{\n  \"tagOwners\": {\n    \"tag:1x\": []\n  }\n}", 3, "not a valid tag"),
        ("{\n  \"hosts\": {\n    \"db\": \"300.1.1.1\"\n  }\n}", 3, "not an address"),
        ("{\n  \"acls\": [],\n  \"bogus\": 1\n}", 3, "unknown field \"bogus\""),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"], \"extra\": 1}\n  ]\n}", 3, "unknown field \"extra\""),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"]}\n  ]\n}", 3, "dst is required"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"autogroup:self\"], \"dst\": [\"*:22\"]}\n  ]\n}", 3, "only be used as a destination"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"autogroup:danger-all:22\"]}\n  ]\n}", 3, "only be used as an acl or grant source"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"autogroup:internet\"], \"dst\": [\"*:22\"]}\n  ]\n}", 3, "destination"),
        ("{\n  \"tagOwners\": {\"tag:a\": []},\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"tag:a\"], \"dst\": [\"autogroup:self:*\"]}\n  ]\n}", 4, "needs user or group sources"),
        ("{\n  \"ssh\": [\n    {\"action\": \"allow\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self\"], \"users\": [\"root\"]}\n  ]\n}", 3, "not an ssh action"),
        ("{\n  \"ssh\": [\n    {\"action\": \"accept\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self\"], \"users\": []}\n  ]\n}", 3, "cannot be empty"),
        ("{\n  \"ssh\": [\n    {\"action\": \"accept\", \"src\": [\"autogroup:member\"],\n     \"dst\": [\"autogroup:self\"]}\n  ]\n}", 3, "users is required"),
        ("{\n  \"ssh\": [\n    {\"action\": \"check\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self\"],\n     \"users\": [\"root\"], \"checkPeriod\": \"169h\"}\n  ]\n}", 4, "maximum of 168h"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"]},\n    {\"action\": \"accept\" \"src\": [\"*\"], \"dst\": [\"*:22\"]}\n  ]\n}", 4, "syntax error"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"]}\n  ],\n  \"acls\": []\n}", 5, "duplicate key"),
        ("{\n  \"tests\": [\n    {\"src\": \"alice@example.com\", \"accept\": [\"100.64.0.1:22\"]}\n  ]\n}", 3, "tests[0] failed"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"], \"srcPosture\": [\"posture:x\"]}\n  ]\n}", 3, "posture"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:10-5\"]}\n  ]\n}", 3, "backwards"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"tag:web\"]}\n  ]\n}", 3, "alias:ports"),
        ("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"nobody\"], \"dst\": [\"*:22\"]}\n  ]\n}", 3, "not a user, group, tag"),
        ("[\n  1\n]", 1, "expected an object"),
    ];
    assert!(cases.len() >= 25);
    for (text, line, message) in cases {
        let e = reject(text);
        assert_eq!(e.pos.line, *line, "{e}\n{text}");
        assert!(e.message.contains(message), "expected {message:?}, got {e}");
        assert!(e.to_string().starts_with(&format!("policy.hujson:{line}:")), "{e}");
    }
}

#[test]
fn hostile_sizes_are_refused() {
    let big = format!("{{\"hosts\": {{}}, \"x\": \"{}\"}}", "a".repeat(MAX_POLICY_BYTES));
    assert!(reject(&big).message.contains("at most"));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    reject(&deep);
}

#[test]
fn localpart_never_maps_to_root_or_to_an_invalid_account() {
    let mut nodes = tailnet();
    for (i, user) in ["root@example.com", "0@example.com"].iter().enumerate() {
        let last = 20 + i as u8;
        nodes.push(NodeInfo {
            id: NodeId(u64::from(last)),
            name: format!("x{i}"),
            user: user.to_string(),
            tags: vec![],
            addresses: vec![IpAddr::from([100, 64, 0, last])],
            routes: vec![],
            idp_groups: vec![],
        });
    }
    let policy = parse(&with_defs(
        r#""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["localpart:*@example.com"]}]"#,
    ));
    let compiled = compile(&policy, &nodes);
    let web = &compiled.nodes[index(&nodes, "web")];
    let locals: Vec<&String> = web.ssh.iter().flat_map(|r| r.users.keys()).collect();
    assert!(!locals.iter().any(|l| l.as_str() == "root" || l.as_str() == "0"), "{locals:?}");
    assert!(locals.iter().any(|l| l.as_str() == "alice"));
}
