//! The control server's state machine driven directly: registration with pre-auth keys,
//! the map stream and its deltas, policy changes, removal and expiry, hostile requests,
//! and restart from the persisted state.

use std::time::Duration;

use super::messages::*;
use super::server::*;
use crate::policy::NodeId;
use crate::time::{Instant, UnixTime};
use crate::wireguard::PublicKey;

const T0: u64 = 1_800_000_000;

fn unix(secs: u64) -> UnixTime {
    UnixTime(Duration::from_secs(secs))
}

struct Harness {
    server: ControlServer,
    now: Instant,
    /// Everything persisted so far, in order.
    persisted: Vec<Change>,
}

impl Harness {
    fn new() -> Self {
        Self::with_state(State::default())
    }

    fn with_state(state: State) -> Self {
        let server =
            ControlServer::new(ServerConfig::default(), [7; 32], state, unix(T0)).unwrap_or_else(|e| panic!("{e}"));
        Self { server, now: Instant::from_micros(1_000_000), persisted: Vec::new() }
    }

    /// Drains outputs: persists are recorded, sends returned per connection.
    fn drain(&mut self) -> Vec<(ConnId, ServerMessage)> {
        let mut sent = Vec::new();
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::Persist(c) => self.persisted.push(c),
                Output::Send { conn, message } => {
                    // Round-trip through the wire encoding: what a node would decode.
                    let bytes = encode(&message);
                    let back: ServerMessage = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(back, message);
                    sent.push((conn, message));
                }
                Output::Close { conn, reason } => sent.push((conn, ServerMessage::Rejected { reason })),
            }
        }
        sent
    }

    fn key(&mut self, user: &str, options: AuthKeyOptions) -> String {
        if self.server.user_id(user).is_none() {
            self.server.create_user("admin", user).unwrap_or_else(|e| panic!("{e}"));
        }
        let options = AuthKeyOptions { lifetime: Duration::from_secs(3600), ..options };
        self.server.create_auth_key("admin", user, options).unwrap_or_else(|e| panic!("{e}")).1
    }

    fn send(&mut self, conn: u64, message: NodeMessage) -> Vec<(ConnId, ServerMessage)> {
        self.server.handle_message(self.now, ConnId(conn), message);
        self.drain()
    }

    /// Connects machine `n`, registers with `key` and starts its map; returns its node id.
    fn join(&mut self, n: u8, hostname: &str, key: &str) -> NodeId {
        self.server.handle_connect(self.now, ConnId(n.into()), machine(n));
        let replies = self.send(n.into(), register(n, hostname, key));
        let id = replies
            .iter()
            .find_map(|(c, m)| match m {
                ServerMessage::Registered(r) if *c == ConnId(n.into()) => Some(r.node),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{hostname} not registered: {replies:?}"));
        self.send(n.into(), NodeMessage::Map { endpoints: vec![] });
        id
    }
}

fn machine(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn node_key(n: u8) -> PublicKey {
    PublicKey([n.wrapping_add(100); 32])
}

fn register(n: u8, hostname: &str, key: &str) -> NodeMessage {
    NodeMessage::Register(Register {
        node_key: node_key(n),
        hostname: hostname.into(),
        ssh_host_keys: vec![format!("ssh-ed25519 AAAA{n} host")],
        requested_tags: vec![],
        ssh: true,
        auth: RegisterAuth::AuthKey(key.into()),
    })
}

fn to(sent: &[(ConnId, ServerMessage)], conn: u64) -> Vec<&ServerMessage> {
    sent.iter().filter(|(c, _)| *c == ConnId(conn)).map(|(_, m)| m).collect()
}

const OPEN: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

#[test]
fn a_single_use_key_raced_by_two_nodes_registers_exactly_one() {
    let mut h = Harness::new();
    let key = h.key("alice@example.com", AuthKeyOptions::default());
    h.server.handle_connect(h.now, ConnId(1), machine(1));
    h.server.handle_connect(h.now, ConnId(2), machine(2));
    h.server.handle_message(h.now, ConnId(1), register(1, "a", &key));
    h.server.handle_message(h.now, ConnId(2), register(2, "b", &key));
    let sent = h.drain();
    let registered = sent.iter().filter(|(_, m)| matches!(m, ServerMessage::Registered(_))).count();
    let rejected: Vec<_> = sent.iter().filter(|(_, m)| matches!(m, ServerMessage::Rejected { .. })).collect();
    assert_eq!(registered, 1, "{sent:?}");
    assert_eq!(rejected.len(), 1);
    assert!(matches!(&rejected[0].1, ServerMessage::Rejected { reason } if reason.contains("already used")));
    assert_eq!(h.server.nodes().count(), 1);
}

#[test]
fn the_map_stream_starts_full_and_continues_with_deltas() {
    let mut h = Harness::new();
    h.server.create_user("admin", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
    h.server.set_policy(h.now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    h.server.handle_connect(h.now, ConnId(1), machine(1));
    h.send(1, register(1, "laptop", &key));
    let sent =
        h.send(1, NodeMessage::Map { endpoints: vec!["192.0.2.1:41641".parse().unwrap_or_else(|e| panic!("{e}"))] });
    let [ServerMessage::Map(map)] = to(&sent, 1)[..] else { panic!("{sent:?}") };
    assert_eq!(map.node.name, "laptop");
    assert!(map.peers.is_empty());
    assert_eq!(map.filter.len(), 1);
    // A second node joins: the first gets a delta with exactly that peer.
    h.server.handle_connect(h.now, ConnId(2), machine(2));
    let sent = h.send(2, register(2, "laptop", &key));
    let Some(ServerMessage::Registered(r)) = to(&sent, 2).first().copied() else { panic!("{sent:?}") };
    assert_eq!(r.name, "laptop-2", "names are unique");
    assert_ne!(r.addresses, map.node.addresses);
    let sent = h.send(2, NodeMessage::Map { endpoints: vec![] });
    let deltas = to(&sent, 1);
    let [ServerMessage::Delta(d)] = deltas[..] else { panic!("{sent:?}") };
    assert_eq!(d.upsert.len(), 1);
    assert_eq!(d.upsert[0].name, "laptop-2");
    assert!(d.upsert[0].online);
    assert!(d.remove.is_empty() && d.ssh.is_none());
    // Nothing changed for anyone: nothing is sent.
    assert!(h.send(2, NodeMessage::Endpoints(vec![])).is_empty());
}

/// A node that reconnects streams on the new connection: the old one is closed, and its
/// going away later does not take the node offline.
#[test]
fn a_reconnect_replaces_the_stream_and_the_old_connection_closing_changes_nothing() {
    let mut h = Harness::new();
    h.server.set_policy(h.now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    h.join(1, "laptop", &key);
    let phone = h.join(2, "phone", &key);
    h.server.handle_connect(h.now, ConnId(12), machine(2));
    h.send(12, register(2, "", "").with_auth(RegisterAuth::Known));
    let sent = h.send(12, NodeMessage::Map { endpoints: vec![] });
    assert!(matches!(to(&sent, 12)[..], [ServerMessage::Map(_)]), "the new stream starts with a full map: {sent:?}");
    assert!(
        matches!(to(&sent, 2)[..], [ServerMessage::Rejected { .. }]),
        "the replaced connection is closed: {sent:?}"
    );
    h.server.handle_disconnect(h.now, ConnId(2));
    assert!(h.drain().is_empty(), "the old connection going away changes nothing");
    assert!(h.server.is_online(phone));
    // Updates reach the new stream.
    let sent = h.send(1, NodeMessage::Endpoints(vec![std::net::SocketAddr::from(([192, 0, 2, 1], 41641))]));
    assert!(matches!(to(&sent, 12)[..], [ServerMessage::Delta(_)]), "{sent:?}");
    h.server.handle_disconnect(h.now, ConnId(12));
    assert!(!h.server.is_online(phone));
}

#[test]
fn a_known_machine_logging_in_again_updates_what_it_says_about_itself() {
    let mut h = Harness::new();
    h.server.set_policy(h.now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    h.join(1, "laptop", &key);
    let phone = h.join(2, "phone", &key);
    // The phone comes back with SSH off and no host key: the laptop's map says so, the
    // change is persisted, and the node keeps its name.
    h.server.handle_connect(h.now, ConnId(12), machine(2));
    let mut again = register(2, "renamed", "").with_auth(RegisterAuth::Known);
    if let NodeMessage::Register(r) = &mut again {
        r.ssh = false;
        r.ssh_host_keys.clear();
    }
    let sent = h.send(12, again);
    let upsert = to(&sent, 1).into_iter().find_map(|m| match m {
        ServerMessage::Delta(d) => d.upsert.iter().find(|p| p.id == phone).cloned(),
        _ => None,
    });
    let peer = upsert.unwrap_or_else(|| panic!("the laptop hears of the change: {sent:?}"));
    assert!(peer.ssh_host_keys.is_empty());
    assert_eq!(peer.name, "phone");
    assert!(h.persisted.iter().any(|c| matches!(c, Change::Node(n) if n.id == phone && !n.ssh)));
    // The same again changes nothing.
    h.server.handle_connect(h.now, ConnId(13), machine(2));
    let mut same = register(2, "", "").with_auth(RegisterAuth::Known);
    if let NodeMessage::Register(r) = &mut same {
        r.ssh = false;
        r.ssh_host_keys.clear();
    }
    let sent = h.send(13, same);
    assert!(to(&sent, 1).is_empty(), "{sent:?}");
}

#[test]
fn policy_changes_deletion_and_expiry_reach_every_node() {
    let mut h = Harness::new();
    h.server.create_user("admin", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
    h.server.set_policy(h.now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let ids: Vec<NodeId> = (1..=4).map(|n| h.join(n, &format!("n{n}"), &key)).collect();
    h.drain();
    // A policy that allows nothing: every node gets an empty filter, and no peers.
    h.server.set_policy(h.now, "admin", r#"{"acls": []}"#).unwrap_or_else(|e| panic!("{e}"));
    let sent = h.drain();
    for n in 1..=4u64 {
        let [ServerMessage::Delta(d)] = to(&sent, n)[..] else { panic!("{n}: {sent:?}") };
        assert_eq!(d.filter, Some(std::sync::Arc::new(vec![])), "an empty filter is distinguishable from unchanged");
        assert_eq!(d.remove.len(), 3);
    }
    h.server.set_policy(h.now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    // Deleting a node: it disappears from every peer list, its stream is closed.
    h.server.delete_node(h.now, "admin", ids[3]).unwrap_or_else(|e| panic!("{e}"));
    let sent = h.drain();
    for n in 1..=3u64 {
        let [ServerMessage::Delta(d)] = to(&sent, n)[..] else { panic!("{n}: {sent:?}") };
        assert_eq!(d.remove, vec![ids[3]]);
    }
    assert!(matches!(to(&sent, 4)[..], [ServerMessage::Rejected { .. }]), "closed");
    // Expiry: the expired node leaves its peers' maps.
    h.server.expire_node(h.now, "admin", ids[2]).unwrap_or_else(|e| panic!("{e}"));
    let sent = h.drain();
    for n in 1..=2u64 {
        let [ServerMessage::Delta(d)] = to(&sent, n)[..] else { panic!("{n}: {sent:?}") };
        assert_eq!(d.remove, vec![ids[2]]);
    }
    // A policy that fails its tests changes nothing and persists nothing.
    let before = h.persisted.len();
    let failing = r#"{"acls": [], "tests": [{"src": "alice@example.com", "accept": ["alice@example.com:22"]}]}"#;
    assert!(h.server.set_policy(h.now, "admin", failing).is_err());
    assert!(h.drain().is_empty());
    assert_eq!(h.persisted.len(), before);
}

#[test]
fn keys_expire_with_time_and_keepalives_keep_quiet_streams_alive() {
    let mut h = Harness::new();
    h.server.set_policy(h.now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    h.join(1, "a", &key);
    h.join(2, "b", &key);
    h.drain();
    let deadline = h.server.poll_timeout().unwrap_or_else(|| panic!("no keepalive timer"));
    assert!(deadline >= h.now + Duration::from_secs(50) && deadline <= h.now + Duration::from_secs(55));
    h.now = deadline;
    h.server.handle_timeout(h.now, unix(T0 + 60));
    let sent = h.drain();
    assert!(sent.iter().any(|(_, m)| *m == ServerMessage::KeepAlive));
    assert!(h.server.poll_timeout().is_some_and(|t| t > h.now));
    // 181 days later both keys have expired: each loses the other.
    h.server.handle_timeout(h.now, unix(T0 + 181 * 86_400));
    let sent = h.drain();
    let [ServerMessage::Delta(d)] = to(&sent, 1)[..] else { panic!("{sent:?}") };
    assert_eq!(d.remove.len(), 1);
}

#[test]
fn hostile_registrations_are_refused_and_change_nothing() {
    let mut h = Harness::new();
    let key = h.key("alice@example.com", AuthKeyOptions::default());
    let reusable = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    h.join(1, "a", &reusable);
    let (id, _) = parse_id(&key);
    let forged = format!("mskey-{id}-{}", "0".repeat(48));
    let cases = [
        (2u8, "garbage".to_string(), "malformed"),
        (3, forged, "unknown auth key"),
        (4, "mskey-999-".to_string() + &"a".repeat(48), "unknown auth key"),
    ];
    let before = h.persisted.len();
    for (n, secret, why) in cases {
        h.server.handle_connect(h.now, ConnId(n.into()), machine(n));
        let sent = h.send(n.into(), register(n, "x", &secret));
        assert!(
            matches!(&to(&sent, n.into())[..], [ServerMessage::Rejected { reason }] if reason.contains(why)),
            "{sent:?}"
        );
    }
    // Another node's node key.
    h.server.handle_connect(h.now, ConnId(5), machine(5));
    let mut claim = register(5, "x", &key);
    if let NodeMessage::Register(r) = &mut claim {
        r.node_key = node_key(1);
    }
    let sent = h.send(5, claim);
    assert!(matches!(&to(&sent, 5)[..], [ServerMessage::Rejected { reason }] if reason.contains("another node")));
    // Oversized or malformed self-descriptions.
    let mut big = register(5, &"x".repeat(300), &key);
    if let NodeMessage::Register(r) = &mut big {
        r.ssh_host_keys = vec!["k".repeat(5000)];
    }
    let sent = h.send(5, big);
    assert!(matches!(&to(&sent, 5)[..], [ServerMessage::Rejected { reason }] if reason.contains("hostname")));
    let sent = h.send(5, register(5, "x", &key).with_auth(RegisterAuth::Known));
    assert!(
        matches!(&to(&sent, 5)[..], [ServerMessage::Rejected { reason }] if reason.contains("not registered")),
        "unknown machine key"
    );
    // A map request before registering.
    let sent = h.send(5, NodeMessage::Map { endpoints: vec![] });
    assert!(matches!(&to(&sent, 5)[..], [ServerMessage::Rejected { .. }]));
    assert_eq!(h.persisted.len(), before, "nothing persisted");
    // Revoked and expired keys.
    h.server.revoke_auth_key("admin", id).unwrap_or_else(|e| panic!("{e}"));
    let sent = h.send(5, register(5, "x", &key));
    assert!(matches!(&to(&sent, 5)[..], [ServerMessage::Rejected { reason }] if reason.contains("revoked")));
    let short = h.key("alice@example.com", AuthKeyOptions::default());
    h.server.handle_timeout(h.now, unix(T0 + 7200));
    h.drain();
    let sent = h.send(5, register(5, "x", &short));
    assert!(matches!(&to(&sent, 5)[..], [ServerMessage::Rejected { reason }] if reason.contains("expired")));
    // Tags the key's user may not assign.
    let tagged = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let mut asks = register(6, "x", &tagged);
    if let NodeMessage::Register(r) = &mut asks {
        r.requested_tags = vec!["tag:prod".into()];
    }
    h.server.handle_connect(h.now, ConnId(6), machine(6));
    let sent = h.send(6, asks);
    assert!(matches!(&to(&sent, 6)[..], [ServerMessage::Rejected { reason }] if reason.contains("tag:prod")));
    assert_eq!(h.server.nodes().count(), 1);
}

fn parse_id(key: &str) -> (u64, String) {
    let rest = key.strip_prefix("mskey-").unwrap_or_default();
    let (id, secret) = rest.split_once('-').unwrap_or_default();
    (id.parse().unwrap_or_default(), secret.to_string())
}

#[test]
fn a_restart_from_the_persisted_state_loses_nothing() {
    let mut h = Harness::new();
    h.server.set_policy(h.now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let a = h.join(1, "a", &key);
    h.join(2, "b", &key);
    let single = h.key("bob@example.com", AuthKeyOptions::default());
    h.drain();
    // Replay what was persisted into a State, as the shell's database would hold it.
    let mut state = State::default();
    for change in &h.persisted {
        match change.clone() {
            Change::User(u) => {
                state.users.retain(|x| x.id != u.id);
                state.users.push(u);
            }
            Change::Node(n) => {
                state.nodes.retain(|x| x.id != n.id);
                state.nodes.push(n);
            }
            Change::NodeRemoved(id) => state.nodes.retain(|x| x.id != id),
            Change::AuthKey(k) => {
                state.auth_keys.retain(|x| x.id != k.id);
                state.auth_keys.push(k);
            }
            Change::Policy(p) => state.policy = Some(p),
            Change::UserRemoved(id) => state.users.retain(|x| x.id != id),
            Change::ApiKey(k) => {
                state.api_keys.retain(|x| x.id != k.id);
                state.api_keys.push(k);
            }
            Change::Approval(a) => {
                state.approvals.retain(|x| (x.src, x.dst, &x.local_user) != (a.src, a.dst, &a.local_user));
                state.approvals.push(a);
            }
            Change::ApprovalRemoved { src, dst, local_user } => {
                state.approvals.retain(|x| (x.src, x.dst, &x.local_user) != (src, dst, &local_user))
            }
            Change::Audit(_) => {}
        }
    }
    let mut restarted = Harness::with_state(state);
    assert_eq!(restarted.server.nodes().count(), 2);
    assert_eq!(restarted.server.policy_text(), Some(OPEN));
    // Node a reconnects with its machine key and is recognised; its map has b.
    restarted.server.handle_connect(restarted.now, ConnId(10), machine(1));
    let mut again = register(1, "a", "");
    if let NodeMessage::Register(r) = &mut again {
        r.auth = RegisterAuth::Known;
    }
    let sent = restarted.send(10, again);
    assert!(matches!(&to(&sent, 10)[..], [ServerMessage::Registered(r)] if r.node == a));
    let sent = restarted.send(10, NodeMessage::Map { endpoints: vec![] });
    let [ServerMessage::Map(map)] = to(&sent, 10)[..] else { panic!("{sent:?}") };
    assert_eq!(map.peers.len(), 1);
    // The unused single-use key still works once; new ids do not collide.
    restarted.server.handle_connect(restarted.now, ConnId(11), machine(3));
    let sent = restarted.send(11, register(3, "c", &single));
    assert!(matches!(&to(&sent, 11)[..], [ServerMessage::Registered(r)] if r.node.0 == 3), "{sent:?}");
}

#[test]
fn decoding_refuses_other_versions_and_trailing_bytes() {
    let bytes = encode(&NodeMessage::Logout);
    assert_eq!(decode::<NodeMessage>(&bytes), Ok(NodeMessage::Logout));
    let mut other = bytes.clone();
    other[0] = 9;
    assert_eq!(decode::<NodeMessage>(&other), Err(MessageError::Version(9)));
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(decode::<NodeMessage>(&long), Err(MessageError::Malformed(_))));
    assert_eq!(decode::<NodeMessage>(&[]), Err(MessageError::Empty));
    // A huge declared length allocates nothing and fails.
    assert!(decode::<ServerMessage>(&[VERSION, 3, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
}

fn check(h: &mut Harness, conn: u64, id: u64, src: NodeId, user: &str, rule: u32) -> CheckAnswer {
    let sent = h.send(conn, NodeMessage::Check(CheckRequest { id, src, local_user: user.into(), rule }));
    match to(&sent, conn)[..] {
        [ServerMessage::CheckAnswer { id: got, answer }] if *got == id => answer.clone(),
        _ => panic!("{sent:?}"),
    }
}

fn token_of(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}

const CHECKED: &str = r#"{
  "tagOwners": {"tag:srv": ["alice@example.com"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [
    {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"], "checkPeriod": "1h"},
    {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"], "checkPeriod": "always"},
    {"action": "check", "src": ["tag:srv"], "dst": ["tag:srv"], "users": ["root"]},
  ],
}"#;

#[test]
fn check_mode_holds_until_approved_and_remembers_for_the_period() {
    let mut h = Harness::new();
    h.server.create_user("admin", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
    h.server.set_policy(h.now, "admin", CHECKED).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let laptop = h.join(1, "laptop", &key);
    h.join(2, "server", &key);
    // The server (conn 2) holds a root login from the laptop: pending with a URL.
    let CheckAnswer::Pending { url } = check(&mut h, 2, 7, laptop, "root", 0) else { panic!("not pending") };
    assert!(url.starts_with("http://127.0.0.1:8080/check/"), "{url}");
    assert_eq!(h.server.pending_checks().count(), 1);
    h.server.approve_check(h.now, "alice@example.com", &token_of(&url)).unwrap_or_else(|e| panic!("{e}"));
    let sent = h.drain();
    assert!(matches!(
        to(&sent, 2)[..],
        [ServerMessage::CheckAnswer { id: 7, answer: CheckAnswer::Approved { authenticated_secs_ago: 0 } }]
    ));
    assert!(h.persisted.iter().any(|c| matches!(c, Change::Approval(a) if a.local_user == "root")));
    assert!(h.persisted.iter().any(|c| matches!(c, Change::Audit(a) if a.action == "ssh-check-approve")));
    // Within the hour: approved at once, saying how long ago.
    h.server.handle_timeout(h.now, unix(T0 + 600));
    h.drain();
    assert_eq!(check(&mut h, 2, 8, laptop, "root", 0), CheckAnswer::Approved { authenticated_secs_ago: 600 });
    // Another local user is another approval; `always` never remembers.
    assert!(matches!(check(&mut h, 2, 9, laptop, "alice", 1), CheckAnswer::Pending { .. }));
    let token = h.server.pending_checks().next().map(|(t, ..)| t.to_string()).unwrap_or_default();
    h.server.approve_check(h.now, "admin", &token).unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    assert!(matches!(check(&mut h, 2, 10, laptop, "alice", 1), CheckAnswer::Pending { .. }));
    // After the period the root approval is gone.
    h.server.handle_timeout(h.now, unix(T0 + 3601));
    h.drain();
    assert!(matches!(check(&mut h, 2, 11, laptop, "root", 0), CheckAnswer::Pending { .. }));
}

#[test]
fn a_check_approved_by_an_id_token_counts_its_period_from_the_authentication() {
    let mut h = Harness::new();
    h.server.create_user("admin", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
    h.server.set_policy(h.now, "admin", CHECKED).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let laptop = h.join(1, "laptop", &key);
    h.join(2, "server", &key);
    h.server.handle_timeout(h.now, unix(T0 + 1000));
    h.drain();
    // alice authenticated at the provider 120 s before the approval arrives.
    let CheckAnswer::Pending { url } = check(&mut h, 2, 7, laptop, "root", 0) else { panic!("not pending") };
    h.server
        .approve_check_authenticated(h.now, "alice@example.com", &token_of(&url), T0 + 880)
        .unwrap_or_else(|e| panic!("{e}"));
    let sent = h.drain();
    assert!(matches!(
        to(&sent, 2)[..],
        [ServerMessage::CheckAnswer { id: 7, answer: CheckAnswer::Approved { authenticated_secs_ago: 120 } }]
    ));
    assert!(h
        .persisted
        .iter()
        .any(|c| matches!(c, Change::Approval(a) if a.authenticated == T0 + 880 && a.expires == T0 + 880 + 3600)));
    // The hour runs from the authentication: gone at T0 + 880 + 3600, not T0 + 1000 + 3600.
    h.server.handle_timeout(h.now, unix(T0 + 880 + 3599));
    h.drain();
    assert_eq!(check(&mut h, 2, 8, laptop, "root", 0), CheckAnswer::Approved { authenticated_secs_ago: 3599 });
    h.server.handle_timeout(h.now, unix(T0 + 880 + 3601));
    h.drain();
    assert!(matches!(check(&mut h, 2, 9, laptop, "root", 0), CheckAnswer::Pending { .. }));
    // A time in the future counts as now.
    let token = h.server.pending_checks().next().map(|(t, ..)| t.to_string()).unwrap_or_default();
    h.server.approve_check_authenticated(h.now, "admin", &token, u64::MAX).unwrap_or_else(|e| panic!("{e}"));
    let sent = h.drain();
    assert!(matches!(
        to(&sent, 2)[..],
        [ServerMessage::CheckAnswer { id: 9, answer: CheckAnswer::Approved { authenticated_secs_ago: 0 } }]
    ));
}

#[test]
fn check_mode_rejections_timeouts_and_policy_changes() {
    let mut h = Harness::new();
    h.server.create_user("admin", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
    h.server.set_policy(h.now, "admin", CHECKED).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let tagged = h.key(
        "alice@example.com",
        AuthKeyOptions { reusable: true, tags: vec!["tag:srv".into()], ..Default::default() },
    );
    let laptop = h.join(1, "laptop", &key);
    h.join(2, "server", &key);
    let srv = h.join(3, "srv", &tagged);
    h.join(4, "srv2", &tagged);
    // Tagged sources never pass.
    let CheckAnswer::Rejected { reason } = check(&mut h, 4, 1, srv, "root", 2) else { panic!("tagged passed") };
    assert!(reason.contains("tagged"), "{reason}");
    // A rule index that is not a check rule, or does not exist.
    assert!(matches!(check(&mut h, 2, 2, laptop, "root", 99), CheckAnswer::Rejected { .. }));
    // Rejected by an admin.
    let CheckAnswer::Pending { url } = check(&mut h, 2, 3, laptop, "root", 0) else { panic!() };
    h.server.reject_check(h.now, "admin", &token_of(&url)).unwrap_or_else(|e| panic!("{e}"));
    let sent = h.drain();
    assert!(matches!(to(&sent, 2)[..], [ServerMessage::CheckAnswer { id: 3, answer: CheckAnswer::Rejected { .. } }]));
    // Unanswered for 30 minutes: rejected.
    let CheckAnswer::Pending { .. } = check(&mut h, 2, 4, laptop, "root", 0) else { panic!() };
    h.now += Duration::from_secs(30 * 60);
    h.server.handle_timeout(h.now, unix(T0 + 1800));
    let sent = h.drain();
    assert!(sent.iter().any(|(c, m)| *c == ConnId(2)
        && matches!(m, ServerMessage::CheckAnswer { id: 4, answer: CheckAnswer::Rejected { .. } })));
    // An approval is forgotten when the policy changes its rule.
    let CheckAnswer::Pending { url } = check(&mut h, 2, 5, laptop, "root", 0) else { panic!() };
    h.server.approve_check(h.now, "admin", &token_of(&url)).unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    assert!(matches!(check(&mut h, 2, 6, laptop, "root", 0), CheckAnswer::Approved { .. }));
    h.server.set_policy(h.now, "admin", &CHECKED.replace("\"1h\"", "\"2h\"")).unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    assert!(h.persisted.iter().any(|c| matches!(c, Change::ApprovalRemoved { .. })));
    assert!(matches!(check(&mut h, 2, 7, laptop, "root", 0), CheckAnswer::Pending { .. }));
}

#[test]
fn interactive_registration_waits_for_a_login_that_works_once() {
    let mut h = Harness::new();
    h.server.create_user("admin", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
    h.server.set_policy(h.now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
    h.server.handle_connect(h.now, ConnId(1), machine(1));
    let mut r = register(1, "laptop", "");
    if let NodeMessage::Register(r) = &mut r {
        r.auth = RegisterAuth::Interactive;
    }
    let sent = h.send(1, r);
    let [ServerMessage::LoginNeeded { url }] = to(&sent, 1)[..] else { panic!("{sent:?}") };
    let token = token_of(url);
    assert_eq!(h.server.pending_logins().count(), 1);
    assert!(h.server.approve_login(h.now, "admin", &token, "nobody@example.com").is_err(), "unknown user");
    let id = h
        .server
        .approve_login(h.now, "alice@example.com", &token, "alice@example.com")
        .unwrap_or_else(|e| panic!("{e}"));
    let sent = h.drain();
    assert!(
        matches!(&to(&sent, 1)[..], [ServerMessage::Registered(r)] if r.node == id && r.user == "alice@example.com")
    );
    assert!(h.server.approve_login(h.now, "admin", &token, "alice@example.com").is_err(), "works once");
    // A link expires after 15 minutes.
    h.server.handle_connect(h.now, ConnId(2), machine(2));
    let mut r = register(2, "phone", "");
    if let NodeMessage::Register(r) = &mut r {
        r.auth = RegisterAuth::Interactive;
    }
    let sent = h.send(2, r);
    let [ServerMessage::LoginNeeded { url }] = to(&sent, 2)[..] else { panic!("{sent:?}") };
    let token = token_of(url);
    h.now += Duration::from_secs(15 * 60 + 1);
    h.server.handle_timeout(h.now, unix(T0 + 901));
    assert!(h.server.approve_login(h.now, "admin", &token, "alice@example.com").is_err());
}

#[test]
fn admin_operations_are_audited_and_validated() {
    let mut h = Harness::new();
    h.server.create_user("admin", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
    assert!(h.server.create_user("admin", "alice@example.com").is_err());
    assert!(h.server.create_user("admin", "not a user").is_err());
    h.server.set_policy(h.now, "admin", CHECKED).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let a = h.join(1, "laptop", &key);
    let b = h.join(2, "server", &key);
    h.drain();
    assert!(h.server.rename_node(h.now, "admin", a, "server").is_err(), "taken");
    assert!(h.server.rename_node(h.now, "admin", a, "Bad_Name").is_err());
    h.server.rename_node(h.now, "admin", a, "work-laptop").unwrap_or_else(|e| panic!("{e}"));
    let sent = h.drain();
    let [ServerMessage::Delta(d)] = to(&sent, 2)[..] else { panic!("{sent:?}") };
    assert_eq!(d.upsert[0].name, "work-laptop");
    assert!(h.server.set_node_tags(h.now, "admin", b, vec!["tag:nope".into()]).is_err());
    h.server.set_node_tags(h.now, "admin", b, vec!["tag:srv".into()]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.server.nodes().find(|n| n.id == b).map(|n| n.key_expiry), Some(None));
    assert!(h.server.delete_user("admin", "alice@example.com").is_err(), "still has nodes");
    h.server.rename_user(h.now, "admin", "alice@example.com", "alice@corp.example").unwrap_or_else(|e| panic!("{e}"));
    let (id, secret) = h.server.create_api_key("admin", Duration::from_secs(3600));
    assert_eq!(h.server.verify_api_key(&secret), Some(id));
    assert_eq!(h.server.verify_api_key(&secret.replace(&secret[secret.len() - 4..], "0000")), None);
    h.server.expire_api_key("admin", id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(h.server.verify_api_key(&secret), None);
    h.drain();
    let actions: Vec<&str> = h
        .persisted
        .iter()
        .filter_map(|c| if let Change::Audit(a) = c { Some(a.action.as_str()) } else { None })
        .collect();
    for expected in [
        "user-create",
        "policy-set",
        "preauthkey-create",
        "node-register",
        "node-rename",
        "node-tag",
        "user-rename",
        "apikey-create",
        "apikey-expire",
    ] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
}

#[test]
fn ephemeral_nodes_leave_after_30_minutes_offline_even_across_a_restart() {
    let mut h = Harness::new();
    h.server.set_policy(h.now, "admin", OPEN).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let eph = h.key("alice@example.com", AuthKeyOptions { reusable: true, ephemeral: true, ..Default::default() });
    h.join(1, "stays", &key);
    let e = h.join(2, "ephemeral", &eph);
    h.drain();
    // A blip: offline for 29 minutes, then back; it stays.
    h.server.handle_disconnect(h.now, ConnId(2));
    h.now += Duration::from_secs(29 * 60);
    h.server.handle_timeout(h.now, unix(T0 + 29 * 60));
    assert!(h.server.nodes().any(|n| n.id == e));
    h.server.handle_connect(h.now, ConnId(2), machine(2));
    h.send(2, register(2, "", "").with_auth(RegisterAuth::Known));
    h.send(2, NodeMessage::Map { endpoints: vec![] });
    h.now += Duration::from_secs(10 * 60);
    h.server.handle_timeout(h.now, unix(T0 + 39 * 60));
    assert!(h.server.nodes().any(|n| n.id == e), "removed while streaming");
    // Gone for good: removed after 30 minutes, and its peers are told.
    h.server.handle_disconnect(h.now, ConnId(2));
    h.drain();
    let deadline = h.server.poll_timeout().unwrap_or_else(|| panic!("no timer"));
    assert!(deadline <= h.now + Duration::from_secs(30 * 60));
    h.now += Duration::from_secs(30 * 60);
    h.server.handle_timeout(h.now, unix(T0 + 69 * 60));
    let sent = h.drain();
    assert!(!h.server.nodes().any(|n| n.id == e));
    assert!(sent.iter().any(|(c, m)| *c == ConnId(1) && matches!(m, ServerMessage::Delta(d) if d.remove == vec![e])));
    assert!(h.persisted.contains(&Change::NodeRemoved(e)));
    // After a restart an ephemeral node that never comes back is removed too.
    let state = State {
        nodes: h
            .server
            .nodes()
            .cloned()
            .map(|mut n| {
                n.ephemeral = true;
                n
            })
            .collect(),
        users: h.server.users().cloned().collect(),
        policy: Some(OPEN.into()),
        ..State::default()
    };
    let mut restarted = Harness::with_state(state);
    restarted.server.handle_timeout(restarted.now, unix(T0));
    restarted.now += Duration::from_secs(31 * 60);
    restarted.server.handle_timeout(restarted.now, unix(T0 + 31 * 60));
    assert_eq!(restarted.server.nodes().count(), 0);
}

/// Deltas are right: after random changes, what each streaming node has assembled from
/// its map and deltas equals the full map a fresh connection of that node receives.
#[test]
fn deltas_always_add_up_to_the_full_map() {
    use super::client::NetmapState;
    use crate::rng::Rng;

    const POLICIES: [&str; 3] = [
        OPEN,
        r#"{"acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]}"#,
        r#"{"tagOwners": {"tag:srv": ["alice@example.com"]},
            "acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:srv:22"]},
                     {"action": "accept", "src": ["tag:srv"], "dst": ["bob@example.com:*"]}],
            "ssh": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:srv"], "users": ["root"]}]}"#,
    ];
    for seed in 1..=12u8 {
        let mut rng = Rng::new([seed; 32]);
        let mut h = Harness::new();
        h.server.set_policy(h.now, "admin", POLICIES[0]).unwrap_or_else(|e| panic!("{e}"));
        h.server.create_user("admin", "bob@example.com").unwrap_or_else(|e| panic!("{e}"));
        let alice = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
        let bob = h
            .server
            .create_auth_key(
                "admin",
                "bob@example.com",
                AuthKeyOptions { reusable: true, lifetime: Duration::from_secs(3600), ..Default::default() },
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .1;
        let mut states: std::collections::BTreeMap<u64, NetmapState> = std::collections::BTreeMap::new();
        let mut ids: Vec<(u8, NodeId)> = Vec::new();
        let mut next = 1u8;
        for _step in 0..60 {
            let sent = match rng.below(8) {
                0 | 1 if next < 30 => {
                    let n = next;
                    next += 1;
                    h.server.handle_connect(h.now, ConnId(n.into()), machine(n));
                    let mut sent = h
                        .send(n.into(), register(n, &format!("n{n}"), if n.is_multiple_of(3) { &bob } else { &alice }));
                    if let Some((_, ServerMessage::Registered(r))) = sent.iter().find(|(c, _)| *c == ConnId(n.into())) {
                        ids.push((n, r.node));
                    }
                    sent.extend(h.send(n.into(), NodeMessage::Map { endpoints: vec![] }));
                    sent
                }
                2 if !ids.is_empty() => {
                    let (n, _) = ids[rng.below(ids.len() as u64) as usize];
                    let port = 1000 + rng.below(3) as u16;
                    h.send(n.into(), NodeMessage::Endpoints(vec![std::net::SocketAddr::from(([192, 0, 2, n], port))]))
                }
                3 => {
                    let p = POLICIES[rng.below(3) as usize];
                    h.server.set_policy(h.now, "admin", p).unwrap_or_else(|e| panic!("{e}"));
                    h.drain()
                }
                4 if !ids.is_empty() => {
                    let (_, id) = ids[rng.below(ids.len() as u64) as usize];
                    let tags = if rng.chance(0.5) { vec!["tag:srv".to_string()] } else { vec![] };
                    let _ = h.server.set_node_tags(h.now, "admin", id, tags);
                    h.drain()
                }
                5 if ids.len() > 2 => {
                    let i = rng.below(ids.len() as u64) as usize;
                    let (n, id) = ids.remove(i);
                    h.server.delete_node(h.now, "admin", id).unwrap_or_else(|e| panic!("{e}"));
                    states.remove(&u64::from(n));
                    h.drain()
                }
                6 if !ids.is_empty() => {
                    let (_, id) = ids[rng.below(ids.len() as u64) as usize];
                    let _ = h.server.rename_node(h.now, "admin", id, &format!("r{}", rng.below(1000)));
                    h.drain()
                }
                _ if !ids.is_empty() => {
                    // A node drops and comes back (online flips for its viewers).
                    let (n, _) = ids[rng.below(ids.len() as u64) as usize];
                    h.server.handle_disconnect(h.now, ConnId(n.into()));
                    states.remove(&u64::from(n));
                    h.server.handle_connect(h.now, ConnId(n.into()), machine(n));
                    let mut sent = h.send(n.into(), register(n, "", "").with_auth(RegisterAuth::Known));
                    sent.extend(h.send(n.into(), NodeMessage::Map { endpoints: vec![] }));
                    sent
                }
                _ => Vec::new(),
            };
            apply(&mut states, sent, seed);
        }
        // Compare with a fresh full map for each node.
        // The probe replaces the node's stream (and going away takes the node offline):
        // what the other nodes are sent meanwhile is applied to their states too.
        for (n, _) in ids.clone() {
            let Some(assembled) = states.remove(&u64::from(n)) else { continue };
            let probe = ConnId(1000 + u64::from(n));
            h.server.handle_connect(h.now, probe, machine(n));
            h.send(probe.0, register(n, "", "").with_auth(RegisterAuth::Known));
            // The probe reports the endpoints the node has, so it changes nothing.
            let mut sent = h.send(probe.0, NodeMessage::Map { endpoints: assembled.node.endpoints.clone() });
            let Some(ServerMessage::Map(full)) = to(&sent, probe.0).first().copied().cloned() else {
                panic!("seed {seed}: no full map for n{n}: {sent:?}")
            };
            let full = NetmapState::from_map(full);
            assert_eq!(assembled.peers, full.peers, "seed {seed}: n{n}'s peers");
            assert_eq!(assembled.filter, full.filter, "seed {seed}: n{n}'s filter");
            assert_eq!(assembled.ssh, full.ssh, "seed {seed}: n{n}'s ssh rules");
            assert_eq!(assembled.node, full.node, "seed {seed}: n{n}'s own entry");
            h.server.handle_disconnect(h.now, probe);
            sent.retain(|(c, _)| *c != probe);
            sent.extend(h.drain());
            apply(&mut states, sent, seed);
        }
    }
}

/// Applies maps and deltas to the states assembled per connection.
fn apply(
    states: &mut std::collections::BTreeMap<u64, super::client::NetmapState>,
    sent: Vec<(ConnId, ServerMessage)>,
    seed: u8,
) {
    for (conn, message) in sent {
        match message {
            ServerMessage::Map(m) => {
                states.insert(conn.0, super::client::NetmapState::from_map(m));
            }
            ServerMessage::Delta(d) => match states.get_mut(&conn.0) {
                Some(s) => s.apply(d),
                None => panic!("seed {seed}: a delta before the map on {conn:?}"),
            },
            _ => {}
        }
    }
}

trait WithAuth {
    fn with_auth(self, auth: RegisterAuth) -> Self;
}

impl WithAuth for NodeMessage {
    fn with_auth(mut self, auth: RegisterAuth) -> Self {
        if let NodeMessage::Register(r) = &mut self {
            r.auth = auth;
        }
        self
    }
}

#[test]
fn review_findings_stay_fixed() {
    let mut h = Harness::new();
    h.server.set_policy(h.now, "admin", CHECKED).unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let laptop = h.join(1, "laptop", &key);
    let server = h.join(2, "server", &key);
    h.drain();
    // An expired node cannot renew itself by rotating its key.
    h.server.expire_node(h.now, "admin", laptop).unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    let sent = h.send(1, NodeMessage::RotateKey { node_key: PublicKey([77; 32]) });
    assert!(matches!(&to(&sent, 1)[..], [ServerMessage::Rejected { reason }] if reason.contains("expired")));
    assert!(h.server.nodes().any(|n| n.id == laptop && n.key_expiry.is_some_and(|e| e <= T0)));
    // A deleted node's approvals go with it (ids must never inherit them).
    let phone = h.join(3, "phone", &key);
    let CheckAnswer::Pending { url } = check(&mut h, 2, 1, phone, "root", 0) else { panic!("not pending") };
    h.server.approve_check(h.now, "admin", &token_of(&url)).unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    h.server.delete_node(h.now, "admin", phone).unwrap_or_else(|e| panic!("{e}"));
    h.drain();
    assert!(h.persisted.iter().any(|c| matches!(c, Change::ApprovalRemoved { src, .. } if *src == phone)));
    // A second map request is no second full map.
    let sent = h.send(2, NodeMessage::Map { endpoints: vec![] });
    assert!(!to(&sent, 2).iter().any(|m| matches!(m, ServerMessage::Map(_))), "{sent:?}");
    // One pending interactive login per connection.
    h.server.handle_connect(h.now, ConnId(9), machine(9));
    for _ in 0..3 {
        h.send(9, register(9, "x", "").with_auth(RegisterAuth::Interactive));
    }
    assert_eq!(h.server.pending_logins().count(), 1);
    // A held check whose source became tagged cannot be approved.
    let tablet = h.join(4, "tablet", &key);
    let CheckAnswer::Pending { url } = check(&mut h, 2, 2, tablet, "root", 0) else { panic!("not pending") };
    h.server.set_node_tags(h.now, "admin", tablet, vec!["tag:srv".into()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(h.server.approve_check(h.now, "alice@example.com", &token_of(&url)).is_err());
    let _ = server;
}

#[test]
fn nodes_report_ssh_decisions_into_the_audit_log_within_a_budget() {
    let mut h = Harness::new();
    h.server.create_user("admin", "alice@example.com").unwrap_or_else(|e| panic!("{e}"));
    let key = h.key("alice@example.com", AuthKeyOptions { reusable: true, ..Default::default() });
    let laptop = h.join(1, "laptop", &key);
    h.join(2, "server", &key);
    let report = |outcome| SshAudit {
        src: Some(laptop),
        login: "deploy\u{1b}[2J".into(),
        local_user: "deploy".into(),
        rule: Some(1),
        outcome,
    };
    h.send(2, NodeMessage::SshAudit(report(SshOutcome::Accepted)));
    h.send(2, NodeMessage::SshAudit(report(SshOutcome::Denied { reason: "user not permitted".into() })));
    h.send(2, NodeMessage::SshAudit(report(SshOutcome::Revoked)));
    let entries: Vec<(String, String)> = h
        .persisted
        .iter()
        .filter_map(|c| if let Change::Audit(a) = c { Some((a.action.clone(), a.detail.clone())) } else { None })
        .filter(|(action, _)| action.starts_with("ssh-"))
        .collect();
    let actions: Vec<&str> = entries.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["ssh-accept", "ssh-deny", "ssh-revoke"]);
    let (_, detail) = &entries[1];
    assert!(detail.contains("node 1 (laptop, alice@example.com) to node 2 (server, alice@example.com)"), "{detail}");
    assert!(detail.contains("as deploy") && detail.contains("ssh[1]") && detail.ends_with(": user not permitted"));
    assert!(!detail.contains('\u{1b}'), "control characters never reach the log: {detail}");
    // A node that floods is cut at the budget; the excess is counted in one entry later.
    let before = h.persisted.len();
    for _ in 0..700 {
        h.send(2, NodeMessage::SshAudit(report(SshOutcome::Accepted)));
    }
    let logged = h.persisted[before..].iter().filter(|c| matches!(c, Change::Audit(_))).count();
    assert!(logged <= 600, "{logged}");
    h.now += Duration::from_secs(61);
    h.send(2, NodeMessage::SshAudit(report(SshOutcome::Accepted)));
    assert!(h.persisted.iter().any(|c| matches!(c, Change::Audit(a) if a.action == "ssh-audit-dropped")));
    // An unregistered connection reports nothing.
    h.server.handle_connect(h.now, ConnId(9), machine(9));
    let before = h.persisted.len();
    h.send(9, NodeMessage::SshAudit(report(SshOutcome::Accepted)));
    assert_eq!(h.persisted.len(), before);
}

/// Groups filled by the identity provider.
mod idp_groups;
