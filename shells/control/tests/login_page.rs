//! (e) The login page of an interactive registration: a form with a CSRF token bound to a
//! cookie; a POST without them is refused (403), a wrong password too (401); with the
//! right password the waiting node gets `Registered`.

mod common;

use common::{cli, form_value, http_full, Node, Server, TempDir};
use mesh_core::control::messages::{CheckAnswer, CheckRequest, NodeMessage, RegisterAuth, ServerMessage};

#[test]
fn the_login_page_registers_a_waiting_node() {
    let dir = TempDir::new("login-page");
    let server = Server::start(&dir);
    server.cli(&["users", "create", "alice@example.com"]).ok();
    server.cli(&["users", "create", "bob@example.com"]).ok();
    let set = cli(&server.state, &["users", "passwd", "alice@example.com"], Some("correct horse\n"));
    assert_eq!(set.code, 0, "{set:?}");
    let none = cli(&server.state, &["users", "passwd", "carol@example.com"], Some("x\n"));
    assert_eq!(none.code, 1, "{none:?}");

    let mut node = Node::connect(server.addr, server.key(), 11);
    node.register("tablet", RegisterAuth::Interactive);
    let url = node.expect("LoginNeeded", |m| match m {
        ServerMessage::LoginNeeded { url } => Some(url.clone()),
        _ => None,
    });
    let path = url.strip_prefix(&server.url()).unwrap_or_else(|| panic!("{url} is not on {}", server.url()));
    assert!(path.starts_with("/register/"), "{path}");
    let pending = server.cli(&["auth", "list", "--json"]).ok();
    assert!(pending.contains("login"), "{pending}");

    // The form, its CSRF token and the cookie that must match it.
    let (status, headers, html) = http_full(server.addr, "GET", path, &[], "");
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("tablet"), "{html}");
    let csrf = form_value(&html, "csrf");
    assert_eq!(csrf.len(), 64);
    let cookie = headers
        .iter()
        .find(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no cookie: {headers:?}"));
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("Secure"), "not on plain http");
    let cookie_pair = cookie.split(';').next().unwrap_or_default().to_string();
    assert_eq!(cookie_pair, format!("meshcontrol_csrf={csrf}"));
    let form = "application/x-www-form-urlencoded";
    let body = |csrf: &str, password: &str| {
        format!("csrf={csrf}&username=alice%40example.com&password={}", password.replace(' ', "+"))
    };

    // Without the cookie, or with a token that does not match it: 403.
    let (status, _, _) = http_full(server.addr, "POST", path, &[("Content-Type", form)], &body(&csrf, "correct horse"));
    assert_eq!(status, 403);
    let (status, _, _) = http_full(
        server.addr,
        "POST",
        path,
        &[("Content-Type", form), ("Cookie", &cookie_pair)],
        &body(&"0".repeat(64), "correct horse"),
    );
    assert_eq!(status, 403);
    // A wrong password: 401, the form again.
    let (status, _, html) = http_full(
        server.addr,
        "POST",
        path,
        &[("Content-Type", form), ("Cookie", &cookie_pair)],
        &body(&csrf, "wrong"),
    );
    assert_eq!(status, 401, "{html}");
    assert!(html.contains("Wrong user name or password"), "{html}");
    // A user without a password cannot log in either.
    let bob = format!("csrf={csrf}&username=bob%40example.com&password=anything");
    let (status, _, _) =
        http_full(server.addr, "POST", path, &[("Content-Type", form), ("Cookie", &cookie_pair)], &bob);
    assert_eq!(status, 401);
    assert_eq!(server.cli(&["nodes", "list", "--json"]).ok().trim(), "[]", "nothing registered yet");

    // The right password: the node is registered as alice.
    let (status, _, html) = http_full(
        server.addr,
        "POST",
        path,
        &[("Content-Type", form), ("Cookie", &cookie_pair)],
        &body(&csrf, "correct horse"),
    );
    assert_eq!(status, 200, "{html}");
    let registered = node.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(registered.user, "alice@example.com");
    assert_eq!(registered.name, "tablet");

    // The link works once.
    let (status, _, _) = http_full(server.addr, "GET", path, &[], "");
    assert_eq!(status, 404);
    let audit = server.cli(&["audit", "--json"]).ok();
    assert!(audit.contains("login-approve") && audit.contains("user-passwd"), "{audit}");
}

