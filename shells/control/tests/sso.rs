//! Single sign-on against a real OpenID Provider (oidc-provider on Node.js, started by the
//! test on loopback; `.ci/run` installs it with `npm ci --prefix tests/oidc`): a node's
//! interactive registration approved by logging in at the provider (the user is created on
//! first login), a check-mode hold approved only by the source node's owner after a fresh
//! re-authentication, and the state checks (a replayed or foreign callback is refused and
//! changes nothing), and the provider's group claim filling a declared policy group. The
//! browser here is a small cookie-keeping HTTP client that follows
//! redirects and submits the provider's sign-in form, as a person's browser would.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::browser::{form_action, split_url, Browser, Page};
use common::{form_value, Node, Server, TempDir};
use mesh_core::control::messages::{CheckAnswer, CheckRequest, NodeMessage, RegisterAuth, ServerMessage};

/// The provider's directory (its package.json and, once installed, node_modules).
fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

struct Provider(Child);

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_provider(port: u16, redirect: &str, secret: &str) -> Option<Provider> {
    if !provider_dir().join("node_modules/oidc-provider").exists() {
        eprintln!("note: tests/oidc/node_modules missing (npm ci --prefix tests/oidc); skipping");
        return None;
    }
    let mut child = Command::new("node")
        .arg(provider_dir().join("provider.mjs"))
        .args([&port.to_string(), redirect, secret])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let stdout = child.stdout.take()?;
    let _ = BufReader::new(stdout).read_line(&mut line);
    assert!(line.starts_with("issuer "), "the provider did not start: {line:?}");
    Some(Provider(child))
}

/// From a login link of ours to the provider's sign-in, signed in as `person`, and back:
/// the last page.
fn sign_in_through_provider(browser: &mut Browser, link: &str, person: &str) -> Page {
    let page = browser.get(link);
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = form_value(&page.body, "csrf");
    let (addr, _) = split_url(link);
    let sso = format!("http://{addr}{}", form_action(&page.body, "/sso"));
    let page = browser.request("POST", &sso, Some(&format!("csrf={csrf}")));
    assert!(page.url.contains("/interaction/"), "at the provider's sign-in: {} {}", page.url, page.body);
    let (provider, _) = split_url(&page.url);
    let action = form_action(&page.body, "/interaction/");
    let submit = if action.starts_with("http://") { action } else { format!("http://{provider}{action}") };
    browser.request("POST", &submit, Some(&format!("prompt=login&login={person}&password=anything")))
}

/// A provider and a server that uses it (`None`: the provider is not installed).
fn sso_lab(name: &str) -> Option<(Provider, TempDir, Server)> {
    let (provider_port, server_port) = (free_port(), free_port());
    let server_url = format!("http://127.0.0.1:{server_port}");
    let secret = "a-client-secret-for-tests";
    let provider = start_provider(provider_port, &format!("{server_url}/oidc/callback"), secret)?;
    let dir = TempDir::new(name);
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap_or_else(|e| panic!("{e}"));
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let server = Server::start_on(
        &dir,
        &format!("127.0.0.1:{server_port}"),
        &[
            "--server-url",
            &server_url,
            "--oidc-issuer",
            &issuer,
            "--oidc-client-id",
            "meshcontrol",
            "--oidc-client-secret-file",
            secret_file.to_str().unwrap_or_default(),
            "--oidc-allowed-domains",
            "example.com",
        ],
    );
    Some((provider, dir, server))
}

