//! The admin console over HTTP, with a cookie-keeping client: sign-in by the local admin
//! password and by a listed user's own password, what is refused (no session, a form
//! without the session's CSRF token, a wrong password, a user who is no admin, too many
//! wrong sign-ins), and each page's change checked against the admin CLI and a node that
//! speaks the control protocol: users, a pre-auth key shown once, machines renamed and
//! expired, the policy editor's errors and preview, a pending registration approved, and
//! every action found in the audit log under the console's actor. (The real-browser walk
//! through the same pages, with real nodes, is in shells/node/tests/control_netns.rs.)

mod common;

use common::browser::{Browser, Page};
use common::{cli, form_value, http_full, Node, Server, TempDir};
use mesh_core::control::messages::{RegisterAuth, ServerMessage};

const PASSWORD: &str = "console secret";

/// `application/x-www-form-urlencoded` of `fields`.
fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".to_string(),
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

struct Console {
    server: Server,
    browser: Browser,
    csrf: String,
}

impl Console {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// Keeps the CSRF token of the page's forms.
    fn seen(&mut self, page: Page) -> Page {
        if let Some(i) = page.body.find("name=\"csrf\" value=\"") {
            self.csrf = form_value(&page.body[i..], "csrf");
        }
        page
    }

    fn get(&mut self, path: &str) -> Page {
        let url = self.url(path);
        let page = self.browser.get(&url);
        self.seen(page)
    }

    /// Posts a form of the console with the session's CSRF token.
    fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        let body = form(&all);
        let url = self.url(path);
        let page = self.browser.request("POST", &url, Some(&body));
        self.seen(page)
    }

    fn sign_in(&mut self, user: &str, password: &str) -> Page {
        let page = self.get("/admin/login");
        assert_eq!(page.status, 200, "{}", page.body);
        self.post("/admin/login", &[("username", user), ("password", password)])
    }
}

fn start(name: &str) -> (TempDir, Console) {
    let dir = TempDir::new(name);
    let password_file = dir.path().join("console-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start_with(
        &dir,
        &[
            "--console-password-file",
            password_file.to_str().unwrap_or_default(),
            "--console-admins",
            "alice@example.com",
        ],
    );
    (dir, Console { server, browser: Browser::default(), csrf: String::new() })
}