#[test]
fn an_admin_approves_a_pending_login_from_the_cli() {
    let dir = TempDir::new("login-cli");
    let server = Server::start(&dir);
    server.cli(&["users", "create", "alice@example.com"]).ok();
    let mut node = Node::connect(server.addr, server.key(), 12);
    node.register("phone", RegisterAuth::Interactive);
    let url = node.expect("LoginNeeded", |m| match m {
        ServerMessage::LoginNeeded { url } => Some(url.clone()),
        _ => None,
    });
    let refused = server.cli(&["nodes", "register", "--key", "0123", "--user", "alice@example.com"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    server.cli(&["nodes", "register", "--key", &url, "--user", "alice@example.com"]).ok();
    let registered = node.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(registered.name, "phone");
}

/// A POST with the form's cookie and CSRF token, as a browser would send it.
fn post_form(server: &Server, path: &str, user: &str, password: &str) -> (u16, String) {
    let (status, headers, html) = http_full(server.addr, "GET", path, &[], "");
    assert_eq!(status, 200, "{html}");
    let csrf = form_value(&html, "csrf");
    let cookie = headers.iter().find(|(n, _)| n == "set-cookie").map(|(_, v)| v.clone()).unwrap_or_default();
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    let body = format!("csrf={csrf}&username={}&password={password}", user.replace('@', "%40"));
    let (status, _, html) = http_full(
        server.addr,
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", &cookie)],
        &body,
    );
    (status, html)
}

#[test]
fn only_the_source_nodes_owner_approves_a_check_hold() {
    let dir = TempDir::new("check-page");
    let server = Server::start(&dir);
    for user in ["alice@example.com", "bob@example.com"] {
        server.cli(&["users", "create", user]).ok();
        let set = cli(&server.state, &["users", "passwd", user], Some("pw\n"));
        assert_eq!(set.code, 0, "{set:?}");
    }
    let key = server.cli(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]).ok();
    let key = key.trim().to_string();
    let registered = |node: &mut Node| {
        node.expect("Registered", |m| match m {
            ServerMessage::Registered(r) => Some(r.node),
            _ => None,
        })
    };
    let mut laptop = Node::connect(server.addr, server.key(), 21);
    laptop.register("laptop", RegisterAuth::AuthKey(key.clone()));
    let src = registered(&mut laptop);
    let mut host = Node::connect(server.addr, server.key(), 22);
    host.register("host", RegisterAuth::AuthKey(key));
    registered(&mut host);
    host.send(&NodeMessage::Map { endpoints: vec![] });
    host.expect("Map", |m| matches!(m, ServerMessage::Map(_)).then_some(()));

    // The default policy's SSH rule 0 is `check`: the destination asks, gets a URL.
    host.send(&NodeMessage::Check(CheckRequest { id: 5, src, local_user: "alice".into(), rule: 0 }));
    let url = host.expect("a pending CheckAnswer", |m| match m {
        ServerMessage::CheckAnswer { id: 5, answer: CheckAnswer::Pending { url } } => Some(url.clone()),
        _ => None,
    });
    let path = url.strip_prefix(&server.url()).unwrap_or_else(|| panic!("{url}")).to_string();
    assert!(path.starts_with("/check/"), "{path}");

    // Bob knows his password but does not own the source node: refused, still pending.
    let (status, html) = post_form(&server, &path, "bob@example.com", "pw");
    assert_eq!(status, 409, "{html}");
    assert!(server.cli(&["auth", "list"]).ok().contains("check"));
    // Alice may.
    let (status, html) = post_form(&server, &path, "alice@example.com", "pw");
    assert_eq!(status, 200, "{html}");
    host.expect("an approved CheckAnswer", |m| match m {
        ServerMessage::CheckAnswer { id: 5, answer: CheckAnswer::Approved { .. } } => Some(()),
        _ => None,
    });
    let audit = server.cli(&["audit", "--actor", "alice@example.com", "--json"]).ok();
    assert!(audit.contains("ssh-check-approve"), "{audit}");
}

#[test]
fn a_link_stops_taking_passwords_after_ten_wrong_ones() {
    let dir = TempDir::new("login-limit");
    let server = Server::start(&dir);
    server.cli(&["users", "create", "alice@example.com"]).ok();
    assert_eq!(cli(&server.state, &["users", "passwd", "alice@example.com"], Some("pw\n")).code, 0);
    let mut node = Node::connect(server.addr, server.key(), 31);
    node.register("tablet", RegisterAuth::Interactive);
    let url = node.expect("LoginNeeded", |m| match m {
        ServerMessage::LoginNeeded { url } => Some(url.clone()),
        _ => None,
    });
    let path = url.strip_prefix(&server.url()).unwrap_or_else(|| panic!("{url}")).to_string();
    for _ in 0..10 {
        assert_eq!(post_form(&server, &path, "alice@example.com", "wrong").0, 401);
    }
    let (status, html) = post_form(&server, &path, "alice@example.com", "pw");
    assert_eq!(status, 429, "{html}");
    assert_eq!(server.cli(&["nodes", "list", "--json"]).ok().trim(), "[]");
}