#[test]
fn nodes_register_and_checks_pass_through_a_real_identity_provider() {
    let Some((_provider, _dir, server)) = sso_lab("sso") else { return };
    let server_url = server.url();

    // Registration: the node waits; alice logs in at the provider; she is created and owns it.
    let mut laptop = Node::connect(server.addr, server.key(), 31);
    laptop.register("laptop", RegisterAuth::Interactive);
    let link = laptop.expect("LoginNeeded", |m| match m {
        ServerMessage::LoginNeeded { url } => Some(url.clone()),
        _ => None,
    });
    let mut alice = Browser::default();
    let done = sign_in_through_provider(&mut alice, &link, "alice");
    assert_eq!(done.status, 200, "{}\n{}", done.body, server.log());
    assert!(done.body.contains("The node is registered"), "{}", done.body);
    let registered = laptop.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(registered.user, "alice@example.com");
    // The callback URL works once: the same code and state again are refused.
    let before = (server.cli(&["users", "list", "--json"]).ok(), server.cli(&["nodes", "list", "--json"]).ok());
    let replay = alice.get(&done.url);
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("state mismatch"), "{}", replay.body);
    // A callback this browser never started is refused too.
    let foreign = Browser::default().get(&format!("{server_url}/oidc/callback?state=forged&code=x"));
    assert_eq!(foreign.status, 400);
    let after = (server.cli(&["users", "list", "--json"]).ok(), server.cli(&["nodes", "list", "--json"]).ok());
    assert_eq!(before, after, "a refused callback changes nothing");

    // A second node of alice's (pre-auth key) is the SSH destination.
    let key = server.cli(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]).ok();
    let mut host = Node::connect(server.addr, server.key(), 32);
    host.register("host", RegisterAuth::AuthKey(key.trim().to_string()));
    host.expect("Registered", |m| matches!(m, ServerMessage::Registered(_)).then_some(()));
    host.send(&NodeMessage::Map { endpoints: vec![] });
    host.expect("Map", |m| matches!(m, ServerMessage::Map(_)).then_some(()));
    let hold = |host: &mut Node, id: u64| {
        host.send(&NodeMessage::Check(CheckRequest { id, src: registered.node, local_user: "alice".into(), rule: 0 }));
        host.expect("a pending check", |m| match m {
            ServerMessage::CheckAnswer { id: got, answer: CheckAnswer::Pending { url } } if *got == id => {
                Some(url.clone())
            }
            _ => None,
        })
    };

    // Bob signs in at the provider with alice's check link: refused, the hold stays.
    let link = hold(&mut host, 1);
    let page = sign_in_through_provider(&mut Browser::default(), &link, "bob");
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(page.body.contains("only the user who owns the connecting node"), "{}", page.body);
    assert!(server.cli(&["auth", "list", "--json"]).ok().contains("check"), "the hold is still pending");
    // Alice (already signed in at the provider, asked again: prompt=login) approves it.
    let page = sign_in_through_provider(&mut alice, &link, "alice");
    assert_eq!(page.status, 200, "{}\n{}", page.body, server.log());
    assert!(page.body.contains("The SSH login may proceed"), "{}", page.body);
    host.expect("an approved check", |m| match m {
        ServerMessage::CheckAnswer { id: 1, answer: CheckAnswer::Approved { .. } } => Some(()),
        _ => None,
    });
    let audit = server.cli(&["audit", "--json"]).ok();
    assert!(audit.contains("ssh-check-approve") && audit.contains("login-approve"), "{audit}");
}

/// The provider's group claim fills the policy's declared groups: alice's sign-on carries
/// `eng`, so once she registers a node by single sign-on, the `tag:server` node that
/// `group:eng` may reach (and SSH into) gets a filter and an SSH rule naming her node.
#[test]
fn the_providers_group_claim_fills_a_declared_policy_group() {
    let Some((_provider, dir, server)) = sso_lab("sso-groups") else { return };
    let policy = r#"{
  "groups": {"group:eng": []},
  "tagOwners": {"tag:server": ["ops@example.com"]},
  "acls": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:server:22"]}],
  "ssh": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:server"], "users": ["root"]}]
}"#;
    let file = dir.path().join("policy.hujson");
    std::fs::write(&file, policy).unwrap_or_else(|e| panic!("{e}"));
    server.cli(&["policy", "set", "-f", file.to_str().unwrap_or_default()]).ok();
    server.cli(&["users", "create", "ops@example.com"]).ok();
    let key = server.cli(&["preauthkeys", "create", "--user", "ops@example.com", "--tags", "tag:server"]).ok();
    let mut host = Node::connect(server.addr, server.key(), 51);
    host.register("host", RegisterAuth::AuthKey(key.trim().to_string()));
    host.expect("Registered", |m| matches!(m, ServerMessage::Registered(_)).then_some(()));
    host.send(&NodeMessage::Map { endpoints: vec![] });
    let map = host.expect("Map", |m| match m {
        ServerMessage::Map(map) => Some(map.clone()),
        _ => None,
    });
    let no_sources = map.filter.iter().all(|r| r.srcs.is_empty());
    assert!(no_sources && map.ssh.is_empty(), "group:eng has no members yet: {map:?}");

    let mut laptop = Node::connect(server.addr, server.key(), 52);
    laptop.register("laptop", RegisterAuth::Interactive);
    let link = laptop.expect("LoginNeeded", |m| match m {
        ServerMessage::LoginNeeded { url } => Some(url.clone()),
        _ => None,
    });
    let done = sign_in_through_provider(&mut Browser::default(), &link, "alice");
    assert_eq!(done.status, 200, "{}\n{}", done.body, server.log());
    let registered = laptop.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.clone()),
        _ => None,
    });

    // The host's update: alice's node is a source of its filter and the principal of its
    // SSH rule, and a peer it sees.
    let delta = host.expect("a delta with group:eng's new member", |m| match m {
        ServerMessage::Delta(d) if d.filter.as_ref().is_some_and(|f| f.iter().any(|r| !r.srcs.is_empty())) => {
            Some(d.clone())
        }
        _ => None,
    });
    let filter = delta.filter.as_ref().map(|f| f.to_vec()).unwrap_or_default();
    for address in &registered.addresses {
        assert!(filter.iter().any(|r| r.srcs.iter().any(|p| p.contains(*address))), "{filter:?}");
    }
    let ssh = delta.ssh.as_ref().map(|s| s.to_vec()).unwrap_or_default();
    assert!(ssh.iter().any(|r| r.principals.contains(&registered.node)), "{ssh:?}");
    assert!(delta.upsert.iter().any(|p| p.id == registered.node), "{delta:?}");

    // `users list` shows the groups; the audit log has the change.
    let users: serde_json::Value =
        serde_json::from_str(&server.cli(&["users", "list", "--json"]).ok()).unwrap_or_else(|e| panic!("{e}"));
    let alice = users
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "alice@example.com"))
        .unwrap_or_else(|| panic!("{users}"));
    assert_eq!(alice["groups"], serde_json::json!(["eng"]), "{users}");
    assert!(server.cli(&["users", "list"]).ok().contains("eng"));
    let audit = server.cli(&["audit", "--json"]).ok();
    assert!(audit.contains("user-groups") && audit.contains("alice@example.com: eng"), "{audit}");
}