#[test]
fn the_console_signs_in_admins_only_and_refuses_forged_forms() {
    let (_dir, mut c) = start("console-signin");
    c.server.cli(&["users", "create", "alice@example.com"]).ok();
    c.server.cli(&["users", "create", "bob@example.com"]).ok();
    for user in ["alice@example.com", "bob@example.com"] {
        let set = cli(&c.server.state, &["users", "passwd", user], Some("their own password\n"));
        assert_eq!(set.code, 0, "{set:?}");
    }

    // No session: every page sends the browser to the sign-in page.
    for path in ["/admin", "/admin/machines", "/admin/users", "/admin/keys", "/admin/policy", "/admin/audit"] {
        let page = c.get(path);
        assert!(page.url.ends_with("/admin/login"), "{path} -> {}", page.url);
        assert!(page.body.contains("Sign in to the console"), "{}", page.body);
    }
    // A change without a session is refused and changes nothing.
    let (status, headers, _) = http_full(
        c.server.addr,
        "POST",
        "/admin/users/create",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "csrf=x&name=mallory%40example.com",
    );
    assert_eq!(status, 303, "{headers:?}");

    // The sign-in form's own CSRF cookie: a post without it is refused.
    let (status, _, body) = http_full(
        c.server.addr,
        "POST",
        "/admin/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form(&[("csrf", "0"), ("username", "admin"), ("password", PASSWORD)]),
    );
    assert_eq!(status, 403, "{body}");

    // Wrong passwords, and a user with a right password who is not an admin.
    assert_eq!(c.sign_in("admin", "wrong").status, 401);
    let bob = c.sign_in("bob@example.com", "their own password");
    assert_eq!(bob.status, 401, "bob is no admin: {}", bob.body);
    assert!(bob.body.contains("Wrong user name or password"), "{}", bob.body);

    // The local admin password.
    let page = c.sign_in("admin", PASSWORD);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.url.ends_with("/admin/machines"), "{}", page.url);
    assert!(page.body.contains("Machines") && page.body.contains("Sign out"), "{}", page.body);
    let cookie_jar = format!("{:?}", c.browser);
    assert!(cookie_jar.contains("meshcontrol_console"), "{cookie_jar}");

    // A form of this session without its token, or with the sign-in form's: refused.
    let users_before = c.server.cli(&["users", "list", "--json"]).ok();
    let forged = c.browser.request("POST", &c.url("/admin/users/create"), Some("name=mallory%40example.com"));
    assert_eq!(forged.status, 403, "{}", forged.body);
    let forged = c.browser.request(
        "POST",
        &c.url("/admin/users/create"),
        Some(&form(&[("csrf", &"0".repeat(64)), ("name", "mallory@example.com")])),
    );
    assert_eq!(forged.status, 403);
    assert_eq!(c.server.cli(&["users", "list", "--json"]).ok(), users_before, "nothing changed");

    // Signing out ends the session.
    c.get("/admin/machines");
    let out = c.post("/admin/logout", &[]);
    assert!(out.url.ends_with("/admin/login"), "{}", out.url);
    assert!(c.get("/admin/machines").url.ends_with("/admin/login"));

    // A listed admin with their own local password.
    let alice = c.sign_in("alice@example.com", "their own password");
    assert!(alice.url.ends_with("/admin/machines") && alice.body.contains("alice@example.com"), "{}", alice.body);

    let audit = c.server.cli(&["audit", "--action", "console-"]).ok();
    for expected in [
        "console-sign-in-refused  admin",
        "console-sign-in-refused  bob@example.com",
        "console-sign-in          admin by local password",
        "console-sign-out         admin",
        "console-sign-in          alice@example.com by local password",
    ] {
        let words: Vec<&str> = expected.split_whitespace().collect();
        assert!(audit.lines().any(|l| { words.iter().all(|w| l.contains(w)) }), "no {expected:?} in\n{audit}");
    }

    // Too many wrong sign-ins: the form rests.
    let mut c2 = Console {
        server: Server::start_with(&TempDir::new("console-lock"), &[]),
        browser: Browser::default(),
        csrf: String::new(),
    };
    let off = c2.get("/admin/login");
    assert_eq!(off.status, 404, "no admin configured: the console is off: {}", off.body);
    drop(c2);
    c.browser = Browser::default();
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(c.sign_in("admin", "wrong").status);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(c.sign_in("admin", PASSWORD).status, 429, "even the right password waits");
}