/// Where the browser test leaves its screenshots (one per page it saw).
fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/sso-screenshots")
}

/// The page a real Chromium ends on after signing in at `link` as `person`.
fn browse(link: &str, person: &str, name: &str) -> serde_json::Value {
    let out = Command::new("node")
        .arg(provider_dir().join("browser.mjs"))
        .args([link, person])
        .arg(screenshot_dir())
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("node: {e}"));
    assert!(out.status.success(), "browser: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_real_browser_registers_a_node_and_approves_only_its_owners_check() {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        eprintln!("note: no /usr/bin/chromium (apt-get install chromium); skipping");
        return;
    }
    let Some((_provider, _dir, server)) = sso_lab("sso-browser") else { return };
    let mut laptop = Node::connect(server.addr, server.key(), 41);
    laptop.register("laptop", RegisterAuth::Interactive);
    let link = laptop.expect("LoginNeeded", |m| match m {
        ServerMessage::LoginNeeded { url } => Some(url.clone()),
        _ => None,
    });
    let page = browse(&link, "alice", "register");
    assert_eq!(page["status"], 200, "{page}");
    assert!(page["text"].as_str().unwrap_or_default().contains("The node is registered"), "{page}");
    let registered = laptop.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(registered.user, "alice@example.com");
    // The used link shows the expired page.
    let page = browse(&link, "alice", "register-again");
    assert_eq!(page["status"], 404, "{page}");
    assert!(page["text"].as_str().unwrap_or_default().contains("not valid any more"), "{page}");

    let key = server.cli(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]).ok();
    let mut host = Node::connect(server.addr, server.key(), 42);
    host.register("host", RegisterAuth::AuthKey(key.trim().to_string()));
    host.expect("Registered", |m| matches!(m, ServerMessage::Registered(_)).then_some(()));
    host.send(&NodeMessage::Check(CheckRequest { id: 9, src: registered.node, local_user: "alice".into(), rule: 0 }));
    let link = host.expect("a pending check", |m| match m {
        ServerMessage::CheckAnswer { id: 9, answer: CheckAnswer::Pending { url } } => Some(url.clone()),
        _ => None,
    });
    let page = browse(&link, "bob", "check-bob");
    assert_eq!(page["status"], 409, "{page}");
    let page = browse(&link, "alice", "check-alice");
    assert_eq!(page["status"], 200, "{page}");
    assert!(page["text"].as_str().unwrap_or_default().contains("The SSH login may proceed"), "{page}");
    host.expect("an approved check", |m| match m {
        ServerMessage::CheckAnswer { id: 9, answer: CheckAnswer::Approved { .. } } => Some(()),
        _ => None,
    });
    assert!(screenshot_dir().join("check-alice-2-provider.png").exists());
}