#[test]
fn every_console_page_changes_the_tailnet_and_the_audit_log_names_the_admin() {
    let (_dir, mut c) = start("console-pages");
    assert!(c.sign_in("admin", PASSWORD).url.ends_with("/admin/machines"));

    // Users.
    let page = c.post("/admin/users/create", &[("name", "bob@example.com")]);
    assert!(page.body.contains("User bob@example.com created."), "{}", page.body);
    assert!(c.server.cli(&["users", "list"]).ok().contains("bob@example.com"));
    let page = c.post("/admin/users/create", &[("name", "bob@example.com")]);
    assert!(page.body.contains("Refused:"), "a second bob: {}", page.body);

    // A pre-auth key, shown once.
    c.get("/admin/keys");
    let page = c.post("/admin/keys/create", &[("user", "bob@example.com"), ("reusable", "1"), ("hours", "2")]);
    assert_eq!(page.status, 200, "{}", page.body);
    let start = page.body.find("id=\"created-key\">").unwrap_or_else(|| panic!("no key: {}", page.body)) + 17;
    let key = page.body[start..].split('<').next().unwrap_or_default().to_string();
    assert!(key.starts_with("mskey-"), "{key}");
    let listed = c.get("/admin/keys");
    assert!(!listed.body.contains(&key), "the secret is shown once");
    assert!(listed.body.contains("bob@example.com"));
    let bad = c.post("/admin/keys/create", &[("user", "bob@example.com"), ("hours", "0")]);
    assert!(bad.body.contains("Refused: the lifetime"), "{}", bad.body);

    // Machines: a node joins with the key, is renamed and expired from the console.
    let mut node = Node::connect(c.server.addr, c.server.key(), 41);
    node.register("laptop", RegisterAuth::AuthKey(key.clone()));
    let id = node.expect("Registered", |m| match m {
        ServerMessage::Registered(r) => Some(r.node.0),
        _ => None,
    });
    let machines = c.get("/admin/machines");
    assert!(machines.body.contains("laptop") && machines.body.contains("bob@example.com"), "{}", machines.body);
    let renamed = c.post(&format!("/admin/machines/{id}/rename"), &[("name", "bobs-laptop")]);
    assert!(
        renamed.body.contains("is now bobs-laptop") && renamed.body.contains("value=\"bobs-laptop\""),
        "{}",
        renamed.body
    );
    let expired = c.post(&format!("/admin/machines/{id}/expire"), &[]);
    assert!(
        expired.body.contains("key expired") && expired.body.contains("<strong>expired</strong>"),
        "{}",
        expired.body
    );
    let nodes = c.server.cli(&["nodes", "list", "--json"]).ok();
    assert!(nodes.contains("\"expired\": true") && nodes.contains("bobs-laptop"), "{nodes}");

    // The policy editor: an error with its line, nothing saved; a preview saves nothing; save.
    let before = c.server.cli(&["policy", "get"]).ok();
    c.get("/admin/policy");
    let invalid =
        "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"group:nobody\"], \"dst\": [\"*:*\"]}\n  ]\n}\n";
    let page = c.post("/admin/policy", &[("text", invalid), ("action", "save")]);
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(page.body.contains("id=\"policy-error\">policy.hujson:3:"), "{}", page.body);
    assert_eq!(c.server.cli(&["policy", "get"]).ok(), before);
    let valid = "{\n  // only bob's own machines\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"bob@example.com\"], \"dst\": [\"bob@example.com:22\"]}]\n}\n";
    let preview = c.post("/admin/policy", &[("text", valid), ("action", "preview")]);
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(preview.body.contains("What would change"), "{}", preview.body);
    assert_eq!(c.server.cli(&["policy", "get"]).ok(), before, "a preview saves nothing");
    let saved = c.post("/admin/policy", &[("text", valid), ("action", "save")]);
    assert!(saved.body.contains("id=\"policy-saved\""), "{}", saved.body);
    assert_eq!(c.server.cli(&["policy", "get"]).ok().trim_end(), valid.trim_end());

    // Pending: an interactive registration, approved for bob.
    let mut tablet = Node::connect(c.server.addr, c.server.key(), 42);
    tablet.register("tablet", RegisterAuth::Interactive);
    tablet.expect("LoginNeeded", |m| matches!(m, ServerMessage::LoginNeeded { .. }).then_some(()));
    let pending = c.get("/admin/pending");
    assert!(pending.body.contains("tablet"), "{}", pending.body);
    let token = form_value(&pending.body[pending.body.find("/admin/pending/approve").unwrap_or(0)..], "token");
    let approved = c.post("/admin/pending/approve", &[("token", &token), ("user", "bob@example.com")]);
    assert!(approved.body.contains("Approved.") && approved.body.contains("Nothing is waiting"), "{}", approved.body);
    tablet.expect("Registered", |m| matches!(m, ServerMessage::Registered(_)).then_some(()));

    // Every action, in the audit log page under the console's actor.
    let audit = c.get("/admin/audit?actor=console%3Aadmin&limit=100");
    for action in [
        "console-sign-in",
        "user-create",
        "preauthkey-create",
        "node-rename",
        "node-expire",
        "policy-set",
        "login-approve",
    ] {
        assert!(audit.body.contains(&format!("<td>{action}</td>")), "no {action} in {}", audit.body);
    }
    let only_nodes = c.get("/admin/audit?action=node-");
    assert!(
        only_nodes.body.contains("node-rename") && !only_nodes.body.contains("<td>user-create</td>"),
        "{}",
        only_nodes.body
    );
    let by_text = c.get("/admin/audit?contains=bobs-laptop");
    assert!(by_text.body.contains("node-rename") && !by_text.body.contains("<td>policy-set</td>"), "{}", by_text.body);
    let escaped = c.get("/admin/audit?contains=%3Cscript%3E");
    assert!(
        escaped.body.contains("value=\"&lt;script&gt;\"") && !escaped.body.contains("<script>"),
        "{}",
        escaped.body
    );
}
